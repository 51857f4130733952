//! Finding the files of a batch: each PATH argument is a file or a directory walked with
//! `walkdir` (`--max-depth`, `--exclude GLOB`); dvdisaster `.ecc` files (recognised by their
//! `*dvdisaster*` header, not their name) are set aside, because `image::open` pairs them with
//! their image. Whether a file is an image is decided by content when it is opened.

use std::io::Read;
use std::path::{Path, PathBuf};

/// How to walk.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Descend at most this many directory levels below a PATH argument (None: no limit).
    pub max_depth: Option<usize>,
    /// Shell globs; a file or directory whose path or name matches one is left out.
    pub exclude: Vec<glob::Pattern>,
}

/// Parse `--exclude` patterns.
///
/// # Errors
/// `InvalidInput` naming the bad pattern.
pub fn patterns(globs: &[String]) -> crate::Result<Vec<glob::Pattern>> {
    globs
        .iter()
        .map(|g| glob::Pattern::new(g).map_err(|e| crate::Error::invalid(format!("--exclude {g:?}: {e}"))))
        .collect()
}

/// Whether `p` (a path, or its file name when the pattern has no `/`) matches `pat`.
pub fn matches(pat: &glob::Pattern, p: &Path) -> bool {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    if pat.as_str().contains('/') {
        pat.matches_path_with(p, opts)
    } else {
        p.file_name().is_some_and(|n| pat.matches_with(&n.to_string_lossy(), opts))
    }
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Found {
    /// Candidate images, in the order found (arguments in order, directories sorted by name).
    pub files: Vec<PathBuf>,
    /// dvdisaster `.ecc` files (paired with their images when those are opened).
    pub ecc_files: Vec<PathBuf>,
    /// Files left out and why (not regular, empty, unreadable directory entries).
    pub left_out: Vec<(PathBuf, String)>,
}

/// Whether the file starts with dvdisaster's `*dvdisaster*` cookie (RS01/RS03 `.ecc` files do;
/// augmented images do not, their header is at the end of the data).
fn is_ecc_file(p: &Path) -> bool {
    let mut head = [0u8; 12];
    std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut head)).is_ok()
        && &head == crate::formats::dvdisaster::layout::COOKIE
}

/// Walk `paths`.
///
/// # Errors
/// `Io` when a PATH argument does not exist or cannot be read (entries below it that cannot be
/// read are listed in `left_out` instead).
pub fn walk(paths: &[PathBuf], opts: &WalkOptions) -> crate::Result<Found> {
    let mut found = Found::default();
    let excluded = |p: &Path| opts.exclude.iter().any(|g| matches(g, p));
    for arg in paths {
        let meta =
            std::fs::metadata(arg).map_err(|e| crate::Error::io(format!("cannot examine {}", arg.display()), e))?;
        if !meta.is_dir() {
            if !excluded(arg) {
                classify(arg.clone(), &meta, &mut found);
            }
            continue;
        }
        let mut w = walkdir::WalkDir::new(arg).follow_links(false).sort_by_file_name();
        if let Some(d) = opts.max_depth {
            w = w.max_depth(d.saturating_add(1));
        }
        let mut it = w.into_iter();
        while let Some(entry) = it.next() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let p = e.path().map(Path::to_path_buf).unwrap_or_else(|| arg.clone());
                    found.left_out.push((p, format!("cannot read: {e}")));
                    continue;
                }
            };
            if entry.depth() > 0 && excluded(entry.path()) {
                if entry.file_type().is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
            if entry.file_type().is_dir() {
                continue;
            }
            match entry.metadata() {
                Ok(m) => classify(entry.into_path(), &m, &mut found),
                Err(e) => found.left_out.push((entry.into_path(), format!("cannot examine: {e}"))),
            }
        }
    }
    Ok(found)
}

fn classify(p: PathBuf, meta: &std::fs::Metadata, found: &mut Found) {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_symlink() {
        found.left_out.push((p, "a symbolic link (not followed inside directories)".into()));
    } else if !(ft.is_file() || ft.is_block_device()) {
        found.left_out.push((p, "not a regular file or block device".into()));
    } else if ft.is_file() && meta.len() == 0 {
        found.left_out.push((p, "empty".into()));
    } else if is_ecc_file(&p) {
        found.ecc_files.push(p);
    } else {
        found.files.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_names_and_paths() {
        let name = glob::Pattern::new("*.iso").unwrap();
        assert!(matches(&name, Path::new("/a/b/x.iso")));
        assert!(!matches(&name, Path::new("/a/b.iso/x.img")));
        let path = glob::Pattern::new("/a/*/x.img").unwrap();
        assert!(matches(&path, Path::new("/a/b/x.img")));
        assert!(!matches(&path, Path::new("/a/b/c/x.img")));
    }
}
