//! `loopkit extract IMAGE DEST [--path SUBPATH] [--force] [--allow-damaged | --salvage] [--bag]`: restore files from the image.

use crate::cli::ExtractArgs;
use loopkit::progress::{Interrupt, Run};
use loopkit::verify::Severity;

/// Run it; returns the exit code (0 everything restored, 1 problems found in the data).
pub fn run(a: &ExtractArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let (mut opened, _) = super::open_with_prompt(&a.common.image, &a.common.secrets, &a.common.params)?;
    let mut progress = crate::progress::for_terminal(a.common.output.quiet);
    // --salvage: the damage first (repairing a copy when the ECC data can), then what is lost.
    let prepared = if a.salvage {
        Some(loopkit::damage::salvage::prepare(&mut opened, &a.dest, &mut Run::new(&mut *progress, interrupt))?)
    } else {
        None
    };
    // --bag: DEST is the bag; the files go to DEST/data.
    let target = if a.bag { bag_root(&a.dest, a.force)?.join("data") } else { a.dest.clone() };
    let opts = loopkit::extract::Options {
        subpath: a.subpath.as_ref().map(|s| s.as_bytes().to_vec()),
        force: a.force,
        allow_damaged: a.allow_damaged,
        salvage: prepared.as_ref().map(|p| p.damage.as_ref().map(|d| d.lost_by_node()).unwrap_or_default()),
        list_symlinks: a.bag,
    };
    let out = super::with_filesystem(&opened, |fs| {
        loopkit::extract::extract(fs, &target, &opts, &mut Run::new(&mut *progress, interrupt))
    })?;
    let bag = if a.bag {
        let source = bag_source(&opened, &a.common.image, &mut Run::new(&mut *progress, interrupt))?;
        Some(loopkit::bag::write(
            &a.dest,
            &source,
            &out.symlinks_listed,
            a.force,
            &mut Run::new(&mut *progress, interrupt),
        )?)
    } else {
        None
    };
    if let Some(p) = &prepared {
        write_salvage_sidecar(a, p, &out)?;
    }
    drop(prepared);
    let ok = !out.problems.iter().any(|p| p.severity == Severity::Error);
    if a.common.output.json {
        super::print_json(&loopkit::report::Extract {
            loopkit_json: loopkit::report::JSON_VERSION,
            command: "extract".into(),
            image: opened.path.display().to_string(),
            dest: a.dest.display().to_string(),
            counts: out.counts,
            ok,
            problems: out.problems.clone(),
            bag: bag.clone(),
        })?;
    } else {
        print_summary(a, &out, bag.as_ref())?;
    }
    Ok(if ok { 0 } else { 1 })
}

/// `--salvage`: the damage sidecar `DEST.damage.json` (beside DEST, never inside it), listing
/// each salvaged file and its lost ranges.
fn write_salvage_sidecar(
    a: &ExtractArgs,
    p: &loopkit::damage::salvage::Prepared,
    out: &loopkit::extract::Outcome,
) -> loopkit::Result<()> {
    let sidecar = loopkit::report::Salvage {
        loopkit_json: loopkit::report::JSON_VERSION,
        command: "extract-salvage".into(),
        image: a.common.image.display().to_string(),
        dest: a.dest.display().to_string(),
        repaired_first: p.repaired_first,
        files: out
            .salvaged
            .iter()
            .map(|(path, size, lost)| loopkit::report::salvaged_file(path, *size, lost))
            .collect(),
    };
    // Beside DEST, never inside it (`DEST/` names the same directory).
    let dest: std::path::PathBuf = a.dest.components().collect();
    let mut name = dest.into_os_string();
    name.push(".damage.json");
    let bytes = serde_json::to_vec_pretty(&sidecar)
        .map_err(|e| loopkit::Error::invalid(format!("BUG: the damage sidecar does not serialise: {e}")))?;
    loopkit::output::write_file_atomically(std::path::Path::new(&name), &bytes, a.force, 0o644, &a.common.input_paths())
}

/// The text summary: what was extracted, the bag and the salvage sidecar if any, the problems.
fn print_summary(
    a: &ExtractArgs,
    out: &loopkit::extract::Outcome,
    bag: Option<&loopkit::bag::Summary>,
) -> loopkit::Result<()> {
    super::print(&format!(
        "extracted {} files ({}), {} directories, {} symlinks, {} hard links into {}; {} skipped\n",
        out.counts.files,
        crate::render::size(out.counts.bytes),
        out.counts.dirs,
        out.counts.symlinks,
        out.counts.hardlinks,
        a.dest.display(),
        out.counts.skipped
    ))?;
    if let Some(b) = bag {
        super::print(&format!(
            "BagIt bag {}: {} payload files ({} bytes) in data/, {} symlinks listed in symlinks.txt\n",
            a.dest.display(),
            b.files,
            b.bytes,
            b.symlinks
        ))?;
    }
    if a.salvage {
        super::print(&format!(
            "salvaged {} damaged file(s) with lost bytes as zeros; list in {}.damage.json\n",
            out.salvaged.len(),
            a.dest.display()
        ))?;
    }
    super::print_problems(&out.problems);
    Ok(())
}

/// DEST for `--bag`: created, or an existing empty directory (any directory with `--force`).
fn bag_root(dest: &std::path::Path, force: bool) -> loopkit::Result<std::path::PathBuf> {
    let io = |e: std::io::Error| loopkit::Error::io(format!("creating the bag {}", dest.display()), e);
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(dest).map_err(io)?,
        Err(e) => return Err(io(e)),
        Ok(m) if !m.is_dir() => {
            return Err(loopkit::Error::invalid(format!("{} exists and is not a directory", dest.display())));
        }
        Ok(_) => {
            if !force && std::fs::read_dir(dest).map_err(io)?.next().is_some() {
                return Err(loopkit::Error::invalid(format!(
                    "{} is not empty (a bag is written into a new or empty directory; --force to reuse it)",
                    dest.display()
                )));
            }
        }
    }
    Ok(dest.to_path_buf())
}

/// What bag-info.txt records of the source: the image's SHA-256 (read once more, whole), its
/// scheme and cipher, and the file system.
fn bag_source(
    opened: &loopkit::image::Opened,
    image: &std::path::Path,
    run: &mut Run<'_>,
) -> loopkit::Result<loopkit::bag::Source> {
    let image_bytes =
        std::fs::metadata(image).map_err(|e| loopkit::Error::io(format!("reading {}", image.display()), e))?.len();
    let image_sha256 = loopkit::bytes::hex(&loopkit::manifest::hash_file(image, run)?);
    let described = loopkit::report::inspect(opened, None);
    Ok(loopkit::bag::Source {
        image: image.display().to_string(),
        image_sha256,
        image_bytes,
        scheme: described.encryption.as_ref().map_or_else(|| "plain".to_string(), |e| e.scheme.clone()),
        cipher: described.encryption.as_ref().map(|e| e.cipher.clone()),
        file_system: described.filesystem.as_ref().map(|f| f.kind.clone()),
        agent: format!("loopkit {}", env!("CARGO_PKG_VERSION")),
        date: today(),
    })
}

/// Today's UTC date, `YYYY-MM-DD`.
fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    loopkit::bytes::rfc3339(secs).chars().take(10).collect()
}
