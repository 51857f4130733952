//! Extended attributes of an ext inode, as `listxattr`/`getxattr` show them: the in-inode area
//! (after `i_extra_isize`) and the attribute block (`i_file_acl`), names with their prefix
//! restored from the name index, and POSIX ACLs converted from ext4's compact disk form to the
//! kernel's xattr form (`posix_acl_xattr`: version 2, 8-byte entries). `system.data` (inline
//! data) is not listed, as the kernel does not list it; values stored in a separate inode
//! (`ea_inode`) are refused.

use super::inode::{GOOD_OLD_INODE_SIZE, Inode, XATTR_MAGIC};
use crate::bytes::{le16, le32};

/// `(name, value)` pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The name prefix of a name index (`None`: not shown).
fn prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        6 => b"security.",
        8 => b"system.richacl",
        _ => return None,
    })
}

/// ext4's disk ACL (`ext4_acl_header` version 1, 4- or 8-byte entries) → the xattr form.
fn acl_to_xattr(disk: &[u8]) -> Option<Vec<u8>> {
    if disk.len() < 4 || le32(disk, 0) != 1 {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut pos = 4;
    while pos < disk.len() {
        if pos + 4 > disk.len() {
            return None;
        }
        let tag = le16(disk, pos);
        let perm = le16(disk, pos + 2);
        // ACL_USER and ACL_GROUP carry an id; the others do not.
        let id = if tag == 0x02 || tag == 0x08 {
            if pos + 8 > disk.len() {
                return None;
            }
            let id = le32(disk, pos + 4);
            pos += 8;
            id
        } else {
            pos += 4;
            u32::MAX
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

/// Entries of one attribute area: `area[entries..]` holds the entry list, value offsets count
/// from `area[values..]`.
fn parse(area: &[u8], entries: usize, values: usize, what: &str, out: &mut Xattrs) -> crate::Result<()> {
    let bad = |m: &str| crate::Error::corrupt(format!("{what}: {m}"));
    let mut pos = entries;
    while pos + 4 <= area.len() && le32(area, pos) != 0 {
        if pos + 16 > area.len() {
            return Err(bad("an entry runs past the area"));
        }
        let name_len = usize::from(area[pos]);
        let index = area[pos + 1];
        let value_offs = usize::from(le16(area, pos + 2));
        let value_inum = le32(area, pos + 4);
        let value_size = le32(area, pos + 8) as usize;
        let name_end = pos + 16 + name_len;
        if name_end > area.len() {
            return Err(bad("a name runs past the area"));
        }
        let name = &area[pos + 16..name_end];
        if let Some(p) = prefix(index) {
            if value_inum != 0 {
                return Err(bad("a value stored in a separate inode (ea_inode) is not supported"));
            }
            let a = values.checked_add(value_offs).ok_or_else(|| bad("value offset overflows"))?;
            let b = a.checked_add(value_size).ok_or_else(|| bad("value size overflows"))?;
            if b > area.len() {
                return Err(bad("a value runs past the area"));
            }
            let mut full = p.to_vec();
            full.extend_from_slice(name);
            let value = &area[a..b];
            let value = if index == 2 || index == 3 {
                acl_to_xattr(value).ok_or_else(|| bad("a POSIX ACL is malformed"))?
            } else {
                value.to_vec()
            };
            out.push((full, value));
        }
        pos = (name_end + 3) & !3;
    }
    Ok(())
}

/// All attributes of `inode`; `block` reads its attribute block.
///
/// # Errors
/// `Corrupt` for a malformed area or block; the block read's errors.
pub fn read(inode: &Inode, block: impl FnOnce(u64) -> crate::Result<Vec<u8>>) -> crate::Result<Xattrs> {
    let mut out = Vec::new();
    let start = GOOD_OLD_INODE_SIZE + inode.extra_isize;
    if start + 4 <= inode.raw.len() && le32(&inode.raw, start) == XATTR_MAGIC {
        let what = format!("inode {}: in-inode attributes", inode.ino);
        // Value offsets count from the first entry, right after the magic.
        parse(&inode.raw[start..], 4, 4, &what, &mut out)?;
    }
    if inode.file_acl != 0 {
        let b = block(inode.file_acl)?;
        let what = format!("inode {}: attribute block {}", inode.ino, inode.file_acl);
        if b.len() < 32 || le32(&b, 0) != XATTR_MAGIC || le32(&b, 8) != 1 {
            return Err(crate::Error::corrupt(format!("{what}: bad header")));
        }
        parse(&b, 32, 0, &what, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_conversion() {
        // USER_OBJ rw, USER 1000 r, GROUP_OBJ r, MASK r, OTHER r (ext4 disk form).
        let mut disk = 1u32.to_le_bytes().to_vec();
        for (tag, perm, id) in
            [(1u16, 6u16, None), (2, 4, Some(1000u32)), (4, 4, None), (0x10, 4, None), (0x20, 4, None)]
        {
            disk.extend_from_slice(&tag.to_le_bytes());
            disk.extend_from_slice(&perm.to_le_bytes());
            if let Some(i) = id {
                disk.extend_from_slice(&i.to_le_bytes());
            }
        }
        let x = acl_to_xattr(&disk).unwrap();
        assert_eq!(x.len(), 4 + 5 * 8);
        assert_eq!(le32(&x, 0), 2);
        assert_eq!(le32(&x, 4 + 8 + 4), 1000);
        assert_eq!(le32(&x, 4 + 4), u32::MAX);
        assert!(acl_to_xattr(&[2, 0, 0, 0]).is_none());
    }
}
