//! Reading secrets for the CLI: passphrase files, file descriptors, key files and the no-echo
//! prompt. Secrets never come from argument values and are never printed.

use crate::cli::{ParamArgs, SecretArgs};
use loopkit::crypto::Passphrase;
use loopkit::detect::{Constraints, Secrets};
use loopkit::formats::loopaes::KeyFile;
use loopkit::formats::luks::KdfPolicy;
use loopkit::image::OpenOptions;
use loopkit::progress::Interrupt;

/// The process's Ctrl-C flag, for work started while opening an image (key derivations).
pub static INTERRUPT: std::sync::OnceLock<Interrupt> = std::sync::OnceLock::new();
use std::io::IsTerminal;
use std::path::Path;
use zeroize::Zeroizing;

/// The passphrase from `--passphrase-file` / `--passphrase-fd`, if given.
pub fn passphrase(args: &SecretArgs) -> loopkit::Result<Option<Passphrase>> {
    if args.passphrase_file.is_some() && args.passphrase_fd.is_some() {
        return Err(loopkit::Error::invalid("give either --passphrase-file or --passphrase-fd, not both"));
    }
    if let Some(p) = &args.passphrase_file {
        if p == Path::new("-") {
            return Passphrase::read_bounded(std::io::stdin().lock(), "standard input").map(Some);
        }
        let f = std::fs::File::open(p)
            .map_err(|e| loopkit::Error::io(format!("cannot open passphrase file {}", p.display()), e))?;
        return Passphrase::read_bounded(f, &p.display().to_string()).map(Some);
    }
    if let Some(fd) = args.passphrase_fd {
        let path = format!("/proc/self/fd/{fd}");
        let f = std::fs::File::open(&path)
            .map_err(|e| loopkit::Error::io(format!("cannot read passphrase from file descriptor {fd}"), e))?;
        return Passphrase::read_bounded(f, &format!("file descriptor {fd}")).map(Some);
    }
    Ok(None)
}

/// Ask for a passphrase on the terminal without echo, if one is attached and allowed.
pub fn prompt(args: &SecretArgs, image: &Path) -> loopkit::Result<Option<Passphrase>> {
    if args.no_prompt || !std::io::stderr().is_terminal() || !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let p = rpassword::prompt_password(format!("Passphrase for {}: ", image.display()))
        .map_err(|e| loopkit::Error::io("cannot read the passphrase from the terminal", e))?;
    Ok(Some(Passphrase::new(p.into_bytes())))
}

/// The new passphrase for `migrate`: from `--new-passphrase-file`, `--new-passphrase-fd`, or
/// (on a terminal) a no-echo prompt asked twice. Never from an argument value.
pub fn new_passphrase(file: Option<&Path>, fd: Option<u32>, no_prompt: bool) -> loopkit::Result<Passphrase> {
    let p = match (file, fd) {
        (Some(_), Some(_)) => {
            return Err(loopkit::Error::invalid("give either --new-passphrase-file or --new-passphrase-fd, not both"));
        }
        (Some(p), None) if p == Path::new("-") => Passphrase::read_bounded(std::io::stdin().lock(), "standard input")?,
        (Some(p), None) => {
            let f = std::fs::File::open(p)
                .map_err(|e| loopkit::Error::io(format!("cannot open new passphrase file {}", p.display()), e))?;
            Passphrase::read_bounded(f, &p.display().to_string())?
        }
        (None, Some(fd)) => {
            let f = std::fs::File::open(format!("/proc/self/fd/{fd}")).map_err(|e| {
                loopkit::Error::io(format!("cannot read the new passphrase from file descriptor {fd}"), e)
            })?;
            Passphrase::read_bounded(f, &format!("file descriptor {fd}"))?
        }
        (None, None) => {
            if no_prompt || !std::io::stderr().is_terminal() || !std::io::stdin().is_terminal() {
                return Err(loopkit::Error::invalid(
                    "a new passphrase is needed: give --new-passphrase-file or --new-passphrase-fd (or run on a terminal \
                     to be asked)",
                ));
            }
            let read = |prompt: &str| {
                rpassword::prompt_password(prompt)
                    .map(|s| Zeroizing::new(s.into_bytes()))
                    .map_err(|e| loopkit::Error::io("cannot read the new passphrase from the terminal", e))
            };
            let a = read("New passphrase: ")?;
            let b = read("Repeat the new passphrase: ")?;
            if *a != *b {
                return Err(loopkit::Error::invalid("the two new passphrases differ"));
            }
            Passphrase::new(a.to_vec())
        }
    };
    if p.bytes().is_empty() {
        return Err(loopkit::Error::invalid("the new passphrase is empty"));
    }
    Ok(p)
}

/// Collect the secrets given on the command line (no prompting).
pub fn collect(args: &SecretArgs) -> loopkit::Result<Secrets> {
    let passphrase = passphrase(args)?;
    let key_file = match &args.key_file {
        Some(p) => Some(KeyFile::read(p, passphrase.as_ref())?),
        None => None,
    };
    Ok(Secrets { passphrase, key_file })
}

/// Parse a byte count: decimal, `0x` hex, optional K/M/G/T (binary) suffix.
pub fn parse_bytes(s: &str, what: &str) -> loopkit::Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic() && !t.starts_with("0x")) {
        Some((i, _)) => {
            let mult = match t[i..].to_ascii_lowercase().as_str() {
                "k" | "kib" => 1u64 << 10,
                "m" | "mib" => 1 << 20,
                "g" | "gib" => 1 << 30,
                "t" | "tib" => 1 << 40,
                "s" => 512,
                _ => {
                    return Err(loopkit::Error::invalid(format!(
                        "{what}: unknown unit in {s:?} (use K, M, G, T or s)"
                    )));
                }
            };
            (&t[..i], mult)
        }
        None => (t, 1),
    };
    let n = if let Some(h) = num.strip_prefix("0x") { u64::from_str_radix(h, 16) } else { num.parse::<u64>() }
        .map_err(|_| loopkit::Error::invalid(format!("{what}: {s:?} is not a byte count")))?;
    n.checked_mul(mult).ok_or_else(|| loopkit::Error::invalid(format!("{what}: {s:?} is too large")))
}

/// Turn the parameter flags into library options.
pub fn open_options(p: &ParamArgs) -> loopkit::Result<OpenOptions> {
    let mut c = Constraints::default();
    let mut unencrypted = false;
    match p.scheme {
        Some(crate::choices::SchemeArg::Plain) => unencrypted = true,
        Some(crate::choices::SchemeArg::Encrypted(s)) => c.scheme = Some(s),
        None => {}
    }
    if let Some(m) = p.cipher {
        if unencrypted {
            return Err(loopkit::Error::invalid("--scheme plain and --cipher contradict each other"));
        }
        c.mode = Some(m.mode);
        c.cipher = Some(m.cipher);
    }
    if let Some(b) = p.key_bits {
        let cipher = p.cipher.map_or(loopkit::crypto::block::CipherKind::Aes, |m| m.cipher);
        if b % 8 != 0 || !cipher.key_len_ok((b / 8) as usize) {
            return Err(loopkit::Error::invalid(format!(
                "--key-bits {b}: {cipher} does not take a {b}-bit key (AES: 128, 192 or 256 bits)"
            )));
        }
        c.key_bits = Some(b);
    }
    c.derivation = p.key_derivation;
    if let Some(o) = &p.offset {
        let (at, rest) = match o.strip_prefix('@') {
            Some(r) => (true, r),
            None => (false, o.as_str()),
        };
        c.offset_bytes = Some(parse_bytes(rest, "--offset")?);
        if at {
            if p.iv_offset.is_some_and(|v| v != 0) {
                return Err(loopkit::Error::invalid("--offset @N means IV offset 0; it contradicts --iv-offset"));
            }
            c.iv_offset_sectors = Some(0);
        }
    }
    if let Some(v) = p.iv_offset {
        c.iv_offset_sectors = Some(v);
    }
    if let Some(l) = &p.sizelimit {
        c.size_limit_bytes = Some(parse_bytes(l, "--sizelimit")?);
    }
    if let Some(s) = &p.pseed {
        c.pseed = Some(s.as_bytes().to_vec());
    }
    c.itercountk = p.itercountk;
    if let Some(s) = &p.scan_bytes {
        c.scan_bytes = Some(parse_bytes(s, "--scan-bytes")?.min(64 << 20));
    }
    let mut kdf = if p.allow_expensive_kdf { KdfPolicy::unlimited() } else { KdfPolicy::default() };
    if let Some(i) = INTERRUPT.get() {
        kdf.interrupt = i.clone();
    }
    Ok(OpenOptions { constraints: c, unencrypted, ecc_file: p.ecc.clone(), luks_header: p.header.clone(), kdf })
}
