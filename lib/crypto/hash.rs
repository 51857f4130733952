//! The hash functions legacy key setups used, selected by name (`rmd160`, `sha256`,
//! `whirlpool`, …), plus cryptsetup's plain-mode passphrase hashing (`crypt_plain_hash`).

use sha2::Digest;
use std::fmt;
use std::str::FromStr;

/// A hash a legacy key derivation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// RIPEMD-160 (Debian util-linux, loop-AES `-H rmd160`, cryptsetup `ripemd160`).
    Ripemd160,
    /// SHA-1 (cryptsetup `sha1`).
    Sha1,
    /// SHA-256 (loop-AES default for 128-bit keys).
    Sha256,
    /// SHA-384 (loop-AES default for 192-bit keys).
    Sha384,
    /// SHA-512 (loop-AES default for 256-bit keys).
    Sha512,
    /// Whirlpool (512-bit; gcrypt/OpenSSL `whirlpool`, the kernel's `wp512`): an old LUKS1
    /// `--hash` choice.
    Whirlpool,
    /// The kernel's `wp384`: Whirlpool truncated to 48 bytes. ESSIV salts only (no PBKDF2 or
    /// LUKS hash library knows it).
    Wp384,
    /// The kernel's `wp256`: Whirlpool truncated to 32 bytes (`aes-xts-essiv:wp256`). ESSIV
    /// salts only.
    Wp256,
}

impl HashAlg {
    /// Every supported hash.
    pub const ALL: [HashAlg; 8] = [
        HashAlg::Ripemd160,
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Whirlpool,
        HashAlg::Wp384,
        HashAlg::Wp256,
    ];

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Ripemd160 | HashAlg::Sha1 => 20,
            HashAlg::Sha256 | HashAlg::Wp256 => 32,
            HashAlg::Sha384 | HashAlg::Wp384 => 48,
            HashAlg::Sha512 | HashAlg::Whirlpool => 64,
        }
    }

    /// False for the kernel's truncated Whirlpool variants, which only ESSIV uses: PBKDF2,
    /// the LUKS anti-forensic splitter and the plain-mode hashing never name them.
    pub fn is_full_digest(self) -> bool {
        !matches!(self, HashAlg::Wp256 | HashAlg::Wp384)
    }

    /// Hash the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> zeroize::Zeroizing<Vec<u8>> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        zeroize::Zeroizing::new(match self {
            HashAlg::Ripemd160 => run::<ripemd::Ripemd160>(parts),
            HashAlg::Sha1 => run::<sha1::Sha1>(parts),
            HashAlg::Sha256 => run::<sha2::Sha256>(parts),
            HashAlg::Sha384 => run::<sha2::Sha384>(parts),
            HashAlg::Sha512 => run::<sha2::Sha512>(parts),
            HashAlg::Whirlpool => run::<whirlpool::Whirlpool>(parts),
            HashAlg::Wp384 | HashAlg::Wp256 => {
                let mut d = run::<whirlpool::Whirlpool>(parts);
                d.truncate(self.digest_len());
                d
            }
        })
    }

    /// The name loop-AES uses (`rmd160`, `sha256`, …); also loopkit's `key_derivation` name.
    pub fn loopaes_name(self) -> &'static str {
        match self {
            HashAlg::Ripemd160 => "rmd160",
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
            HashAlg::Whirlpool => "whirlpool",
            HashAlg::Wp384 => "wp384",
            HashAlg::Wp256 => "wp256",
        }
    }

    /// The name cryptsetup's `--hash` takes.
    pub fn cryptsetup_name(self) -> &'static str {
        match self {
            HashAlg::Ripemd160 => "ripemd160",
            other => other.loopaes_name(),
        }
    }

    /// loop-AES's default hash for a key of `key_bytes` (16 → SHA-256, 24 → SHA-384, 32 →
    /// SHA-512; anything else SHA-256). cryptsetup `--type loopaes` uses the same rule.
    pub fn loopaes_default(key_bytes: usize) -> HashAlg {
        match key_bytes {
            24 => HashAlg::Sha384,
            32 => HashAlg::Sha512,
            _ => HashAlg::Sha256,
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.loopaes_name())
    }
}

impl FromStr for HashAlg {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "rmd160" | "ripemd160" | "ripemd-160" => HashAlg::Ripemd160,
            "sha1" | "sha-1" => HashAlg::Sha1,
            "sha256" | "sha-256" => HashAlg::Sha256,
            "sha384" | "sha-384" => HashAlg::Sha384,
            "sha512" | "sha-512" => HashAlg::Sha512,
            "whirlpool" | "wp512" => HashAlg::Whirlpool,
            "wp384" => HashAlg::Wp384,
            "wp256" => HashAlg::Wp256,
            _ => return Err(crate::Error::invalid(format!("unknown hash {s:?}"))),
        })
    }
}

/// cryptsetup's `crypt_plain_hash`: `H(p) ‖ H("A"‖p) ‖ H("AA"‖p) …` truncated to `hash_len`
/// bytes, then zero-padded to `key_len` (the `hash:len` spec). With `hash_len == key_len` this
/// is also Debian's rmd160 key and loop-AES's single-key hash (for keys ≤ 32 bytes).
pub fn plain_hash(h: HashAlg, pass: &[u8], key_len: usize, hash_len: usize) -> zeroize::Zeroizing<Vec<u8>> {
    let hash_len = hash_len.min(key_len);
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(key_len));
    let mut prefix: Vec<u8> = Vec::new();
    while out.len() < hash_len {
        let d = h.digest(&[&prefix, pass]);
        let take = d.len().min(hash_len - out.len());
        out.extend_from_slice(&d[..take]);
        prefix.push(b'A');
    }
    out.resize(key_len, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// cryptsetup tests/password-hash-test rows (docs/formats/research/legacy-loop-crypto.md §5.1).
    #[test]
    fn cryptsetup_password_hash_vectors() {
        let rows: &[(&str, usize, usize, &[u8], &str)] = &[
            ("ripemd160", 32, 32, b"xxx", "aeb26d1f69eb6dddfb9381eed4d7299f091e99aa5d3ff06866d4ce9f620f7aca"),
            ("ripemd160", 16, 16, b"xxx", "aeb26d1f69eb6dddfb9381eed4d7299f"),
            ("sha1", 32, 32, b"xxx", "b60d121b438a380c343d5ec3c2037564b82ffef30b1e0a6ad9af7a73aa91c197"),
            ("sha256", 32, 32, b"xxx", "cd2eb0837c9b4c962c22d2ff8b5441b7b45805887f051d39bf133b583baf6860"),
            ("sha256", 32, 32, b"xxx\n", "042aea10a0f14f2d391373599be69d53a75dde9951fc3d3cd10b6100aa7a9f24"),
            ("sha256", 32, 20, b"xxx", "cd2eb0837c9b4c962c22d2ff8b5441b7b4580588000000000000000000000000"),
            ("sha512", 32, 32, b"0123456789abcdef", "1c043fbe4bca7c7920dae536c680fd44c15d71ec12cd82a2a9491b0043b57f4d"),
            (
                "ripemd160",
                32,
                32,
                b"0123456789abcdef",
                "edf4e38018cd71dd489b9c1e54b32054eb42dfad9fdcc22d629d756391a24982",
            ),
            ("sha1", 32, 32, b"0123456789abcdef", "fe5567e8d769550852182cdf69d74bb16dff8e295e4b6077d6d3fc73e7fe33b0"),
            // LibreCrypt docs (secondary, independent of cryptsetup).
            (
                "ripemd160",
                32,
                32,
                b"password1234567890ABC",
                "fafe56c3bab4cd216ba02474ac157ea555fa5711d539285c28a6d8122d9464ee",
            ),
        ];
        for (h, key_len, hash_len, pass, want) in rows {
            let alg: HashAlg = h.parse().unwrap();
            assert_eq!(hex(&plain_hash(alg, pass, *key_len, *hash_len)), *want, "{h} {key_len} {pass:?}");
        }
    }

    /// Whirlpool of "abc" (the ISO/IEC 10118-3 / NESSIE reference value, also what `openssl dgst
    /// -whirlpool` prints); the kernel's wp384/wp256 are its first 48/32 bytes.
    #[test]
    fn whirlpool_family() {
        let want = "4e2448a4c6f486bb16b6562c73b4020bf3043e3a731bce721ae1b303d97e6d4c\
                    7181eebdb6c57e277d0e34957114cbd6c797fc9d95d8b582d225292076d4eef5";
        let full = HashAlg::Whirlpool.digest(&[b"a", b"bc"]);
        assert_eq!(hex(&full), want);
        assert_eq!(hex(&HashAlg::Wp384.digest(&[b"abc"])), want[..96]);
        assert_eq!(hex(&HashAlg::Wp256.digest(&[b"abc"])), want[..64]);
        for (name, h) in [("whirlpool", HashAlg::Whirlpool), ("wp512", HashAlg::Whirlpool), ("wp256", HashAlg::Wp256)] {
            assert_eq!(name.parse::<HashAlg>().unwrap(), h);
        }
        assert!(HashAlg::Whirlpool.is_full_digest() && !HashAlg::Wp256.is_full_digest());
    }
}
