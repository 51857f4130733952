//! `extract --bag`: the bag written from an ext4 image made by `mke2fs -d` is valid for bagit.py
//! (`python3 -m bagit --validate`, the Library of Congress' reference implementation), its
//! payload equals the source tree the image was made from, `bag-info.txt` records the image's
//! SHA-256 as `sha256sum` computes it and the payload's `Payload-Oxum`, symlinks are listed in
//! `symlinks.txt`, the image is unchanged, and a payload byte changed afterwards makes bagit.py
//! reject the bag (so the oracle really checks).

use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, have, loopkit_bin, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Trial};
use std::path::Path;
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![trial("bag::extract_bag_validates", extract_bag_validates)]
}

fn bagit_validate(bag: &Path) -> Result<(i32, String), libtest_mimic::Failed> {
    let out = run(Command::new(util::python()).args(["-m", "bagit", "--validate"]).arg(bag))?;
    Ok((code(&out), String::from_utf8_lossy(&out.stderr).into_owned()))
}

fn extract_bag_validates() -> TestResult {
    if let Some(r) = util::python_module_missing("bagit") {
        return util::skip(r);
    }
    if !have("mke2fs") || !have("sha256sum") {
        return util::skip("mke2fs (e2fsprogs) or sha256sum not installed");
    }
    let s = Scratch::new("bag");
    let tree = s.path("tree");
    std::fs::create_dir_all(tree.join("sub/deeper"))?;
    let files: &[(&str, Vec<u8>)] = &[
        ("a.txt", b"hello\n".to_vec()),
        ("sub/big.bin", (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect()),
        ("sub/deeper/empty", Vec::new()),
        ("50% off", b"percent".to_vec()),
        ("line\nbreak", b"newline in the name".to_vec()),
    ];
    for (name, data) in files {
        std::fs::write(tree.join(name), data)?;
    }
    std::fs::hard_link(tree.join("a.txt"), tree.join("sub/hard"))?;
    std::os::unix::fs::symlink("../a.txt", tree.join("sub/link"))?;
    let img = s.path("ext4.img");
    run_ok(Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-d"]).arg(&tree).arg(&img).arg("16M"))?;
    let before = sha256_file(&img)?;
    let bag = s.path("bag");
    let out = run(Command::new(loopkit_bin()).arg("extract").arg(&img).arg(&bag).arg("--bag"))?;
    ensure!(code(&out) == 0, "extract --bag exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    ensure!(sha256_file(&img)? == before, "the image changed");

    let (rc, log) = bagit_validate(&bag)?;
    ensure!(rc == 0, "bagit.py rejects the bag (exit {rc}):\n{log}");

    // The payload is the source tree: every regular file, byte for byte (the hard link too).
    let mut want: Vec<(String, Vec<u8>)> = files.iter().map(|(n, d)| (n.to_string(), d.clone())).collect();
    want.push(("sub/hard".into(), b"hello\n".to_vec()));
    for (name, data) in &want {
        let got = std::fs::read(bag.join("data").join(name))?;
        ensure!(&got == data, "data/{name:?} differs from the source tree");
    }
    ensure!(std::fs::symlink_metadata(bag.join("data/sub/link")).is_err(), "a symlink was created in the payload");
    let links = std::fs::read_to_string(bag.join("symlinks.txt"))?;
    ensure!(links == "data/sub/link\t../a.txt\n", "symlinks.txt: {links:?}");

    // bag-info: the image's digest as sha256sum computes it, the payload's oxum from the tree.
    let sum = run_ok(Command::new("sha256sum").arg(&img))?;
    let digest = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap_or_default().to_string();
    let info = std::fs::read_to_string(bag.join("bag-info.txt"))?;
    ensure!(
        info.contains(&format!("Source-Image-SHA256: {digest}\n")),
        "bag-info.txt lacks the image digest {digest}:\n{info}"
    );
    let bytes: usize = want.iter().map(|(_, d)| d.len()).sum();
    ensure!(
        info.contains(&format!("Payload-Oxum: {bytes}.{}\n", want.len())),
        "bag-info.txt: want Payload-Oxum {bytes}.{}:\n{info}",
        want.len()
    );
    ensure!(
        info.contains("Decryption-Scheme: plain\n") && info.contains("File-System: ext4\n"),
        "bag-info.txt:\n{info}"
    );

    // A bag is refused into a non-empty directory.
    let again = run(Command::new(loopkit_bin()).arg("extract").arg(&img).arg(&bag).arg("--bag"))?;
    ensure!(code(&again) == 2, "extract --bag into the full bag: exit {}", code(&again));

    // The oracle checks: one payload byte changed → invalid.
    let victim = bag.join("data/sub/big.bin");
    let mut data = std::fs::read(&victim)?;
    data[1000] ^= 1;
    std::fs::write(&victim, &data)?;
    let (rc, _) = bagit_validate(&bag)?;
    ensure!(rc != 0, "bagit.py accepts a bag whose payload was changed");
    Ok(Completion::Completed)
}
