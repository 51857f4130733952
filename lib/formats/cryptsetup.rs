//! A typed `cryptsetup open` command: the program's options, where the key comes from, the
//! device and the mapping name as fields, rendered as the shell line people read, the argument
//! vector a program runs, and the `/etc/crypttab` line — so no caller edits command text.

/// `--type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    /// `--type plain` (dm-crypt without a header).
    Plain,
    /// `--type loopaes` (loop-AES multi-key).
    LoopAes,
    /// LUKS1/LUKS2: cryptsetup reads the type from the header (no `--type` given).
    Luks,
}

/// Where cryptsetup gets the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The passphrase, typed at cryptsetup's prompt (or written to its standard input).
    Prompt,
    /// `--key-file PATH`.
    File(String),
    /// `--key-file KEYFILE`: a file the user must supply; the command cannot run as it is.
    Placeholder,
    /// `gpg --decrypt PATH | cryptsetup … --key-file=-`: a gpg-encrypted loop-AES key file.
    GpgFile(String),
}

/// The word that stands for a key file the user must supply.
pub const KEY_FILE_PLACEHOLDER: &str = "KEYFILE";

/// `cryptsetup open` with every field typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCommand {
    /// `--type` (none for LUKS).
    pub device_type: DeviceType,
    /// `--readonly`.
    pub read_only: bool,
    /// `--cipher` (dm-crypt spelling), plain mode.
    pub cipher: Option<String>,
    /// `--key-size` in bits.
    pub key_bits: Option<u32>,
    /// `--hash` (cryptsetup spelling, e.g. `ripemd160`, `sha256:20`, `plain`).
    pub hash: Option<String>,
    /// `--offset O --skip S` in 512-byte sectors (always given together).
    pub offset_skip: Option<(u64, u64)>,
    /// `--size` in 512-byte sectors.
    pub size_sectors: Option<u64>,
    /// `--header` (a detached LUKS header).
    pub header: Option<String>,
    /// Where the key comes from.
    pub key: KeySource,
    /// The image or block device to map.
    pub device: String,
    /// The `/dev/mapper` name.
    pub name: String,
}

impl OpenCommand {
    /// A command for `device` → `/dev/mapper/NAME` with no options beyond the type.
    pub fn new(device_type: DeviceType, device: &str, name: &str) -> OpenCommand {
        OpenCommand {
            device_type,
            read_only: true,
            cipher: None,
            key_bits: None,
            hash: None,
            offset_skip: None,
            size_sectors: None,
            header: None,
            key: KeySource::Prompt,
            device: device.to_string(),
            name: name.to_string(),
        }
    }

    /// The same command on another device (e.g. the ublk device serving the image).
    pub fn with_device(&self, device: &str) -> OpenCommand {
        OpenCommand { device: device.to_string(), ..self.clone() }
    }

    /// The same command with another mapping name.
    pub fn with_name(&self, name: &str) -> OpenCommand {
        OpenCommand { name: name.to_string(), ..self.clone() }
    }

    /// The same command reading the key from `key`.
    pub fn with_key(&self, key: KeySource) -> OpenCommand {
        OpenCommand { key, ..self.clone() }
    }

    /// cryptsetup reads a passphrase (prompt or standard input), no key file.
    pub fn reads_passphrase(&self) -> bool {
        self.key == KeySource::Prompt
    }

    /// The command names a key file the user must supply ([`KEY_FILE_PLACEHOLDER`]).
    pub fn needs_key_file(&self) -> bool {
        self.key == KeySource::Placeholder
    }

    fn key_words(&self) -> Vec<String> {
        match &self.key {
            KeySource::Prompt => Vec::new(),
            KeySource::File(p) => vec!["--key-file".into(), p.clone()],
            KeySource::Placeholder => vec!["--key-file".into(), KEY_FILE_PLACEHOLDER.into()],
            KeySource::GpgFile(_) => vec!["--key-file=-".into()],
        }
    }

    /// cryptsetup's argument vector, program first.
    pub fn argv(&self) -> Vec<String> {
        let mut w: Vec<String> = vec!["cryptsetup".into(), "open".into()];
        match self.device_type {
            DeviceType::Plain => w.extend(["--type".into(), "plain".into()]),
            DeviceType::LoopAes => w.extend(["--type".into(), "loopaes".into()]),
            DeviceType::Luks => {}
        }
        if self.read_only {
            w.push("--readonly".into());
        }
        if let Some(h) = &self.header {
            w.extend(["--header".into(), h.clone()]);
        }
        if let Some(c) = &self.cipher {
            w.extend(["--cipher".into(), c.clone()]);
        }
        if let Some(k) = self.key_bits {
            w.extend(["--key-size".into(), k.to_string()]);
        }
        if let Some(h) = &self.hash {
            w.extend(["--hash".into(), h.clone()]);
        }
        // Plain mode names the key file before the geometry, loop-AES after it (the order the
        // printed lines have always had).
        if self.device_type != DeviceType::LoopAes {
            w.extend(self.key_words());
        }
        if let Some((o, s)) = self.offset_skip {
            w.extend(["--offset".into(), o.to_string(), "--skip".into(), s.to_string()]);
        }
        if let Some(n) = self.size_sectors {
            w.extend(["--size".into(), n.to_string()]);
        }
        if self.device_type == DeviceType::LoopAes {
            w.extend(self.key_words());
        }
        w.push(self.device.clone());
        w.push(self.name.clone());
        w
    }

    /// The program whose output is cryptsetup's standard input, if any (`gpg --decrypt FILE`).
    pub fn stdin_from(&self) -> Option<Vec<String>> {
        match &self.key {
            KeySource::GpgFile(p) => Some(vec!["gpg".into(), "--decrypt".into(), p.clone()]),
            _ => None,
        }
    }

    /// The line for a POSIX shell (every word quoted where needed).
    pub fn shell_line(&self) -> String {
        let line = join_quoted(&self.argv());
        match self.stdin_from() {
            Some(src) => format!("{} | {line}", join_quoted(&src)),
            None => line,
        }
    }

    /// The `/etc/crypttab` line for this mapping, with `device` and `key_file` as crypttab
    /// should name them (absolute paths), or `None` where crypttab cannot express it (loop-AES,
    /// a size limit, a key piped through gpg, a passphrase-hashing plain mapping).
    pub fn crypttab(&self, device: &str, key_file: Option<&str>) -> Option<String> {
        let mut opts: Vec<String> = Vec::new();
        let key = match self.device_type {
            DeviceType::LoopAes => return None,
            DeviceType::Luks => {
                opts.push("luks".into());
                if let Some(h) = &self.header {
                    opts.push(format!("header={}", crypttab_field(h)));
                }
                "none".to_string()
            }
            DeviceType::Plain => {
                if self.size_sectors.is_some() || self.hash.is_some() {
                    return None;
                }
                let kf = key_file?;
                opts.push("plain".into());
                if let Some(c) = &self.cipher {
                    opts.push(format!("cipher={c}"));
                }
                if let Some(k) = self.key_bits {
                    opts.push(format!("size={k}"));
                }
                // With a key file, plain mode uses the file's first key-size bits as they are.
                opts.push("hash=plain".into());
                if let Some((o, s)) = self.offset_skip {
                    opts.push(format!("offset={o}"));
                    opts.push(format!("skip={s}"));
                }
                crypttab_field(kf)
            }
        };
        if self.read_only {
            opts.push("readonly".into());
        }
        Some(format!("{} {} {key} {}", self.name, crypttab_field(device), opts.join(",")))
    }
}

/// crypttab fields are whitespace-separated; spaces and tabs must be escaped as `\040`/`\011`.
pub fn crypttab_field(s: &str) -> String {
    s.replace('\\', "\\134").replace(' ', "\\040").replace('\t', "\\011")
}

fn join_quoted(words: &[String]) -> String {
    words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
}

/// Quote for a POSIX shell when needed.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@%=".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(device: &str) -> OpenCommand {
        OpenCommand {
            cipher: Some("aes-cbc-plain".into()),
            key_bits: Some(256),
            hash: Some("ripemd160".into()),
            ..OpenCommand::new(DeviceType::Plain, device, "legacy")
        }
    }

    /// Image names that are also option values or words of the line: only the device field
    /// changes, whatever the name.
    #[test]
    fn device_is_a_field_not_text() {
        for name in ["256", "plain", "legacy", "a b'c\"d.img", "--hash"] {
            let c = plain(name);
            let argv = c.argv();
            assert_eq!(argv[argv.len() - 2], name);
            let on_dev = c.with_device("/dev/ublkb0").with_name("x");
            let a2 = on_dev.argv();
            assert_eq!(&a2[a2.len() - 2..], ["/dev/ublkb0", "x"]);
            assert_eq!(a2[..a2.len() - 2], argv[..argv.len() - 2], "options unchanged for {name:?}");
        }
    }

    #[test]
    fn lines_and_argv() {
        let c = OpenCommand { offset_skip: Some((8, 8)), ..plain("old.img") };
        assert_eq!(
            c.shell_line(),
            "cryptsetup open --type plain --readonly --cipher aes-cbc-plain --key-size 256 --hash ripemd160 \
             --offset 8 --skip 8 old.img legacy"
        );
        let q = plain("it's here.img");
        assert!(q.shell_line().ends_with(" 'it'\\''s here.img' legacy"), "{}", q.shell_line());
        assert_eq!(q.argv().last().map(String::as_str), Some("legacy"));

        let la = OpenCommand {
            key_bits: Some(128),
            offset_skip: Some((1, 0)),
            key: KeySource::GpgFile("k y.gpg".into()),
            ..OpenCommand::new(DeviceType::LoopAes, "img", "legacy")
        };
        assert_eq!(
            la.shell_line(),
            "gpg --decrypt 'k y.gpg' | cryptsetup open --type loopaes --readonly --key-size 128 --offset 1 --skip 0 \
             --key-file=- img legacy"
        );
        assert_eq!(la.stdin_from(), Some(vec!["gpg".into(), "--decrypt".into(), "k y.gpg".into()]));
        assert!(la.crypttab("/i", Some("/k")).is_none());

        let luks = OpenCommand { header: Some("/h dr".into()), ..OpenCommand::new(DeviceType::Luks, "x.img", "luks") };
        assert_eq!(luks.shell_line(), "cryptsetup open --readonly --header '/h dr' x.img luks");
        assert_eq!(luks.crypttab("/x.img", None).as_deref(), Some("luks /x.img none luks,header=/h\\040dr,readonly"));

        let kf = OpenCommand { hash: None, key: KeySource::File("/k".into()), ..plain("/a b.img") };
        assert_eq!(
            kf.crypttab("/a b.img", Some("/k")).as_deref(),
            Some("legacy /a\\040b.img /k plain,cipher=aes-cbc-plain,size=256,hash=plain,readonly")
        );
        assert!(plain("x").crypttab("x", Some("/k")).is_none(), "a passphrase-hashing line has no crypttab form");
        assert!(plain("x").with_key(KeySource::Placeholder).needs_key_file());
    }
}
