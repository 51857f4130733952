//! Command-line definition (clap derive): subcommands and the shared flag groups.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Keep old Linux loop-device images readable: inspect, verify and migrate cryptoloop, loop-AES
/// and plain loop images offline, without root.
#[derive(Debug, Parser)]
#[command(name = "loopkit", version = version(), about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `0.1.0 (git 1a2b3c4d5e6f)`: the crate version and the git revision it was built from (just
/// the version when built outside a git checkout; see build.rs).
pub fn version() -> &'static str {
    match option_env!("LOOPKIT_GIT_REV") {
        Some(rev) if !rev.is_empty() => {
            static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            V.get_or_init(|| format!("{} (git {rev})", env!("CARGO_PKG_VERSION")))
        }
        _ => env!("CARGO_PKG_VERSION"),
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tell what an image is: plain file system, LUKS, or legacy encryption (parameters found
    /// from the passphrase), and the cryptsetup command that maps it today.
    Inspect(InspectArgs),
    /// Stream the whole image, decrypt it, hash the payload and check the file system.
    /// dvdisaster error-correction data (appended, --ecc, or NAME.ecc) is checked first.
    Verify(Box<VerifyArgs>),
    /// List every entry of the file system inside the image (ext2/3/4, ISO9660) as JSON:
    /// path, type, size, mode, owner, mtime, target, SHA-256.
    Manifest(ManifestArgs),
    /// Restore files, directories, symlinks, modes and mtimes from the image into DEST.
    Extract(ExtractArgs),
    /// Write the original image out of a dvdisaster RS02/RS03-augmented one (the ECC removed),
    /// byte-identical to the file dvdisaster augmented.
    StripEcc(StripEccArgs),
    /// Repair a damaged image with its dvdisaster error correction data (Reed-Solomon
    /// erasure/error decoding) into a new file: the same bytes `dvdisaster -f` produces in place.
    Repair(RepairArgs),
    /// Create dvdisaster error correction data (RS03/RS02 augmented image, RS03/RS01 .ecc file)
    /// byte-identical to `dvdisaster -c`; the image is only read, the output is verified before
    /// it takes its name.
    Protect(ProtectArgs),
    /// Rescue-read a failing disc, device or file into an image: the good zones first, then
    /// the failing ones, bisected, trimmed and scraped sector by sector; a GNU ddrescue map
    /// records progress (--resume continues it, or a ddrescue run). With error-correction data
    /// it stops as soon as the rest can be repaired, and repairs.
    Rescue(RescueArgs),
    /// Migrate an image to dm-crypt: the exact cryptsetup mapping (plain), a detached LUKS2
    /// header over the unchanged data, or a re-encrypted LUKS2/LUKS1 container.
    Migrate(Box<MigrateArgs>),
    /// List an image file's extents on its disk (FIEMAP), classify them, and say whether the
    /// file can be remapped (its I/O sent straight to those blocks); --check reads every mapped
    /// extent through the raw device and through the file system and compares them.
    Extents(ExtentsArgs),
    /// Serve an image as a ublk block device (/dev/ublkbN) until `loopkit detach`, SIGINT or
    /// SIGTERM (root, Linux with ublk_drv). --list shows what is attached.
    Attach(Box<AttachArgs>),
    /// Stop serving an attached device (by /dev/ublkbN or by image): flush, remove the device.
    Detach(DetachArgs),
    /// Browse the files inside an image without root: a read-only FUSE file system on DIR
    /// (--raw: the decrypted payload as DIR/payload.img). Unmount with `loopkit umount DIR`.
    Mount(Box<MountArgs>),
    /// Unmount a `loopkit mount` (also one whose server has died).
    Umount(UmountArgs),
    /// Summarise a fixity catalog written by `verify --catalog` (counts, oldest check, changed
    /// and failing images); --import merges other catalogs into it (idempotent, locked).
    Catalog(CatalogArgs),
    /// Write a self-contained HTML report (summary, sortable table, sector maps) from
    /// `verify --json-lines` output or a catalog.
    Report(ReportArgs),
    /// Print a shell completion script for bash, zsh or fish on stdout.
    Completions(CompletionsArgs),
    /// Write man pages (loopkit.1, loopkit-verify.1, ...) into a directory.
    Man(ManArgs),
}

/// `loopkit catalog`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// The catalog file (JSON lines).
    pub catalog: PathBuf,
    /// Merge the records of these catalogs (e.g. one per GNU parallel or Slurm task) into
    /// CATALOG first; records already present are not added again.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub import: Vec<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `loopkit report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// `verify --json-lines` output, or a catalog.
    pub input: PathBuf,
    /// Where to write the HTML (default: stdout).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// Shells for `completions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// `loopkit completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `loopkit man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Where secrets come from. Never from an argument value.
#[derive(Debug, Args, Clone, Default)]
pub struct SecretArgs {
    /// Read the passphrase from the first line of FILE (its newline is not part of it; `-` = stdin).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the passphrase from file descriptor N (first line).
    #[arg(long, value_name = "N")]
    pub passphrase_fd: Option<u32>,
    /// loop-AES key file (1, 64 or 65 lines; gpg-encrypted files are decrypted with gpg using the
    /// passphrase), or a raw key file.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Never prompt for a passphrase, even on a terminal.
    #[arg(long)]
    pub no_prompt: bool,
}

/// Parameters that override auto-detection.
#[derive(Debug, Args, Clone, Default)]
pub struct ParamArgs {
    /// Encryption scheme (plain: not encrypted).
    #[arg(long, value_name = "SCHEME", value_parser = crate::choices::scheme())]
    pub scheme: Option<crate::choices::SchemeArg>,
    /// Cipher in dm-crypt spelling (aes, twofish, serpent, blowfish, cast5, des3_ede).
    #[arg(long, value_name = "CIPHER", value_parser = crate::choices::cipher())]
    pub cipher: Option<loopkit::formats::legacy::LegacyCipher>,
    /// Key size in bits: 128, 192 or 256 (blowfish 32..448, cast5 40..128, des3_ede 192).
    #[arg(long, value_name = "BITS")]
    pub key_bits: Option<u32>,
    /// Key derivation.
    #[arg(long, value_name = "NAME", value_parser = crate::choices::derivation())]
    pub key_derivation: Option<loopkit::crypto::kdf::Derivation>,
    /// Payload offset in bytes (losetup -o; K/M/G suffixes, 0x hex). loop-AES `@N` means the
    /// offset is not counted in the IV (same as --iv-offset 0).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = false)]
    pub offset: Option<String>,
    /// IV sector of the payload's first sector (cryptsetup --skip). Default: offset / 512.
    #[arg(long, value_name = "SECTORS")]
    pub iv_offset: Option<u64>,
    /// Limit the payload to BYTES (losetup --sizelimit).
    #[arg(long, value_name = "BYTES")]
    pub sizelimit: Option<String>,
    /// loop-AES seed appended to the passphrase (losetup -S / pseed=).
    #[arg(long, value_name = "SEED")]
    pub pseed: Option<String>,
    /// loop-AES key iteration count in thousands (losetup -C / itercountk=).
    #[arg(long, value_name = "N")]
    pub itercountk: Option<u32>,
    /// How much of the image head to scan for file-system signatures.
    #[arg(long, value_name = "BYTES", hide = true)]
    pub scan_bytes: Option<String>,
    /// dvdisaster error correction file (RS01/RS03 .ecc) for the image. Default: ECC appended
    /// to the image (RS02/RS03), else NAME.ecc beside it.
    #[arg(long, value_name = "FILE")]
    pub ecc: Option<PathBuf>,
    /// Detached LUKS header file for the image (cryptsetup --header).
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
    /// Lift the caps on key-derivation work read from a LUKS header (PBKDF2 iterations above 20
    /// million, Argon2 above 1 GiB or 64 passes) for an image you trust.
    #[arg(long)]
    pub allow_expensive_kdf: bool,
}

/// Output format.
#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What every image command takes: the image, its secrets, parameter overrides, output format.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The image file (opened read-only).
    pub image: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub params: ParamArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

impl ImageArgs {
    /// Every input file named on the command line (an output must never replace one).
    pub fn input_paths(&self) -> Vec<&std::path::Path> {
        let s = &self.secrets;
        let p = &self.params;
        std::iter::once(self.image.as_path())
            .chain(s.passphrase_file.as_deref())
            .chain(s.key_file.as_deref())
            .chain(p.ecc.as_deref())
            .chain(p.header.as_deref())
            .collect()
    }
}

/// `loopkit inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: ImageArgs,
}

/// `loopkit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: ImageArgs,
    /// Decrypting threads (default: cores - 1).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Compare the files in the image with a manifest saved by `loopkit manifest`.
    #[arg(long, value_name = "FILE", conflicts_with = "against")]
    pub manifest: Option<PathBuf>,
    /// Compare the files in the image with a directory tree on disk.
    #[arg(long, value_name = "DIR")]
    pub against: Option<PathBuf>,
    /// Check only the dvdisaster error correction data and the sectors it covers; do not
    /// decrypt or hash the payload (no passphrase needed).
    #[arg(long)]
    pub ecc_only: bool,
    /// RS03: evaluate all Reed-Solomon syndromes like dvdisaster -t (slow) instead of the first 8
    /// (which catch every codeword with up to 8 wrong bytes).
    #[arg(long)]
    pub full_syndromes: bool,
    /// Write a dvdisaster-style sector map of the image (SVG) to FILE (images with dvdisaster
    /// error correction data).
    #[arg(long, value_name = "FILE.svg")]
    pub map: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub batch: BatchArgs,
}

/// Batch verification: `verify PATH...` (several paths, a directory, or any of these flags).
#[derive(Debug, Args, Clone, Default)]
pub struct BatchArgs {
    /// More images or directories (batch mode: directories are walked, images recognised by
    /// content, `.ecc` files paired with their images).
    #[arg(value_name = "PATH")]
    pub more: Vec<PathBuf>,
    /// Batch: images checked at once (default: one per physical disk, at most the cores; never
    /// two readers on one disk).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,
    /// Batch: images read at once from one physical disk.
    #[arg(long, value_name = "N", default_value_t = 1, hide = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub readers_per_device: u16,
    /// Batch: leave out files and directories whose name (or, with a `/`, path) matches GLOB.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Batch: descend at most N directory levels below a PATH.
    #[arg(long, value_name = "N")]
    pub max_depth: Option<usize>,
    /// Batch: FILE maps image paths or glob patterns to passphrase or key files (lines
    /// `PATTERN passphrase-file|key-file FILE`); never secrets inline.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    /// Batch: print one verify document per image as each finishes, then one summary object
    /// (JSON lines on stdout).
    #[arg(long)]
    pub json_lines: bool,
    /// Batch: stop an image after DURATION (e.g. 90s, 10m, 1h): it is reported as failed with a
    /// `batch.time-budget` finding and the batch moves on.
    #[arg(long, value_name = "DURATION")]
    pub time_budget: Option<String>,
    /// Batch: append one record per image to this fixity catalog (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// With --catalog: skip images verified within N days and unchanged since.
    #[arg(long, value_name = "N", requires = "catalog")]
    pub since_days: Option<u64>,
    /// With --catalog: skip images whose last record says verified and that are unchanged
    /// (size, mtime, device, inode) since.
    #[arg(long, requires = "catalog")]
    pub changed_only: bool,
    /// With --catalog: continue the catalog's last, interrupted run (images it checked are
    /// not checked again).
    #[arg(long, requires = "catalog")]
    pub resume: bool,
}

impl BatchArgs {
    /// Whether any batch-only flag was given.
    pub fn any(&self) -> bool {
        !self.more.is_empty()
            || self.jobs.is_some()
            || !self.exclude.is_empty()
            || self.max_depth.is_some()
            || self.secrets.is_some()
            || self.json_lines
            || self.time_budget.is_some()
            || self.catalog.is_some()
    }
}

/// `loopkit manifest`.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: ImageArgs,
    /// Write the manifest to FILE instead of stdout (written to a temporary name, then renamed).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite an existing --output file.
    #[arg(long)]
    pub force: bool,
    /// Hashing threads (default: cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `loopkit extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: ImageArgs,
    /// Destination directory (created if missing; must be empty unless --force).
    pub dest: PathBuf,
    /// Extract only this path inside the file system (a directory's contents or one entry).
    #[arg(long = "path", value_name = "SUBPATH")]
    pub subpath: Option<String>,
    /// Extract into a non-empty DEST, replacing files and symlinks in the way.
    #[arg(long)]
    pub force: bool,
    /// Also write files whose data could not all be read or mapped (zeros where it is missing;
    /// each is reported as extract.damaged and the exit code stays 1).
    #[arg(long)]
    pub allow_damaged: bool,
    /// Write every readable byte of damaged files, after repairing what the dvdisaster ECC data
    /// can (in a temporary copy beside DEST), with zeros where data is lost, and list the lost
    /// byte ranges per file in DEST.damage.json (exit code 1 when anything is lost).
    #[arg(long, conflicts_with = "allow_damaged")]
    pub salvage: bool,
    /// Write a BagIt 1.0 bag: the files under DEST/data/, with manifest-sha256.txt,
    /// bag-info.txt (the source image, its SHA-256, the decryption scheme), bagit.txt and
    /// tagmanifest-sha256.txt; symlinks are listed in symlinks.txt instead of created.
    #[arg(long, conflicts_with = "salvage")]
    pub bag: bool,
}

/// `loopkit strip-ecc`.
#[derive(Debug, Args)]
pub struct StripEccArgs {
    /// The RS02/RS03-augmented image (opened read-only).
    pub image: PathBuf,
    /// Where to write the original image.
    #[arg(long, short, value_name = "OUT")]
    pub output: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Write the data part even if sectors are damaged (the result is then not the original;
    /// `loopkit repair` first is better).
    #[arg(long)]
    pub allow_damaged: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output_args: OutputArgs,
}

/// `loopkit protect`.
#[derive(Debug, Args)]
pub struct ProtectArgs {
    /// The image to protect (opened read-only; modified only with --in-place).
    pub image: PathBuf,
    /// dvdisaster method: rs03 (default), rs02 (augmented only) or rs01 (.ecc file only).
    #[arg(long, short = 'm', value_name = "METHOD", default_value = "rs03")]
    pub method: String,
    /// Write an augmented copy of the image (image + ECC) to OUT (default for rs02/rs03).
    #[arg(long, conflicts_with = "ecc_file")]
    pub augment: bool,
    /// Write a separate error correction file FILE instead (rs01, rs03).
    #[arg(long, short = 'e', value_name = "FILE")]
    pub ecc_file: Option<PathBuf>,
    /// Augment IMAGE itself (rs02, rs03) instead of writing a copy: crash-safe (its own bytes
    /// are never written; an interrupted run is undone by the next one), see docs/CLI.md.
    #[arg(long, conflicts_with_all = ["ecc_file", "output"])]
    pub in_place: bool,
    /// Medium the augmented image must fit: cd, dvd, dvd-dl (dvd9), bd, bd-dl (bd2), or a
    /// capacity in 2048-byte sectors (dvdisaster -n CD…; for RS03 a non-standard size is
    /// dvdisaster --debug -n SECTORS). Default: the smallest that fits, as dvdisaster picks it.
    #[arg(long, value_name = "MEDIUM")]
    pub medium: Option<String>,
    /// Redundancy in dvdisaster's -n spellings: roots (32r; a bare number is roots for .ecc
    /// files, a medium size for augmented images), percent (20%), normal, high, an .ecc file
    /// size in MiB (50m), or a medium (CD, DVD, DVD9, BD, BD2).
    #[arg(long, short = 'n', value_name = "N")]
    pub redundancy: Option<String>,
    /// Where to write the augmented image (or, with rs01/--ecc-file omitted, the .ecc file).
    #[arg(long, short, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Encoder threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output_args: OutputArgs,
}

/// `loopkit repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The damaged image (opened read-only; never modified).
    pub image: PathBuf,
    /// Where to write the repaired image.
    #[arg(long, short, value_name = "OUT")]
    pub output: PathBuf,
    /// dvdisaster error correction file (RS01/RS03 .ecc). Default: ECC appended to the image,
    /// else NAME.ecc beside it.
    #[arg(long, value_name = "FILE")]
    pub ecc: Option<PathBuf>,
    /// RS03 .ecc files: also write the repaired .ecc file here.
    #[arg(long, value_name = "FILE")]
    pub ecc_output: Option<PathBuf>,
    /// Replace OUT (and the --ecc-output file) if they exist.
    #[arg(long)]
    pub force: bool,
    /// Remove more than 2 surplus sectors from the end of the image (dvdisaster --truncate).
    #[arg(long)]
    pub truncate: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output_args: OutputArgs,
}

/// `loopkit rescue`.
#[derive(Debug, Args)]
pub struct RescueArgs {
    /// The drive, block device or file to read (opened read-only, O_DIRECT where possible).
    pub source: PathBuf,
    /// The image to write; kept as MAP.partial until every byte is read or repaired.
    #[arg(long, short, value_name = "IMAGE")]
    pub output: PathBuf,
    /// The GNU ddrescue map file. Default: IMAGE.map.
    #[arg(long, value_name = "MAPFILE")]
    pub map: Option<PathBuf>,
    /// Continue the rescue recorded in the map (loopkit's or ddrescue's; for ddrescue, IMAGE
    /// is its output and is replaced by the finished image).
    #[arg(long)]
    pub resume: bool,
    /// dvdisaster error correction file (RS01/RS03 .ecc) for the source; without it, RS02/RS03
    /// data appended to the source is used once its header has been read.
    #[arg(long, value_name = "FILE")]
    pub ecc: Option<PathBuf>,
    /// Do not stop early or repair with error-correction data: read everything readable.
    #[arg(long)]
    pub no_ecc: bool,
    /// Passes over the bad sectors after scraping.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub passes: u32,
    /// Minimum read rate in bytes per second: a slower read in the first pass counts as a
    /// failing zone, which is skipped and read last.
    #[arg(long, value_name = "BYTES_PER_S", value_parser = clap::value_parser!(u64).range(1..))]
    pub min_progress: Option<u64>,
    /// Sector size in bytes (default: the device's logical block; 2048 for a file).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(512..=1048576))]
    pub sector_size: Option<u64>,
    /// Replace IMAGE if it exists.
    #[arg(long)]
    pub force: bool,
    /// For testing, as GNU ddrescue's --test-mode: reads fail wherever this ddrescue map is not
    /// finished.
    #[arg(long, value_name = "MAPFILE", hide = true)]
    pub test_mode: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output_args: OutputArgs,
}

/// `--to` targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateTo {
    /// dm-crypt via cryptsetup (plain/loopaes mapping, or LUKS).
    Dmcrypt,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateMode {
    /// Write nothing into the image; print the exact cryptsetup command and crypttab line.
    Plain,
    /// Write a LUKS2 header file (-o) that maps the unchanged image with a new passphrase.
    DetachedHeader,
    /// Write a new LUKS2 (or --luks1) aes-xts-plain64 container (-o).
    Reencrypt,
}

/// `loopkit migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: ImageArgs,
    /// Target.
    #[arg(long, value_enum)]
    pub to: MigrateTo,
    /// Migration level (plain writes nothing and suits read-only media).
    #[arg(long, value_enum, default_value = "plain")]
    pub mode: MigrateMode,
    /// Output: the new image (reencrypt), the header file (detached-header), or a text file with
    /// the commands (plain).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// plain: write the raw key (or the loop-AES key file) to FILE, mode 0600.
    #[arg(long, value_name = "FILE")]
    pub key_out: Option<PathBuf>,
    /// plain: device-mapper name in the printed commands.
    #[arg(long, value_name = "NAME", default_value = "legacy")]
    pub name: String,
    /// reencrypt: write LUKS1 instead of LUKS2 (for pre-2018 systems).
    #[arg(long)]
    pub luks1: bool,
    /// Keyslot KDF (default argon2id; LUKS1: pbkdf2 only).
    #[arg(long, value_name = "KDF", value_parser = crate::choices::pbkdf())]
    pub pbkdf: Option<loopkit::migrate::Pbkdf>,
    /// Calibrate the KDF to take about MS milliseconds here (default 2000).
    #[arg(long, value_name = "MS")]
    pub iter_time: Option<u32>,
    /// Argon2 memory in KiB (default: calibrated, 64 MiB .. 1 GiB).
    #[arg(long, value_name = "KIB")]
    pub pbkdf_memory: Option<u32>,
    /// Argon2 threads, 1..4 (default: cores, at most 4).
    #[arg(long, value_name = "N")]
    pub pbkdf_parallel: Option<u32>,
    /// Fixed PBKDF2 iterations or Argon2 time cost (no calibration).
    #[arg(long, value_name = "N")]
    pub pbkdf_force_iterations: Option<u32>,
    /// LUKS2 label.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub label: String,
    /// Replace an existing output, or discard an interrupted run and start over.
    #[arg(long)]
    pub force: bool,
    /// reencrypt: continue an interrupted run from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Read the new passphrase from the first line of FILE (`-` = stdin).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Read the new passphrase from file descriptor N (first line).
    #[arg(long, value_name = "N")]
    pub new_passphrase_fd: Option<u32>,
    /// Worker threads for re-encryption (default: cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// reencrypt: make progress durable (fsync + checkpoint) every BYTES (default 64 MiB).
    #[arg(long, value_name = "BYTES", hide = true)]
    pub checkpoint_every: Option<String>,
    /// reencrypt: also protect the new image with dvdisaster error correction data, as
    /// `loopkit protect` does: rs03 or rs02 (augmented: OUT is the image plus its ECC, ready to
    /// burn) or rs01 (OUT plus a separate .ecc file beside it). OUT appears only after the ECC
    /// verified.
    #[arg(long, value_name = "METHOD")]
    pub protect: Option<String>,
    /// With --protect: the medium the augmented image must fit (as `protect --medium`).
    #[arg(long, value_name = "MEDIUM", requires = "protect")]
    pub medium: Option<String>,
    /// With --protect: the redundancy (as `protect --redundancy`).
    #[arg(long, value_name = "N", requires = "protect")]
    pub redundancy: Option<String>,
}

/// `loopkit extents`.
#[derive(Debug, Args)]
pub struct ExtentsArgs {
    /// The image file (opened read-only).
    pub image: PathBuf,
    /// Verify the mapping: read every mapped extent through the raw device and through the file
    /// system and compare them (SHA-256 per extent).
    #[arg(long)]
    pub check: bool,
    /// In the human output, list at most N extents (0 = all; JSON always lists all).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_rows: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `loopkit attach`.
#[derive(Debug, Args, Clone)]
pub struct AttachArgs {
    /// The image file (read-write unless --read-only, --decrypt or --open-crypt). When the
    /// state records hold an orphaned device of this image (its server died), that device is
    /// recovered instead of a new one created.
    #[arg(required_unless_present_any = ["list", "recover", "supervise"])]
    pub image: Option<PathBuf>,
    /// List the attached devices instead (image, device, mode, remap state, lease, data path,
    /// state: live, orphaned or stale).
    #[arg(long, conflicts_with_all = ["read_only", "read_write", "remap", "decrypt", "open_crypt", "recover"])]
    pub list: bool,
    /// Resume serving DEV (/dev/ublkbN or ublkbN), whose server died, with the image and
    /// settings its state record names (secrets are given again); requests that were in flight
    /// are issued again. Only the user who attached it may, and only with the same image inode.
    #[arg(long, value_name = "DEV", conflicts_with_all = ["image", "open_crypt"])]
    pub recover: Option<PathBuf>,
    /// How long a device whose server died waits for `attach --recover` (its I/O queued)
    /// before its I/O fails and it is removed; 0: no recovery, the device fails and goes away
    /// with its server.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub recovery_timeout: u64,
    /// (Internal) watch device N's server and remove the device when it dies and is not
    /// recovered within --recovery-timeout.
    #[arg(long, value_name = "N", hide = true)]
    pub supervise: Option<u32>,
    /// (Set by recovery) the device to recover.
    #[arg(skip)]
    pub recover_id: Option<u32>,
    /// Show the device read-only.
    #[arg(long)]
    pub read_only: bool,
    /// --decrypt: allow writes (plaintext written through the device is encrypted into the image).
    #[arg(long, requires = "decrypt", conflicts_with = "read_only")]
    pub read_write: bool,
    /// Send I/O straight to the disk blocks the image occupies (FIEMAP extent map, exclusive
    /// lease; see `loopkit extents`). When the file cannot be remapped safely the image is served
    /// through the file instead and the reason is printed.
    #[arg(long)]
    pub remap: bool,
    /// Serve the plaintext of an encrypted legacy or LUKS image, decrypting in the server
    /// (read-only unless --read-write).
    #[arg(long, conflicts_with = "open_crypt")]
    pub decrypt: bool,
    /// Attach the image read-only and run the `cryptsetup open` line `inspect` prints on the
    /// device, so /dev/mapper/NAME holds the plaintext (printed instead when cryptsetup or
    /// dm-crypt is missing).
    #[arg(long, value_name = "NAME")]
    pub open_crypt: Option<String>,
    /// Hardware queues, one server thread each (default: one per CPU, at most 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub queues: Option<u16>,
    /// Requests in flight per queue.
    #[arg(long, value_name = "D", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub depth: u16,
    /// Never use the zero-copy path (for comparisons).
    #[arg(long)]
    pub no_zero_copy: bool,
    /// The device's logical block size in bytes (512, 1024, 2048 or 4096; default: the smallest
    /// the image allows: 512, the disk's logical block under --remap on a 4Kn disk, the
    /// cipher's sector for --decrypt).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(512..=4096))]
    pub logical_block_size: Option<u32>,
    /// Stay in the foreground (the default: loopkit never daemonizes; run it under a service
    /// manager or `&` to detach from the terminal).
    #[arg(long)]
    pub foreground: bool,
    /// Print one JSON object on stdout once the device is live (with --list: the list).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub params: ParamArgs,
}

/// `loopkit detach`.
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The device (/dev/ublkbN or ublkbN) or the image file.
    pub target: PathBuf,
    /// Seconds to wait for the server to finish.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub timeout: u64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `loopkit mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// The image file (opened read-only).
    pub image: PathBuf,
    /// The mount point: an existing, empty directory.
    pub dir: PathBuf,
    /// Serve only the decrypted payload, as one read-only file DIR/payload.img.
    #[arg(long)]
    pub raw: bool,
    /// Serve zeros where data cannot be read or located (logged) instead of failing those reads
    /// with EIO.
    #[arg(long)]
    pub allow_damaged: bool,
    /// Stay in the foreground (log on stderr) instead of returning once the mount is up.
    #[arg(long)]
    pub foreground: bool,
    /// Mount options, comma-separated: allow_other (other users may enter; the image's
    /// permissions are then enforced; a normal user needs user_allow_other in /etc/fuse.conf).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Append remarks about damaged files to FILE (default: stderr with --foreground, else
    /// nowhere).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Print one JSON object (one line) on stdout once the mount is up; with --foreground a
    /// second one when it ends.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub params: ParamArgs,
}

/// `loopkit umount`.
#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mount point.
    pub dir: PathBuf,
    /// Print one JSON object on stdout once unmounted.
    #[arg(long)]
    pub json: bool,
}
