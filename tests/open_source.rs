//! Open from any source: `image::open_source` over the image's bytes in memory gives
//! the same verdict as `image::open` over the file, and its decrypted payload hashes to the
//! plaintext SHA-256 the fixture generator computed (`testdata/gen/legacy.py`, Python
//! `cryptography`) — the whole open → detect → verify path runs without a file.

use crate::ensure;
use crate::util::{TestResult, skip, trial};
use libtest_mimic::{Completion, Trial};
use loopkit::crypto::Passphrase;
use loopkit::detect::Secrets;
use loopkit::image::{self, OpenOptions, SourceHints};
use std::sync::Arc;

fn from_memory_equals_from_file() -> TestResult {
    let (_d, f, pass) = match crate::legacy::rmd160_fixture("open-source", "c.img", "ext2")? {
        Ok(x) => x,
        Err(r) => return skip(r),
    };
    let line = std::fs::read(&pass)?;
    let line = line.split(|&c| c == b'\n').next().unwrap_or(&[]).to_vec();
    let secrets = Secrets { passphrase: Some(Passphrase::new(line)), key_file: None };
    let opts = OpenOptions::default();
    let interrupt = loopkit::progress::Interrupt::new();
    let digest = |o: &image::Opened| -> Result<String, loopkit::Error> {
        let v = loopkit::verify::verify(
            o,
            Default::default(),
            &mut loopkit::progress::Run::new(&mut loopkit::progress::NoProgress, &interrupt),
        )?;
        Ok(v.digest.map(|p| loopkit::bytes::hex(&p.sha256)).unwrap_or_default())
    };
    let from_file = image::open(&f.image, &secrets, &opts)?;
    let bytes = std::fs::read(&f.image)?;
    let hints = SourceHints { name: "in-memory.img".into(), ..Default::default() };
    let mem = image::open_source(Arc::new(loopkit::source::MemSource::new(bytes)), &secrets, &opts, &hints)?;
    ensure!(
        format!("{:?}", mem.filesystem()) == format!("{:?}", from_file.filesystem()),
        "different file systems: {:?} vs {:?}",
        mem.filesystem(),
        from_file.filesystem()
    );
    let (a, b) = (digest(&from_file)?, digest(&mem)?);
    ensure!(a == f.plaintext_sha256 && b == f.plaintext_sha256, "payload {a} / {b}, plaintext {}", f.plaintext_sha256);
    ensure!(mem.path.to_str() == Some("in-memory.img"), "the hint's name is not used: {:?}", mem.path);
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![trial("open_source::from_memory_equals_from_file", from_memory_equals_from_file)]
}
