//! LUKS2 volumes in the middle of `cryptsetup reencrypt`, read through their data segments.
//! The oracle is the plaintext the test wrote (Python `cryptography` under a known volume key,
//! or the raw device before `reencrypt --encrypt`); cryptsetup does the re-encryption itself
//! (offline, on files), is stopped by SIGKILL part-way, and — where it left a hotzone flagged
//! `in-reencryption` — recovers it with `cryptsetup repair` from its checksum resilience data.
//! loopkit must hash the payload to the plaintext's SHA-256 at every safe point, and refuse
//! (exit 2, `unsupported`, naming why) the states it cannot read exactly: a hotzone in flight,
//! resilience `none`.

use crate::ensure;
use crate::luks_read::{cryptsetup, missing, oracle, verify_json, write_pass};
use crate::util::{self, Scratch, TestResult, code, sha256_file, trial};
use libtest_mimic::{Completion, Trial};
use std::path::Path;
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("luks_reencrypt::reencrypt_read_through_segments", reencrypt_read_through_segments),
        trial("luks_reencrypt::encrypt_read_through_segments", encrypt_read_through_segments),
    ]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

const PBKDF: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// `size` bytes of deterministic pseudo-random data (not loopkit's: a xorshift stream).
fn write_data(p: &Path, size: usize) -> Result<(), libtest_mimic::Failed> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(size);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    std::fs::write(p, v).map_err(|e| format!("writing {}: {e}", p.display()).into())
}

/// The active (non-backup) data segments and whether one is flagged `in-reencryption`.
fn segments(meta: &Path) -> Result<(Vec<serde_json::Value>, bool), libtest_mimic::Failed> {
    let o = cryptsetup(&["luksDump", "--dump-json-metadata", s(meta)])?;
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| format!("luksDump json: {e}"))?;
    let flags = |sg: &serde_json::Value| -> Vec<String> {
        sg["flags"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let active: Vec<serde_json::Value> = m["segments"]
        .as_object()
        .map(|o| o.values().filter(|sg| !flags(sg).iter().any(|f| f.starts_with("backup-"))).cloned().collect())
        .unwrap_or_default();
    let hot = active.iter().any(|sg| flags(sg).iter().any(|f| f == "in-reencryption"));
    Ok((active, hot))
}

/// Run `cryptsetup reencrypt --resume-only` on a copy of `img` (and `hdr`) and SIGKILL it as
/// soon as its header shows it part-way (more than one active segment, or a hotzone in flight),
/// watching the header with `luksDump` rather than guessing a delay, so machine load does not
/// matter. Retried on a fresh copy when cryptsetup finished before it was seen part-way. Returns
/// whether a hotzone was in flight; the copy replaces `img`/`hdr`.
fn interrupt(img: &Path, hdr: Option<&Path>, pass: &Path, dir: &Path) -> Result<bool, libtest_mimic::Failed> {
    let part_way = |meta: &Path| segments(meta).ok().filter(|(active, hot)| *hot || active.len() > 1);
    for attempt in 0..6u64 {
        let (ci, ch) = (dir.join("try.img"), dir.join("try.hdr"));
        std::fs::copy(img, &ci)?;
        if let Some(h) = hdr {
            std::fs::copy(h, &ch)?;
        }
        let meta = if hdr.is_some() { ch.clone() } else { ci.clone() };
        let mut c = Command::new("cryptsetup");
        c.args(["--disable-locks", "reencrypt", "--batch-mode", "--resume-only", "--force-offline-reencrypt"]);
        c.args(["--key-file", s(pass), "--hotzone-size", "1M"]);
        if hdr.is_some() {
            c.args(["--header", s(&ch)]);
        }
        c.arg(s(&ci)).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut child = c.spawn().map_err(|e| format!("cryptsetup reencrypt: {e}"))?;
        let started = std::time::Instant::now();
        // A later attempt waits a little after seeing progress, to stop somewhere else.
        let linger = std::time::Duration::from_millis(40 * attempt);
        loop {
            if child.try_wait()?.is_some() {
                break; // finished (or failed) before it was caught part-way: try again
            }
            if part_way(&meta).is_some() {
                std::thread::sleep(linger);
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            if started.elapsed() > std::time::Duration::from_secs(120) {
                let _ = child.kill();
                let _ = child.wait();
                return util::fail("cryptsetup reencrypt made no visible progress in 120 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Some((_, hot)) = part_way(&meta) {
            std::fs::rename(&ci, img)?;
            if let Some(h) = hdr {
                std::fs::rename(&ch, h)?;
            }
            return Ok(hot);
        }
    }
    util::fail("cryptsetup reencrypt was never seen part-way (it finished first at every attempt)")
}

/// After an interruption: a hotzone in flight is refused (the image unchanged), then
/// `cryptsetup repair` recovers it and loopkit reads the segments to `want`.
fn check_interrupted(
    img: &Path,
    hdr: Option<&Path>,
    pass: &Path,
    hot: bool,
    want: &str,
    extra: &[&str],
) -> Result<usize, libtest_mimic::Failed> {
    let meta = hdr.unwrap_or(img);
    let mut args = vec!["--key-file", s(pass)];
    args.extend(extra);
    if hot {
        let before = sha256_file(img)?;
        let (o, v) = verify_json(img, &args)?;
        ensure!(
            code(&o) == 2
                && v["error"]["kind"] == "unsupported"
                && v["error"]["message"].as_str().is_some_and(|m| m.contains("in-reencryption")),
            "a hotzone in flight: exit {} {v}",
            code(&o)
        );
        ensure!(sha256_file(img)? == before, "loopkit changed the image");
        let mut rep = vec!["repair", "--batch-mode", "--key-file", s(pass)];
        if let Some(h) = hdr {
            rep.extend(["--header", s(h)]);
        }
        rep.push(s(img));
        let o = cryptsetup(&rep)?;
        ensure!(o.status.success(), "cryptsetup repair: {}", String::from_utf8_lossy(&o.stderr));
    }
    let (active, hot_after) = segments(meta)?;
    ensure!(!hot_after, "cryptsetup repair left a hotzone in flight");
    let (o, v) = verify_json(img, &args)?;
    ensure!(
        code(&o) == 0 && v["payload"]["sha256"] == want,
        "{} active segments {active:?}: exit {} {v}",
        active.len(),
        code(&o)
    );
    let warned = v["problems"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["code"] == "luks.reencryption" && p["severity"] == "warning"));
    ensure!(warned || active.len() == 1, "no luks.reencryption warning: {v}");
    Ok(active.len())
}

/// `cryptsetup reencrypt` (new volume key, same cipher) of a 128 MiB payload Python wrote:
/// nothing moved (`--init-only`), stopped part-way (old and new key segments, hotzone recovered by
/// cryptsetup if needed), and resilience `none` (refused).
fn reencrypt_read_through_segments() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("luks-reencrypt-read");
    let f = reencrypt_fixture(&d.0)?;
    ensure!(f.segments >= 2, "only {} active segment(s) after the interruption", f.segments);
    // Resilience none: a crash would leave no trace, so loopkit refuses.
    let none = make_reencrypt(&d.0, "n.img", "none", &f.pass)?;
    let (o, v) = verify_json(&none.0, &["--key-file", s(&f.pass)])?;
    ensure!(
        code(&o) == 2
            && v["error"]["kind"] == "unsupported"
            && v["error"]["message"].as_str().is_some_and(|m| m.contains("none")),
        "resilience none: exit {} {v}",
        code(&o)
    );
    eprintln!(
        "reencrypt: init-only, part-way ({} segments, hotzone in flight first: {}) read; resilience none refused",
        f.segments, f.hot
    );
    Ok(Completion::Completed)
}

/// A LUKS2 container (aes-xts-plain64, 512-byte sectors) over 128 MiB Python wrote with a known
/// volume key, then `cryptsetup reencrypt --init-only --resilience RESILIENCE`: (image, want).
fn make_reencrypt(
    dir: &Path,
    name: &str,
    resilience: &str,
    pass: &Path,
) -> Result<(std::path::PathBuf, String), libtest_mimic::Failed> {
    let plain = dir.join("re-plain.bin");
    if !plain.exists() {
        write_data(&plain, 128 << 20)?;
    }
    let want = sha256_file(&plain)?;
    let vk = dir.join("re-vk");
    std::fs::write(&vk, (0..64u8).map(|i| i.wrapping_mul(73).wrapping_add(11)).collect::<Vec<u8>>())?;
    let img = dir.join(name);
    std::fs::File::create(&img)?.set_len((16 << 20) + (128 << 20))?;
    let mut f = vec!["luksFormat", "--batch-mode", "--type", "luks2", "--sector-size", "512", "--key-size", "512"];
    f.extend(["--volume-key-file", s(&vk), "--key-file", s(pass)]);
    f.extend(PBKDF);
    f.push(s(&img));
    let o = cryptsetup(&f)?;
    ensure!(o.status.success(), "luksFormat: {}", String::from_utf8_lossy(&o.stderr));
    let off = (16u64 << 20).to_string();
    let r = oracle(&["xts-encrypt", "--plain", s(&plain), "--key-file", s(&vk), "--image", s(&img), "--offset", &off])?;
    ensure!(r["plaintext_sha256"] == want.as_str(), "oracle wrote {r}");
    let mut re = vec!["reencrypt", "--init-only", "--batch-mode", "--force-offline-reencrypt", "--key-file"];
    re.extend([s(pass), "--resilience", resilience, "--hotzone-size", "1M"]);
    re.extend(PBKDF);
    re.push(s(&img));
    let o = cryptsetup(&re)?;
    ensure!(o.status.success(), "reencrypt --init-only: {}", String::from_utf8_lossy(&o.stderr));
    Ok((img, want))
}

/// A volume stopped part-way through `cryptsetup reencrypt` (header in the image: `hdr` is the
/// image), checked by loopkit against its plaintext first with nothing moved, then part-way.
pub fn reencrypt_fixture(dir: &Path) -> Result<Interrupted, libtest_mimic::Failed> {
    let pass = dir.join("re-pass");
    write_pass(&pass, "reencrypt passphrase")?;
    let (img, want) = make_reencrypt(dir, "re.img", "checksum", &pass)?;
    // Nothing moved yet.
    let (o, v) = verify_json(&img, &["--key-file", s(&pass)])?;
    ensure!(code(&o) == 0 && v["payload"]["sha256"] == want.as_str(), "init-only: exit {} {v}", code(&o));
    // Part-way.
    let hot = interrupt(&img, None, &pass, dir)?;
    let segments = check_interrupted(&img, None, &pass, hot, &want, &[])?;
    Ok(Interrupted { hdr: img.clone(), img, pass, want, segments, hot })
}

/// `cryptsetup reencrypt --encrypt` with a detached header over 128 MiB of plaintext (no data
/// shift): stopped part-way, the volume is a `crypt` segment followed by a `linear` one; loopkit
/// reads both to the plaintext's SHA-256.
fn encrypt_read_through_segments() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("luks-encrypt-read");
    let f = encrypt_fixture(&d.0)?;
    let (active, _) = segments(&f.hdr)?;
    ensure!(
        f.segments >= 2
            && active.iter().any(|sg| sg["type"] == "linear")
            && active.iter().any(|sg| sg["type"] == "crypt"),
        "not a crypt + linear state: {active:?}"
    );
    eprintln!("encrypt: part-way ({} segments, crypt + linear, hotzone in flight first: {}) read", f.segments, f.hot);
    Ok(Completion::Completed)
}

/// A volume stopped part-way through `cryptsetup reencrypt --encrypt` with a detached header,
/// already checked by loopkit against its plaintext (see [`encrypt_read_through_segments`]).
pub struct Interrupted {
    pub img: std::path::PathBuf,
    pub hdr: std::path::PathBuf,
    pub pass: std::path::PathBuf,
    pub want: String,
    pub segments: usize,
    pub hot: bool,
}

pub fn encrypt_fixture(dir: &Path) -> Result<Interrupted, libtest_mimic::Failed> {
    let pass = dir.join("enc-pass");
    write_pass(&pass, "encrypt passphrase")?;
    let img = dir.join("enc-dev.img");
    write_data(&img, 128 << 20)?;
    let want = sha256_file(&img)?;
    let hdr = dir.join("enc-dev.hdr");
    let mut e = vec!["reencrypt", "--encrypt", "--init-only", "--batch-mode", "--force-offline-reencrypt", "--type"];
    e.extend(["luks2", "--key-file", s(&pass), "--header", s(&hdr), "--resilience", "checksum"]);
    e.extend(PBKDF);
    e.push(s(&img));
    let o = cryptsetup(&e)?;
    ensure!(o.status.success(), "reencrypt --encrypt --init-only: {}", String::from_utf8_lossy(&o.stderr));
    let hot = interrupt(&img, Some(&hdr), &pass, dir)?;
    let segments = check_interrupted(&img, Some(&hdr), &pass, hot, &want, &["--header", s(&hdr)])?;
    Ok(Interrupted { img, hdr, pass, want, segments, hot })
}
