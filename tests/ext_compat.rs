//! Ext images e2fsck calls clean that loopkit misread. Oracles: `mke2fs -d`
//! (the source tree is the first oracle), `debugfs` to make the cases (`feature shared_blocks`,
//! `sif`, `freeb`, `ea_set`) and to read them (`rdump`, with `-c -s N -b 1024` from a backup
//! superblock; `stat`), `dumpe2fs` for where the backup superblocks are, and `e2fsck -fn` as the
//! judge of clean (exit 0) vs damaged.
//! - `shared_blocks` (RO_COMPAT 0x4000): two files sharing a block are clean with the feature and
//!   `ext.shared-blocks` without it.
//! - Backup superblocks past group 1: default (`sparse_super`), `sparse_super2`, no
//!   `sparse_super`, `meta_bg`; the primary and group 1's copy wiped with dd.
//! - A fast symlink with an xattr block on bigalloc (`i_blocks` counts a whole cluster).

use crate::ensure;
use crate::ext_damage::{all_commands, fsck_code, hashes, missing, mkfs, rdump, s, tree};
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::Path;
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("ext_compat::shared_blocks_feature", shared_blocks_feature),
        trial("ext_compat::later_backup_superblocks", later_backup_superblocks),
        trial("ext_compat::bigalloc_symlink_with_xattr", bigalloc_symlink_with_xattr),
    ]
}

fn debugfs(img: &Path, write: bool, req: &str) -> Result<String, Failed> {
    let mut c = Command::new("debugfs");
    if write {
        c.arg("-w");
    }
    Ok(String::from_utf8_lossy(&run_ok(c.args(["-R", req, s(img)]))?.stdout).to_string())
}

fn first_block(img: &Path, file: &str) -> Result<String, Failed> {
    Ok(debugfs(img, false, &format!("blocks {file}"))?
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("debugfs lists no blocks for {file}"))?
        .to_string())
}

/// /sub/f2's first block pointed at /sub/f1's (its own freed), with `shared_blocks` set by
/// debugfs and the counts then fixed by `e2fsck -fy` (which leaves shared blocks alone when the
/// feature is set): `e2fsck -fn` calls it clean, and loopkit must too, reading both files as
/// `debugfs rdump` does. The same image without the feature is e2fsck's multiply-claimed blocks
/// and stays `ext.shared-blocks`.
fn shared_blocks_feature() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("ext-shared-feature");
    let t = tree(&d)?;
    let img = d.path("dedup.img");
    mkfs(&img, &t, &["-t", "ext2", "-b", "1024"], "8M")?;
    debugfs(&img, true, "feature shared_blocks")?;
    let a = first_block(&img, "/sub/f1")?;
    let b = first_block(&img, "/sub/f2")?;
    debugfs(&img, true, &format!("sif /sub/f2 block[0] {a}"))?;
    debugfs(&img, true, &format!("freeb {b}"))?;
    run(Command::new("e2fsck").args(["-fy", s(&img)]))?;
    let dump = String::from_utf8_lossy(&run_ok(Command::new("dumpe2fs").args(["-h", s(&img)]))?.stdout).to_string();
    ensure!(dump.contains("shared_blocks"), "the feature is not set:\n{dump}");
    ensure!(first_block(&img, "/sub/f2")? == a, "e2fsck -fy unshared the block");
    ensure!(fsck_code(&img)? == 0, "e2fsck -fn does not call the shared_blocks image clean");
    let oracle = rdump(&img, &d.path("rd-dedup"), None)?;
    let (codes, got) = all_commands(&d, &img, 0, &[])?;
    ensure!(codes.is_empty(), "shared_blocks: problems {codes:?}");
    ensure!(got == oracle, "shared_blocks: extract differs from debugfs rdump:\n{got:?}\n{oracle:?}");

    // Without the feature: the same sharing is damage.
    let plain = d.path("plain.img");
    std::fs::copy(&img, &plain).map_err(|e| e.to_string())?;
    debugfs(&plain, true, "feature -shared_blocks")?;
    let fsck = String::from_utf8_lossy(&run(Command::new("e2fsck").args(["-fn", s(&plain)]))?.stdout).to_string();
    ensure!(fsck.contains("Multiply-claimed"), "e2fsck does not see the shared block:\n{fsck}");
    let (codes, _) = all_commands(&d, &plain, 1, &[])?;
    ensure!(codes.iter().any(|c| c == "ext.shared-blocks"), "shared block not reported: {codes:?}");
    Ok(Completion::Completed)
}

/// `Backup superblock at N` from dumpe2fs, in order.
fn backups(img: &Path) -> Result<Vec<u64>, Failed> {
    let out = String::from_utf8_lossy(&run_ok(Command::new("dumpe2fs").arg(s(img)))?.stdout).to_string();
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Backup superblock at "))
        .filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect())
}

fn wipe(img: &Path, block: u64) -> Result<(), Failed> {
    run_ok(Command::new("dd").args([
        "if=/dev/zero",
        &format!("of={}", s(img)),
        "bs=1024",
        &format!("seek={block}"),
        "count=1",
        "conv=notrunc",
        "status=none",
    ]))?;
    Ok(())
}

/// For each backup layout mke2fs makes (40 MiB of 1 KiB blocks: five groups), the primary and
/// group 1's backup wiped: loopkit must find the next copy dumpe2fs lists (group 3 with
/// `sparse_super` and `meta_bg`, group 2 without `sparse_super`, the last group with
/// `sparse_super2`), name its block, and read the whole tree (the source, and `debugfs -c -s N`).
fn later_backup_superblocks() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("ext-backups");
    let t = tree(&d)?;
    let want = hashes(&t)?;
    let layouts: [(&str, &[&str], u64); 4] = [
        ("sparse_super", &[], 24577),
        ("sparse_super2", &["-O", "sparse_super2"], 32769),
        ("no-sparse", &["-O", "^sparse_super,^resize_inode"], 16385),
        ("meta_bg", &["-O", "meta_bg,^resize_inode"], 24577),
    ];
    for (name, opts, expect) in layouts {
        let img = d.path(&format!("{name}.img"));
        let mut args = vec!["-t", "ext4", "-b", "1024"];
        args.extend(opts);
        mkfs(&img, &t, &args, "40M")?;
        ensure!(fsck_code(&img)? == 0, "{name}: e2fsck -fn does not call the image clean");
        let list = backups(&img)?;
        ensure!(list.len() >= 2 && list[0] == 8193, "{name}: dumpe2fs lists backups at {list:?}");
        ensure!(list[1] == expect, "{name}: dumpe2fs puts the second backup at {} (want {expect})", list[1]);
        wipe(&img, 1)?;
        wipe(&img, 8193)?;
        ensure!(fsck_code(&img)? != 0, "{name}: e2fsck -fn calls the wiped image clean");
        let oracle = rdump(&img, &d.path(&format!("rd-{name}")), Some((expect, 1024)))?;
        ensure!(oracle == want, "{name}: debugfs -c -s {expect} does not read the tree (oracle)");
        let (codes, got) = all_commands(&d, &img, 1, &[])?;
        ensure!(codes.iter().any(|c| c == "ext.superblock-backup"), "{name}: {codes:?}");
        ensure!(got == want, "{name}: extract differs from the source:\n{got:?}\n{want:?}");
        let v = json(&run(&mut loopkit(&["verify", "--json", s(&img)]))?)?;
        let msg = v["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["code"] == "ext.superblock-backup")
            .and_then(|p| p["message"].as_str())
            .unwrap_or_default()
            .to_string();
        ensure!(msg.contains(&format!("at block {expect} (group ")), "{name}: the backup used is not named: {msg}");
        // The primary alone wiped: group 1's copy is still the one used.
        let near = d.path(&format!("{name}-primary.img"));
        mkfs(&near, &t, &args, "40M")?;
        wipe(&near, 1)?;
        let v = json(&run(&mut loopkit(&["verify", "--json", s(&near)]))?)?;
        ensure!(v.to_string().contains("at block 8193 (group 1)"), "{name}: primary wiped: {v}");
    }
    Ok(Completion::Completed)
}

/// A symlink with an extended-attribute block on bigalloc (`-I 128` leaves no room in the inode,
/// so `debugfs ea_set` allocates a block, and `i_blocks` counts its whole 16 KiB cluster): debugfs
/// still calls it a fast link, e2fsck calls the image clean, and loopkit must read the target.
/// A slow (long) symlink beside it must still read through its block.
fn bigalloc_symlink_with_xattr() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("ext-bigalloc-xattr");
    let t = tree(&d)?;
    let long = "l".repeat(100);
    std::os::unix::fs::symlink(&long, t.join("longlink")).map_err(|e| e.to_string())?;
    let want = hashes(&t)?;
    for bs in ["1024", "4096"] {
        let img = d.path(&format!("big{bs}.img"));
        mkfs(&img, &t, &["-t", "ext4", "-O", "bigalloc", "-C", "16384", "-I", "128", "-b", bs], "32M")?;
        for link in ["/link", "/longlink"] {
            debugfs(&img, true, &format!("ea_set {link} user.note some-value"))?;
        }
        let stat = debugfs(&img, false, "stat /link")?;
        ensure!(
            stat.contains("Blockcount: 32")
                && !stat.contains("File ACL: 0\n")
                && stat.contains("Fast link dest: \"abcdefgh\""),
            "{bs}: /link is not a fast symlink with a cluster-sized xattr block:\n{stat}"
        );
        ensure!(debugfs(&img, false, "stat /longlink")?.contains("user.note"), "{bs}: no xattr on /longlink");
        ensure!(fsck_code(&img)? == 0, "{bs}: e2fsck -fn does not call the image clean");
        let (codes, got) = all_commands(&d, &img, 0, &[])?;
        ensure!(codes.is_empty(), "{bs}: problems {codes:?}");
        ensure!(got == want, "{bs}: extract differs from the source:\n{got:?}\n{want:?}");
        ensure!(rdump(&img, &d.path(&format!("rd{bs}")), None)? == want, "{bs}: debugfs rdump differs (oracle)");
        let o = run(&mut loopkit(&["verify", "--json", s(&img)]))?;
        ensure!(code(&o) == 0, "{bs}: verify exit {}", code(&o));
    }
    Ok(Completion::Completed)
}
