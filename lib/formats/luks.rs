//! LUKS1/LUKS2 header probing (no unlocking here): enough to tell the user that an image is
//! LUKS, with which cipher, key size, payload offset, UUID and label. Layouts follow the LUKS1
//! spec 1.2.3 and LUKS2 spec 1.1.4 (`docs/formats/luks.md`).

use crate::source::ByteSource;

/// `"LUKS\xba\xbe"`: magic of LUKS1 and of the first LUKS2 header.
pub const LUKS_MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// `"SKUL\xba\xbe"`: magic of the second LUKS2 header.
pub const LUKS2_MAGIC_2ND: [u8; 6] = *b"SKUL\xba\xbe";
/// Largest LUKS2 header (binary + JSON) the spec allows.
const LUKS2_HDR_MAX: u64 = 4 << 20;

/// What a LUKS header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u16,
    /// dm-crypt spelling, e.g. `aes-xts-plain64`.
    pub cipher: String,
    /// Volume key size in bits.
    pub key_bits: u32,
    /// Payload start in bytes (0 for a detached header).
    pub payload_offset_bytes: u64,
    /// Payload sector size (LUKS1: 512).
    pub sector_size: u32,
    /// IV sector of the payload's first sector (LUKS2 `iv_tweak`).
    pub iv_offset_sectors: u64,
    /// Payload length if fixed (`None` = to the end of the device).
    pub payload_size_bytes: Option<u64>,
    /// UUID string.
    pub uuid: String,
    /// LUKS2 label.
    pub label: Option<String>,
    /// Active keyslot count.
    pub keyslots: usize,
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Look for a LUKS header at byte 0 of `src`. `Ok(None)` = not LUKS.
///
/// # Errors
/// `Io` on read failure; `Corrupt` when the magic is there but the header is inconsistent.
pub fn probe(src: &dyn ByteSource) -> crate::Result<Option<Header>> {
    let mut hdr = [0u8; 4096];
    if src.size_bytes() < 592 {
        return Ok(None);
    }
    let n = (src.size_bytes().min(4096)) as usize;
    src.read_exact_at(&mut hdr[..n], 0).map_err(|e| crate::Error::io("reading LUKS header", e))?;
    if hdr[..6] != LUKS_MAGIC {
        return Ok(None);
    }
    let version = u16::from_be_bytes([hdr[6], hdr[7]]);
    match version {
        1 => Ok(Some(parse_luks1(&hdr)?)),
        2 => Ok(Some(parse_luks2(src, &hdr)?)),
        v => Err(crate::Error::corrupt(format!("LUKS header with unknown version {v}"))),
    }
}

fn parse_luks1(h: &[u8]) -> crate::Result<Header> {
    let cipher = format!("{}-{}", cstr(&h[8..40]), cstr(&h[40..72]));
    let payload = u64::from(be32(&h[104..108]));
    let key_bytes = be32(&h[108..112]);
    if key_bytes == 0 || key_bytes > 512 {
        return Err(crate::Error::corrupt(format!("LUKS1 header: key-bytes {key_bytes} is out of range")));
    }
    let keyslots = (0..8).filter(|i| be32(&h[208 + 48 * i..]) == 0x00AC_71F3).count();
    Ok(Header {
        version: 1,
        cipher,
        key_bits: key_bytes * 8,
        payload_offset_bytes: payload * 512,
        sector_size: 512,
        iv_offset_sectors: 0,
        payload_size_bytes: None,
        uuid: cstr(&h[168..208]),
        label: None,
        keyslots,
    })
}

fn parse_luks2(src: &dyn ByteSource, h: &[u8]) -> crate::Result<Header> {
    let hdr_size = be64(&h[8..16]);
    if !(16384..=LUKS2_HDR_MAX).contains(&hdr_size) || !hdr_size.is_power_of_two() {
        return Err(crate::Error::corrupt(format!(
            "LUKS2 header: hdr_size {hdr_size} is not a power of two in 16 KiB..4 MiB"
        )));
    }
    let mut json = vec![0u8; (hdr_size - 4096) as usize];
    src.read_exact_at(&mut json, 4096).map_err(|e| crate::Error::io("reading LUKS2 JSON area", e))?;
    let end = json.iter().position(|&b| b == 0).unwrap_or(json.len());
    let v: serde_json::Value = serde_json::from_slice(&json[..end])
        .map_err(|e| crate::Error::corrupt(format!("LUKS2 JSON metadata does not parse: {e}")))?;
    let seg = v
        .get("segments")
        .and_then(|s| s.as_object())
        .and_then(|m| m.values().find(|s| s.get("type").and_then(|t| t.as_str()) == Some("crypt")))
        .ok_or_else(|| crate::Error::corrupt("LUKS2 metadata has no crypt segment"))?;
    let num = |x: Option<&serde_json::Value>| x.and_then(|s| s.as_str()).and_then(|s| s.parse::<u64>().ok());
    let offset = num(seg.get("offset")).ok_or_else(|| crate::Error::corrupt("LUKS2 segment offset missing"))?;
    let size =
        seg.get("size").and_then(|s| s.as_str()).and_then(|s| if s == "dynamic" { None } else { s.parse().ok() });
    let key_bytes = v
        .get("keyslots")
        .and_then(|k| k.as_object())
        .and_then(|m| m.values().find_map(|k| k.get("key_size").and_then(|x| x.as_u64())))
        .unwrap_or(0);
    let keyslots = v.get("keyslots").and_then(|k| k.as_object()).map_or(0, |m| m.len());
    let label = cstr(&h[24..72]);
    Ok(Header {
        version: 2,
        cipher: seg.get("encryption").and_then(|e| e.as_str()).unwrap_or("unknown").to_string(),
        key_bits: (key_bytes * 8) as u32,
        payload_offset_bytes: offset,
        sector_size: seg.get("sector_size").and_then(|s| s.as_u64()).unwrap_or(512) as u32,
        iv_offset_sectors: num(seg.get("iv_tweak")).unwrap_or(0),
        payload_size_bytes: size,
        uuid: cstr(&h[168..208]),
        label: if label.is_empty() { None } else { Some(label) },
        keyslots,
    })
}
