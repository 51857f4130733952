//! RS02 (augmented image): the CRC area, the data CRCs and the ECC layers' MD5s.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Read the RS02 CRC area (4 bytes per data sector) and sort it into sector order (§6.4).
pub(crate) fn rs02_crc_table(l: &Rs02Layout, image: &dyn ByteSource, fp: &[u8; 16]) -> crate::Result<CrcTable> {
    let crc_bytes = (l.crc_sectors * ECC_SECTOR_BYTES) as usize;
    let mut area = vec![0u8; crc_bytes];
    let have = read_sectors(image, l.ds + 2, &mut area)?;
    let mut sector_ok = vec![true; l.crc_sectors as usize];
    let mut missing = Vec::new();
    for k in 0..l.crc_sectors {
        let s = l.ds + 2 + k;
        let sec = &area[(k * ECC_SECTOR_BYTES) as usize..((k + 1) * ECC_SECTOR_BYTES) as usize];
        if k >= have || layout::dead_sector(sec, s, Some(fp)).is_some() {
            sector_ok[k as usize] = false;
            if k < have {
                missing.push(s);
            }
        }
    }
    let area_md5: [u8; 16] = Md5::digest(&area).into();
    let mut crc = vec![0u32; l.ds as usize];
    let mut valid = vec![false; l.ds as usize];
    for (n, s) in l.crc_order().enumerate() {
        let w = n * 4;
        crc[s as usize] = u32::from_le_bytes([area[w], area[w + 1], area[w + 2], area[w + 3]]);
        valid[s as usize] = sector_ok[w / SECTOR];
    }
    Ok(CrcTable { crc, valid, area_md5, missing })
}

pub(super) fn verify_rs02(
    ecc: &Ecc,
    l: &Rs02Layout,
    image: &dyn ByteSource,
    opts: &Options,
    r: &mut Report,
    run: &mut Run<'_>,
) -> crate::Result<()> {
    let h = &ecc.header;
    let fp = h.medium_fp;
    let nsec = r.image_sectors;
    r.expected_sectors = l.total;
    r.missing_sectors.extend(past_end(nsec, l.total));
    let copies: Vec<u64> = l.header_copies().collect();
    rs02_header_copies(ecc, &copies, image, r)?;

    let t = rs02_crc_table(l, image, &fp)?;
    r.missing_sectors.extend(&t.missing);
    r.crc_sum_ok = if t.missing.is_empty() { Some(t.area_md5 == h.crc_sum) } else { None };
    r.crc_section_ok = t.missing.is_empty() && r.crc_sum_ok == Some(true);
    rs02_sectors(ecc, l, &t, image, opts, r, run)
}

/// Check the header copies (the first at ds counts as one): intact, damaged (self-CRC), missing,
/// or different from the header in use; their dead sectors are missing sectors.
fn rs02_header_copies(ecc: &Ecc, copies: &[u64], image: &dyn ByteSource, r: &mut Report) -> crate::Result<()> {
    let h = &ecc.header;
    let fp = h.medium_fp;
    let nsec = r.image_sectors;
    r.header_copies_total = copies.len() as u64;
    r.header_copies_ok = 0;
    r.header_copies_damaged.clear();
    let mut buf = vec![0u8; HEADER_BYTES];
    for &q in copies {
        if q >= nsec {
            r.header_copies_missing.push(q);
            continue;
        }
        let have = read_sectors(image, q, &mut buf)?;
        for k in 0..have.min(2) {
            if layout::dead_sector(&buf[k as usize * SECTOR..(k as usize + 1) * SECTOR], q + k, Some(&fp)).is_some() {
                r.missing_sectors.push(q + k);
            }
        }
        match layout::EccHeader::parse(&buf) {
            Ok(c) => {
                r.header_copies_ok += 1;
                if c.raw != h.raw {
                    r.header_copies_differ.push(q);
                }
            }
            Err(layout::HeaderFault::SelfCrc { .. }) => r.header_copies_damaged.push(q),
            Err(_) => r.header_copies_missing.push(q),
        }
    }
    Ok(())
}

/// Check every sector in parallel: the data MD5, the data sectors against the CRC table `t`,
/// and the ECC layers (dead sectors, and their MD5 against `eccSum`).
fn rs02_sectors(
    ecc: &Ecc,
    l: &Rs02Layout,
    t: &CrcTable,
    image: &dyn ByteSource,
    opts: &Options,
    r: &mut Report,
    run: &mut Run<'_>,
) -> crate::Result<()> {
    let h = &ecc.header;
    let fp = h.medium_fp;
    let nsec = r.image_sectors;
    let CrcTable { crc: crcs, valid: crc_valid, .. } = t;
    let copies: Vec<u64> = l.header_copies().collect();

    // Jobs: the data MD5 first (the long serial stream), then data CRCs, then ECC layers.
    enum Job {
        DataMd5,
        DataCrc(u64, u64),
        Layer(usize),
    }
    let data_end = l.ds.min(nsec);
    let mut jobs = vec![Job::DataMd5];
    jobs.extend(crc_jobs(data_end).map(|(a, n)| Job::DataCrc(a, n)));
    jobs.extend((0..l.nroots).map(Job::Layer));
    let total = r.data_bytes + data_end * ECC_SECTOR_BYTES + l.nroots as u64 * l.spl * ECC_SECTOR_BYTES;
    let crc_of = |s: u64| if crc_valid[s as usize] { Some(crcs[s as usize]) } else { None };
    let results =
        Pool::new(opts.workers, &mut *run.progress, run.interrupt).phase("checking ECC (RS02)", Some(total)).run_all(
            &jobs,
            || Ok(()),
            |job, _, ctx| {
                Ok(match job {
                    Job::DataMd5 => {
                        (Found { md5: Some(md5_stream(image, 0, r.data_bytes, ctx)?), ..Found::default() }, None)
                    }
                    Job::DataCrc(a, n) => (check_data_sectors(image, *a, *n, &fp, &crc_of, ctx)?, None),
                    Job::Layer(k) => {
                        let (f, md5) = rs02_layer(image, l, *k, nsec, &fp, ctx)?;
                        (f, Some(md5))
                    }
                })
            },
        )?;
    let mut found = Found::default();
    let mut meta = Md5::new();
    let mut ecc_missing = false;
    for (f, layer_md5) in results {
        if let Some(m) = f.md5 {
            r.md5 = m;
        }
        if let Some(m) = layer_md5 {
            meta.update(m);
        }
        found.merge(f);
    }
    for k in 0..l.nroots {
        for i in 0..l.spl {
            if l.ecc_sector(k, i) >= nsec {
                ecc_missing = true;
            }
        }
    }
    let ecc_missing =
        ecc_missing || found.missing.iter().any(|&s| s >= l.protected && !copies.iter().any(|&q| s == q || s == q + 1));
    let ecc_sum: [u8; 16] = meta.finalize().into();
    r.ecc_sum_ok = if ecc_missing { None } else { Some(ecc_sum == h.ecc_sum) };
    r.ecc_section_ok = !ecc_missing && r.ecc_sum_ok == Some(true);
    r.md5_ok = Some(r.md5 == h.medium_sum);
    r.missing_sectors.extend(found.missing);
    r.bad_sectors.extend(found.bad);
    r.unchecked_sectors = found.unchecked;
    Ok(())
}

/// MD5 and dead-sector check of RS02 ECC layer `k`.
pub(super) fn rs02_layer(
    image: &dyn ByteSource,
    l: &Rs02Layout,
    k: usize,
    nsec: u64,
    fp: &[u8; 16],
    ctx: &Tick<'_>,
) -> crate::Result<(Found, [u8; 16])> {
    let mut f = Found::default();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; (CHUNK_SECTORS * ECC_SECTOR_BYTES) as usize];
    let mut i = 0u64;
    while i < l.spl {
        // A run of physically consecutive sectors (header copies break the runs).
        let start = l.ecc_sector(k, i);
        let mut n = 1u64;
        while i + n < l.spl && n < CHUNK_SECTORS && l.ecc_sector(k, i + n) == start + n {
            n += 1;
        }
        let chunk = &mut buf[..(n * ECC_SECTOR_BYTES) as usize];
        let have = read_sectors(image, start, chunk)?;
        for q in 0..have {
            let sec = &chunk[(q * ECC_SECTOR_BYTES) as usize..((q + 1) * ECC_SECTOR_BYTES) as usize];
            if layout::dead_sector(sec, start + q, Some(fp)).is_some() {
                f.missing.push(start + q);
            }
        }
        let _ = nsec;
        md5.update(&*chunk);
        ctx.tick(n * ECC_SECTOR_BYTES)?;
        i += n;
    }
    Ok((f, md5.finalize().into()))
}
