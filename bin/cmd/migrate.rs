//! `loopkit migrate IMAGE --to dmcrypt --mode plain|detached-header|reencrypt`: keep the data
//! readable on any current Linux (see docs/MIGRATE.md).

use crate::cli::{MigrateArgs, MigrateMode};
use loopkit::migrate::{self, DetachedOptions, Format, KdfOptions, PlainOptions, ReencryptOptions};
use loopkit::progress::{Interrupt, Run};

fn kdf_options(a: &MigrateArgs) -> loopkit::Result<KdfOptions> {
    Ok(KdfOptions {
        pbkdf: a.pbkdf,
        iter_time_ms: a.iter_time,
        memory_kib: a.pbkdf_memory,
        parallel: a.pbkdf_parallel,
        force_iterations: a.pbkdf_force_iterations,
    })
}

/// Run it; returns the exit code (0 done and verified).
pub fn run(a: &MigrateArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let need_output =
        |what: &str| a.output.clone().ok_or_else(|| loopkit::Error::invalid(format!("--mode {what} needs -o FILE")));
    if a.mode != MigrateMode::Plain && a.key_out.is_some() {
        return Err(loopkit::Error::invalid("--key-out applies to --mode plain only"));
    }
    if a.mode != MigrateMode::Reencrypt && (a.luks1 || a.resume) {
        return Err(loopkit::Error::invalid("--luks1 and --resume apply to --mode reencrypt only"));
    }
    if a.common.secrets.passphrase_file.as_deref() == Some(std::path::Path::new("-"))
        && a.new_passphrase_file.as_deref() == Some(std::path::Path::new("-"))
    {
        return Err(loopkit::Error::invalid("the old and the new passphrase cannot both come from standard input"));
    }
    let (opened, pass_len, secrets) =
        super::open_keeping_secrets(&a.common.image, &a.common.secrets, &a.common.params)?;
    let image = a.common.image.display().to_string();
    let mut progress = crate::progress::for_terminal(a.common.output.quiet);
    let (outcome, plain) = match a.mode {
        MigrateMode::Plain => {
            let loopaes_key_file = secrets.key_file.as_ref().map(|k| k.raw.clone());
            let (o, m) = migrate::plain(
                &opened,
                &PlainOptions {
                    key_out: a.key_out.clone(),
                    name: a.name.clone(),
                    force: a.force,
                    loopaes_key_file,
                    pass_len,
                },
            )?;
            (o, Some(m))
        }
        MigrateMode::DetachedHeader => {
            let output = need_output("detached-header")?;
            let pass = crate::secrets::new_passphrase(
                a.new_passphrase_file.as_deref(),
                a.new_passphrase_fd,
                a.common.secrets.no_prompt,
            )?;
            let o = migrate::detached_header(
                &opened,
                &pass,
                &DetachedOptions {
                    output,
                    kdf: kdf_options(a)?,
                    force: a.force,
                    label: a.label.clone(),
                    chunk_bytes: 1 << 20,
                },
                &mut Run::new(&mut *progress, interrupt),
            )?;
            (o, None)
        }
        MigrateMode::Reencrypt => {
            let output = need_output("reencrypt")?;
            let pass = crate::secrets::new_passphrase(
                a.new_passphrase_file.as_deref(),
                a.new_passphrase_fd,
                a.common.secrets.no_prompt,
            )?;
            let mut stream = migrate::apply::StreamOptions::default();
            if let Some(t) = a.threads {
                stream.workers = t.clamp(1, 64);
            }
            if let Some(c) = &a.checkpoint_every {
                stream.checkpoint_bytes = crate::secrets::parse_bytes(c, "--checkpoint-every")?.max(4096);
            }
            let o = migrate::reencrypt(
                &opened,
                &pass,
                &ReencryptOptions {
                    output,
                    format: if a.luks1 { Format::Luks1 } else { Format::Luks2 },
                    kdf: kdf_options(a)?,
                    force: a.force,
                    resume: a.resume,
                    label: a.label.clone(),
                    stream,
                },
                &mut Run::new(&mut *progress, interrupt),
            )?;
            (o, None)
        }
    };
    let report = loopkit::report::migrate(&image, &outcome, plain.as_ref());
    let text = crate::render::migrate(&report);
    if a.mode == MigrateMode::Plain
        && let Some(out) = &a.output
    {
        let mut inputs = a.common.input_paths();
        inputs.extend(a.key_out.as_deref());
        loopkit::output::write_file_atomically(out, text.as_bytes(), a.force, 0o644, &inputs)?;
    }
    if a.common.output.json {
        super::print_json(&report)?;
    } else {
        super::print(&text)?;
    }
    // A digest mismatch is an error (exit 2) before we get here.
    Ok(0)
}
