//! Field readers for on-disk structures: little/big-endian integers, fixed arrays and
//! NUL-terminated strings at byte offsets, never panicking. Every parser in [`crate::formats`] and
//! [`crate::fs`] reads through here, so a short or hostile buffer cannot index out of bounds.
//!
//! A field that lies (partly) outside the buffer reads as zero (a string as empty): callers check
//! the buffer length once (they read fixed-size structures) and the zero then only ever shows up
//! in code that has already rejected the input. [`get`] is the `Option`-returning form for
//! variable-length data.

/// The sum of sizes read from a file system or header, saturating at `u64::MAX` (hostile
/// metadata can claim sizes whose total overflows; what saturates is then reported as the
/// absurd size it is, and nothing panics).
pub fn sum_saturating(sizes: impl IntoIterator<Item = u64>) -> u64 {
    sizes.into_iter().fold(0, u64::saturating_add)
}

/// `N` bytes at `at`, or `None` when they are not all inside `b`.
pub fn get<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// `N` bytes at `at` (zeros when outside `b`).
pub fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    get(b, at).unwrap_or([0; N])
}

/// Little-endian `u16` at `at`.
pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(b, at))
}
/// Little-endian `u32` at `at`.
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(b, at))
}
/// Little-endian `u64` at `at`.
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(b, at))
}
/// Big-endian `u16` at `at`.
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(array(b, at))
}
/// Big-endian `u32` at `at`.
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(b, at))
}
/// Big-endian `u64` at `at`.
pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(array(b, at))
}
/// ISO 9660 "both-byte-order" `u32` (LE then BE, 8 bytes at `at`): the value when both halves
/// agree.
pub fn both32(b: &[u8], at: usize) -> Option<u32> {
    let le = u32::from_le_bytes(get(b, at)?);
    (le == u32::from_be_bytes(get(b, at + 4)?)).then_some(le)
}
/// ISO 9660 "both-byte-order" `u16` (LE then BE, 4 bytes at `at`).
pub fn both16(b: &[u8], at: usize) -> Option<u16> {
    let le = u16::from_le_bytes(get(b, at)?);
    (le == u16::from_be_bytes(get(b, at + 2)?)).then_some(le)
}

/// `len` bytes at `at` (empty when outside `b`).
pub fn slice(b: &[u8], at: usize, len: usize) -> &[u8] {
    at.checked_add(len).and_then(|end| b.get(at..end)).unwrap_or(&[])
}

/// The bytes of a NUL-terminated field (all of it without a NUL).
pub fn until_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// A NUL-terminated string field, lossily decoded.
pub fn cstr(b: &[u8]) -> String {
    String::from_utf8_lossy(until_nul(b)).into_owned()
}

/// A NUL/space-padded label; `None` when empty.
pub fn label(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(until_nul(b)).trim_end().to_string();
    if s.is_empty() { None } else { Some(s) }
}

/// Lower-case hexadecimal (digests in reports and manifests): the crate's one hex encoder.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Seconds since the epoch as RFC 3339 / ISO 8601 UTC (`2026-12-06T05:30:00Z`): the crate's one
/// date formatter (civil-from-days, Howard Hinnant's algorithm; no date library).
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_199_145_600), "2008-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_199_145_600 + 3661), "2008-01-01T01:01:01Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_535_000), "2026-12-06T05:30:00Z");
    }

    #[test]
    fn in_and_out_of_bounds() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(le32(&b, 0), 0x0403_0201);
        assert_eq!(be16(&b, 6), 0x0708);
        assert_eq!(le64(&b, 0), 0x0807_0605_0403_0201);
        assert_eq!(le32(&b, 6), 0);
        assert_eq!(le32(&b, usize::MAX - 1), 0);
        assert_eq!(get::<2>(&b, usize::MAX), None);
        assert_eq!(slice(&b, 7, 2), &[] as &[u8]);
        assert_eq!(slice(&b, 6, 2), &[7, 8]);
        let both = [0x34, 0x12, 0, 0, 0, 0, 0x12, 0x34];
        assert_eq!(both32(&both, 0), Some(0x1234));
        assert_eq!(both32(&b, 0), None);
        assert_eq!(both16(&[1, 0, 0, 1], 0), Some(1));
        assert_eq!(label(b"ab  \0x"), Some("ab".into()));
        assert_eq!(label(b"  \0"), None);
        assert_eq!(cstr(b"xy\0z"), "xy");
    }
}
