//! `loopkit migrate IMAGE --to dmcrypt --mode plain|detached-header|reencrypt`: keep the data
//! readable on any current Linux (see docs/MIGRATE.md).

use crate::cli::{MigrateArgs, MigrateMode};
use loopkit::formats::cryptsetup::{DeviceType, OpenCommand};
use loopkit::formats::dvdisaster::create::{self, Target};
use loopkit::formats::dvdisaster::layout::Method;
use loopkit::image::Opened;
use loopkit::migrate::{self, DetachedOptions, Format, KdfOptions, PlainOptions, ReencryptOptions};
use loopkit::progress::{Interrupt, Run};
use std::path::{Path, PathBuf};

fn kdf_options(a: &MigrateArgs) -> loopkit::Result<KdfOptions> {
    Ok(KdfOptions {
        pbkdf: a.pbkdf,
        iter_time_ms: a.iter_time,
        memory_kib: a.pbkdf_memory,
        parallel: a.pbkdf_parallel,
        force_iterations: a.pbkdf_force_iterations,
    })
}

/// Refuse options the chosen mode does not take (`--key-out` outside plain, `--luks1` and
/// `--resume` outside reencrypt), and the old and the new passphrase both from standard input.
fn check_options(a: &MigrateArgs) -> loopkit::Result<()> {
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
    Ok(())
}

/// `-o FILE`, which `--mode {what}` needs.
fn need_output(a: &MigrateArgs, what: &str) -> loopkit::Result<PathBuf> {
    a.output.clone().ok_or_else(|| loopkit::Error::invalid(format!("--mode {what} needs -o FILE")))
}

/// `--mode reencrypt`: ask for the new passphrase, take the streaming options (`--threads`,
/// `--checkpoint-every`) and re-encrypt into `-o FILE` (with `--protect`, into the unprotected
/// image the protected one is made from).
fn reencrypt(
    a: &MigrateArgs,
    opened: &Opened,
    protect: Option<&Protect>,
    run: &mut Run<'_>,
) -> loopkit::Result<migrate::Outcome> {
    let mut output = need_output(a, "reencrypt")?;
    if let Some(p) = protect {
        output = p.unprotected.clone();
    }
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
    migrate::reencrypt(
        opened,
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
        run,
    )
}

/// Run it; returns the exit code (0 done and verified).
pub fn run(a: &MigrateArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    check_options(a)?;
    // --protect: plan it (and refuse bad parameters) before the long re-encryption.
    let protect = match &a.protect {
        None => None,
        Some(m) => {
            if a.mode != MigrateMode::Reencrypt {
                return Err(loopkit::Error::invalid(
                    "--protect applies to --mode reencrypt (the other modes write no new image)",
                ));
            }
            Some(Protect::plan(a, m)?)
        }
    };
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
            let output = need_output(a, "detached-header")?;
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
            let o = reencrypt(a, &opened, protect.as_ref(), &mut Run::new(&mut *progress, interrupt))?;
            (o, None)
        }
    };
    let mut outcome = outcome;
    let protected = match &protect {
        Some(p) => Some(p.finish(a, &mut outcome, &mut Run::new(&mut *progress, interrupt))?),
        None => None,
    };
    let mut report = loopkit::report::migrate(&image, &outcome, plain.as_ref());
    let mut text = crate::render::migrate(&report);
    if let Some(p) = protected {
        text.push_str(&format!("protect      {}", super::protect::text(&p)));
        report.protect = Some(p);
    }
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

/// `migrate --mode reencrypt --protect METHOD`: the re-encrypted image goes to `OUT.unprotected`
/// (committed by migrate as usual, and the name `--resume` continues), then `protect` writes
/// the protected image to OUT under a temporary name, syncs, verifies and renames it, and only
/// then is `OUT.unprotected` removed (RS01: renamed to OUT, its `.ecc` file beside it).
struct Protect {
    req: create::Request,
    out: PathBuf,
    unprotected: PathBuf,
    /// RS01: the `.ecc` file.
    ecc_file: Option<PathBuf>,
}

impl Protect {
    fn plan(a: &MigrateArgs, method: &str) -> loopkit::Result<Protect> {
        let out = a.output.clone().ok_or_else(|| loopkit::Error::invalid("--mode reencrypt needs -o FILE"))?;
        let method = super::protect::method(method)?;
        let target = if method == Method::Rs01 { Target::EccFile } else { Target::Augment };
        let req = super::protect::request(method, target, a.medium.as_deref(), a.redundancy.as_deref())?;
        let mut unprotected = out.clone().into_os_string();
        unprotected.push(".unprotected");
        let unprotected = PathBuf::from(unprotected);
        let ecc_file = (method == Method::Rs01).then(|| {
            let e = out.with_extension("ecc");
            if e == out { PathBuf::from(format!("{}.ecc", out.display())) } else { e }
        });
        let inputs = a.common.input_paths();
        let inputs: Vec<&Path> = inputs.iter().copied().chain([unprotected.as_path()]).collect();
        loopkit::output::check_output(&out, &inputs, a.force)?;
        if let Some(e) = &ecc_file {
            loopkit::output::check_output(e, &inputs, a.force)?;
        }
        Ok(Protect { req, out, unprotected, ecc_file })
    }

    /// Protect the committed migrate output; returns the protect report.
    fn finish(
        &self,
        a: &MigrateArgs,
        outcome: &mut loopkit::migrate::Outcome,
        run: &mut Run<'_>,
    ) -> loopkit::Result<loopkit::report::Protect> {
        let mut opts = create::Options { force: a.force, ..Default::default() };
        if let Some(t) = a.threads {
            opts.workers = t.clamp(1, 256);
        }
        let dest = self.ecc_file.as_deref().unwrap_or(&self.out);
        let done = create::protect(&self.unprotected, &self.req, dest, &opts, run).map_err(|e| {
            e.context(format!(
                "protecting the re-encrypted image {} (it is kept; finish with `loopkit protect {} -o {}`)",
                self.unprotected.display(),
                self.unprotected.display(),
                self.out.display()
            ))
        })?;
        let report = loopkit::report::protect(&self.out, &done);
        if self.ecc_file.is_some() {
            let renamed = if a.force {
                std::fs::rename(&self.unprotected, &self.out)
            } else {
                loopkit::output::no_replace_rename(&self.unprotected, &self.out)
            };
            renamed.map_err(|e| {
                loopkit::Error::io(format!("renaming {} to {}", self.unprotected.display(), self.out.display()), e)
            })?;
        } else {
            std::fs::remove_file(&self.unprotected)
                .map_err(|e| loopkit::Error::io(format!("removing {}", self.unprotected.display()), e))?;
        }
        loopkit::output::sync_dir_of(&self.out)?;
        outcome.output = Some(self.out.clone());
        outcome.cryptsetup = Some(OpenCommand::new(DeviceType::Luks, &self.out.display().to_string(), "migrated"));
        Ok(report)
    }
}
