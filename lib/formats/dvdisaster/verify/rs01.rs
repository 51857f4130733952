//! RS01 (a separate `.ecc` file): data MD5 and CRCs, the `.ecc` file's own MD5.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn verify_rs01(
    ecc: &Ecc,
    l: &layout::Rs01Layout,
    image: &dyn ByteSource,
    ecc_file: &dyn ByteSource,
    opts: &Options,
    r: &mut Report,
    run: &mut Run<'_>,
) -> crate::Result<()> {
    let h = &ecc.header;
    let fp = h.medium_fp;
    let nsec = r.image_sectors;
    r.missing_sectors.extend(past_end(nsec, l.sectors));
    let ecc_size = ecc_file.size_bytes();
    r.ecc_file_sectors = Some((l.file_bytes().div_ceil(ECC_SECTOR_BYTES), ecc_size.div_ceil(ECC_SECTOR_BYTES)));

    // The CRC section, as far as the file has it.
    let crc_len = (4 * l.sectors).min(ecc_size.saturating_sub(l.crc_offset()));
    let area = crate::source::read_vec(ecc_file, l.crc_offset(), crc_len as usize)
        .map_err(|e| crate::Error::io("reading the CRC section of the .ecc file", e))?;
    let crc_of = |s: u64| {
        let w = (s * 4) as usize;
        area.get(w..w + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    enum Job {
        DataMd5,
        EccMd5,
        DataCrc(u64, u64),
    }
    let data_end = l.sectors.min(nsec);
    let mut jobs = vec![Job::DataMd5, Job::EccMd5];
    jobs.extend(crc_jobs(data_end).map(|(a, n)| Job::DataCrc(a, n)));
    let ecc_tail = ecc_size.saturating_sub(HEADER_BYTES as u64);
    let total = r.data_bytes + ecc_tail + data_end * ECC_SECTOR_BYTES;
    let results =
        Pool::new(opts.workers, &mut *run.progress, run.interrupt).phase("checking ECC (RS01)", Some(total)).run_all(
            &jobs,
            || Ok(()),
            |job, _, ctx| {
                Ok(match job {
                    Job::DataMd5 => {
                        (Found { md5: Some(md5_stream(image, 0, r.data_bytes, ctx)?), ..Found::default() }, None)
                    }
                    Job::EccMd5 => (Found::default(), Some(md5_stream(ecc_file, HEADER_BYTES as u64, ecc_tail, ctx)?)),
                    Job::DataCrc(a, n) => (check_data_sectors(image, *a, *n, &fp, &crc_of, ctx)?, None),
                })
            },
        )?;
    let mut found = Found::default();
    for (f, ecc_md5) in results {
        if let Some(m) = f.md5 {
            r.md5 = m;
        }
        if let Some(m) = ecc_md5 {
            r.ecc_sum_ok = Some(m == h.ecc_sum);
        }
        found.merge(f);
    }
    let size_ok = ecc_size == l.file_bytes();
    r.ecc_section_ok = size_ok && r.ecc_sum_ok == Some(true);
    r.crc_section_ok = r.ecc_section_ok;
    r.md5_ok = Some(r.md5 == h.medium_sum);
    r.missing_sectors.extend(found.missing);
    r.bad_sectors.extend(found.bad);
    r.unchecked_sectors = found.unchecked;
    Ok(())
}
