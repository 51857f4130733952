//! One module per subcommand.

pub mod attach;
pub mod batch;
pub mod catalog;
pub mod docs;
pub mod extents;
pub mod extract;
pub mod inspect;
pub mod manifest;
pub mod migrate;
pub mod mount;
pub mod protect;
pub mod repair;
pub mod report;
pub mod rescue;
pub mod strip_ecc;
pub mod verify;

use crate::cli::{ParamArgs, SecretArgs};
use loopkit::detect::Secrets;
use loopkit::image::{Content, Opened};
use std::path::Path;

/// Open an image with the given secrets; on a terminal, prompt for a passphrase if the image
/// turns out to need one. Returns the opened image and the passphrase length (for cryptsetup
/// advice; never the passphrase itself).
pub fn open_with_prompt(image: &Path, s: &SecretArgs, p: &ParamArgs) -> loopkit::Result<(Opened, Option<usize>)> {
    open_keeping_secrets(image, s, p).map(|(opened, n, _)| (opened, n))
}

/// [`open_with_prompt`], also returning the secrets it read (a passphrase from stdin or a pipe
/// can be read only once).
pub fn open_keeping_secrets(
    image: &Path,
    s: &SecretArgs,
    p: &ParamArgs,
) -> loopkit::Result<(Opened, Option<usize>, Secrets)> {
    open_keeping_secrets_from(image, None, s, p)
}

/// [`open_keeping_secrets`] over a file already open (`attach` opens IMAGE once); `image`
/// then only names it. Each analysis reads a duplicate of `file`, dropped with the result.
pub fn open_keeping_secrets_from(
    image: &Path,
    file: Option<&std::fs::File>,
    s: &SecretArgs,
    p: &ParamArgs,
) -> loopkit::Result<(Opened, Option<usize>, Secrets)> {
    let opts = crate::secrets::open_options(p)?;
    let mut secrets = crate::secrets::collect(s)?;
    let open = |secrets: &Secrets| match file {
        Some(f) => {
            let dup = f.try_clone().map_err(|e| loopkit::Error::io("cannot duplicate the image descriptor", e))?;
            loopkit::image::open_file(dup, image, secrets, &opts)
        }
        None => loopkit::image::open(image, secrets, &opts),
    };
    let opened = open(&secrets)?;
    let opened = if secrets.is_empty()
        && matches!(opened.content, Content::NeedsSecret { .. } | Content::Luks { .. })
        && let Some(p) = crate::secrets::prompt(s, image)?
    {
        secrets.passphrase = Some(p);
        open(&secrets)?
    } else {
        opened
    };
    let pass_len = secrets
        .passphrase
        .as_ref()
        .filter(|_| !secrets.key_file.as_ref().is_some_and(|k| k.from_gpg))
        .map(|p| p.c_str().len())
        .or_else(|| secrets.key_file.as_ref().and_then(|k| k.lines.first()).map(|l| l.len()));
    Ok((opened, pass_len, secrets))
}

/// Write human output to stdout, control characters escaped ([`crate::render::terminal`]); a
/// closed pipe is not an error.
pub fn print(s: &str) -> loopkit::Result<()> {
    print_exact(&crate::render::terminal(s))
}

/// Write `s` to stdout exactly as it is (JSON, HTML, manifests); a closed pipe is not an error.
pub fn print_exact(s: &str) -> loopkit::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(loopkit::Error::io("writing to stdout", e)),
        _ => Ok(()),
    }
}

/// Serialise a report as one JSON document plus newline.
pub fn print_json<T: serde::Serialize>(v: &T) -> loopkit::Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| {
        loopkit::Error::new(loopkit::ErrorKind::InvalidInput, format!("BUG: cannot serialise report: {e}"))
    })?;
    print_exact(&(s + "\n"))
}

/// Open the file system inside an opened image and run `f` on it.
///
/// # Errors
/// `InvalidInput` when the image needs a secret; the reader's errors.
pub fn with_filesystem<T>(
    opened: &Opened,
    f: impl FnOnce(&dyn loopkit::fs::FileSystem) -> loopkit::Result<T>,
) -> loopkit::Result<T> {
    let Some(vol) = opened.volume()? else {
        return Err(opened.locked_error());
    };
    let fs = loopkit::fs::open(&*vol)?;
    f(&*fs)
}

/// Print problems on stderr, one per line (`loopkit: error: CODE: MESSAGE`).
pub fn print_problems(problems: &[loopkit::verify::Problem]) {
    for p in problems {
        let sev = if p.severity == loopkit::verify::Severity::Error { "error" } else { "warning" };
        eprintln!("loopkit: {sev}: {}: {}", crate::render::line(&p.code), crate::render::line(&p.message));
    }
}
