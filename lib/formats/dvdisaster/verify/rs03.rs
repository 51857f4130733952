//! RS03 (augmented or `.ecc` file): CRC blocks and the Reed–Solomon block test.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The RS03 CRCs of the image's data sectors, from the valid CRC blocks (§7.3).
pub(crate) fn rs03_crc_table(
    l: &Rs03Layout,
    image: &dyn ByteSource,
    ecc_src: Option<&dyn ByteSource>,
) -> crate::Result<CrcTable> {
    let mut crc = vec![0u32; l.ds as usize];
    let mut valid = vec![false; l.ds as usize];
    let mut missing = Vec::new();
    let crc_layer = l.ndata - 1;
    let mut buf = vec![0u8; (CHUNK_SECTORS * ECC_SECTOR_BYTES) as usize];
    let mut i0 = 0u64;
    while i0 < l.spl {
        let n = (l.spl - i0).min(CHUNK_SECTORS);
        let (src, first) = match l.place(crc_layer, i0) {
            Rs03Place::EccFile(fs) => (ecc_src.unwrap_or(image), fs),
            Rs03Place::Image(s) | Rs03Place::Padding(s) => (image, s),
        };
        let chunk = &mut buf[..(n * ECC_SECTOR_BYTES) as usize];
        let have = read_sectors(src, first, chunk)?;
        for q in 0..have.min(n) {
            let sec = &chunk[(q * ECC_SECTOR_BYTES) as usize..((q + 1) * ECC_SECTOR_BYTES) as usize];
            if layout::dead_sector(sec, first + q, None).is_some() {
                missing.push(first + q);
                continue;
            }
            if CrcBlock::parse(sec).is_none() {
                continue;
            }
            // Block i carries the CRCs of block i+1.
            let next = (i0 + q + 1) % l.spl;
            for j in 0..l.data_layers() {
                let s = j as u64 * l.spl + next;
                if s < l.ds {
                    crc[s as usize] = CrcBlock::crc_at(sec, j);
                    valid[s as usize] = true;
                }
            }
        }
        i0 += n;
    }
    Ok(CrcTable { crc, valid, area_md5: [0; 16], missing })
}

/// RS03 ECC blocks `[i0, i1)`: read all 255 layers, check markers, CRC blocks, data CRCs and
/// syndromes.
struct Rs03Group<'a> {
    l: &'a Rs03Layout,
    image: &'a dyn ByteSource,
    ecc_src: Option<&'a dyn ByteSource>,
    fp: [u8; 16],
    image_sectors: u64,
    tables: &'a [MulTable],
}

impl Rs03Group<'_> {
    /// Fill `out` (n sectors) with layer `j`, sectors `i0..i0+n`. Returns per-sector "exists".
    fn read_layer(&self, j: usize, i0: u64, n: u64, out: &mut [u8], exists: &mut [bool]) -> crate::Result<()> {
        let l = self.l;
        match l.place(j, i0) {
            Rs03Place::Image(s0) if !l.ecc_file || j >= l.data_layers() => {
                let have = read_sectors(self.image, s0, out)?;
                for (q, e) in exists.iter_mut().enumerate() {
                    *e = (q as u64) < have;
                }
            }
            Rs03Place::EccFile(s0) => {
                let src = self.ecc_src.unwrap_or(self.image);
                let have = read_sectors(src, s0, out)?;
                for (q, e) in exists.iter_mut().enumerate() {
                    *e = (q as u64) < have;
                }
            }
            _ => {
                // .ecc file data layer: image sectors, then virtual padding sectors.
                for q in 0..n {
                    let s = j as u64 * l.spl + i0 + q;
                    let sec = &mut out[(q * ECC_SECTOR_BYTES) as usize..((q + 1) * ECC_SECTOR_BYTES) as usize];
                    if s < l.ds {
                        let have = read_sectors(self.image, s, sec)?;
                        exists[q as usize] = have == 1;
                    } else {
                        layout::padding_sector(s, &self.fp, sec);
                        exists[q as usize] = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Check blocks `i0..i1`: read all 255 layers (dead sectors, unreadable CRC blocks), check
    /// the data sectors against their CRCs, then run the syndrome test.
    fn run(&self, i0: u64, i1: u64, syndromes: SyndromeCheck, ctx: &Tick<'_>) -> crate::Result<Found> {
        let mut f = Found::default();
        let mut b = self.read_blocks(i0, i1 - i0, &mut f, ctx)?;
        self.check_data_crcs(i0, &mut b, &mut f)?;
        self.check_syndromes(&b, syndromes, &mut f);
        Ok(f)
    }

    /// Read blocks `i0..i0 + n` of every layer, noting dead sectors and CRC blocks that do not
    /// parse in `f`.
    fn read_blocks(&self, i0: u64, n: u64, f: &mut Found, ctx: &Tick<'_>) -> crate::Result<Rs03Blocks> {
        let nb = (n * ECC_SECTOR_BYTES) as usize;
        let mut b = Rs03Blocks {
            n,
            layers: vec![0u8; 255 * nb],
            exists: vec![false; 255 * n as usize],
            explained: vec![false; n as usize],
        };
        let crc_layer = self.l.ndata - 1;
        for j in 0..255 {
            self.read_layer(
                j,
                i0,
                n,
                &mut b.layers[j * nb..(j + 1) * nb],
                &mut b.exists[j * n as usize..(j + 1) * n as usize],
            )?;
            for q in 0..n {
                let sec = b.sector(j, q);
                let (virt, file_sector) = self.numbering(j, i0 + q);
                let present = b.exists[j * n as usize + q as usize];
                let dead = present && layout::dead_sector(sec, virt, Some(&self.fp)).is_some();
                if !present || dead {
                    b.explained[q as usize] = true;
                    // Past-the-end sectors are listed by the caller; only markers here.
                    if dead {
                        match file_sector {
                            Some(fs) => f.missing_ecc_file.push(fs),
                            None => f.missing.push(virt),
                        }
                    }
                    b.exists[j * n as usize + q as usize] = false;
                } else if j == crc_layer && CrcBlock::parse(sec).is_none() {
                    f.crc_blocks_bad.push(file_sector.unwrap_or(virt));
                    b.explained[q as usize] = true;
                }
            }
            ctx.tick(nb as u64)?;
        }
        Ok(b)
    }

    /// Check the data-layer sectors against their CRCs: block i's come from the CrcBlock of block
    /// i−1 (for the first block, read here).
    fn check_data_crcs(&self, i0: u64, b: &mut Rs03Blocks, f: &mut Found) -> crate::Result<()> {
        let l = self.l;
        let n = b.n;
        let crc_layer = l.ndata - 1;
        let prev = if i0 == 0 { l.spl - 1 } else { i0 - 1 };
        let mut prev_block = vec![0u8; SECTOR];
        let mut prev_exists = [false];
        self.read_layer(crc_layer, prev, 1, &mut prev_block, &mut prev_exists)?;
        let prev_ok = prev_exists[0] && CrcBlock::parse(&prev_block).is_some();
        for q in 0..n {
            let i = i0 + q;
            let (cb, cb_ok): (&[u8], bool) = if q == 0 {
                (&prev_block, prev_ok)
            } else {
                let sec = b.sector(crc_layer, q - 1);
                (sec, b.exists[crc_layer * n as usize + q as usize - 1] && CrcBlock::parse(sec).is_some())
            };
            let mut bad_here = false;
            for j in 0..l.data_layers() {
                let s = j as u64 * l.spl + i;
                // dvdisaster checks every data-layer sector of an augmented image (header and
                // padding included), but only the real image sectors of an .ecc file.
                if l.ecc_file && s >= l.ds {
                    continue;
                }
                if !b.exists[j * n as usize + q as usize] {
                    continue;
                }
                if !cb_ok {
                    if s < l.ds {
                        f.unchecked += 1;
                    }
                    continue;
                }
                if layout::crc32(b.sector(j, q)) != CrcBlock::crc_at(cb, j) {
                    f.bad.push(s);
                    bad_here = true;
                }
            }
            if bad_here {
                b.explained[q as usize] = true;
            }
        }
        Ok(())
    }

    /// Syndromes, vectorised over the 2048 codewords of each block; a failing block no damage
    /// found so far explains counts as ECC damage.
    fn check_syndromes(&self, b: &Rs03Blocks, syndromes: SyndromeCheck, f: &mut Found) {
        let roots = match syndromes {
            SyndromeCheck::Quick => QUICK_SYNDROMES.min(self.tables.len()),
            SyndromeCheck::Full => self.tables.len(),
        };
        let mut acc = vec![0u8; roots * SECTOR];
        for q in 0..b.n {
            acc.fill(0);
            for j in 0..255 {
                let sec = b.sector(j, q);
                for (t, a) in self.tables[..roots].iter().zip(acc.chunks_exact_mut(SECTOR)) {
                    rs::horner_step(a, t, sec);
                }
            }
            let bad = (0..SECTOR).filter(|&b| (0..roots).any(|k| acc[k * SECTOR + b] != 0)).count() as u64;
            if bad > 0 {
                f.blocks_bad += 1;
                f.codewords_bad += bad;
                if !b.explained[q as usize] {
                    f.blocks_bad_unexplained += 1;
                }
            }
        }
    }

    /// (sector number used in reports, `.ecc`-file sector if it lives there).
    fn numbering(&self, j: usize, i: u64) -> (u64, Option<u64>) {
        match self.l.place(j, i) {
            Rs03Place::Image(s) | Rs03Place::Padding(s) => (s, None),
            Rs03Place::EccFile(fs) => (j as u64 * self.l.spl + i, Some(fs)),
        }
    }
}

/// A batch of RS03 blocks in memory: `n` sectors of each of the 255 layers, which of them exist
/// (readable, not dead), and which blocks have damage that explains a failing syndrome.
struct Rs03Blocks {
    n: u64,
    layers: Vec<u8>,
    exists: Vec<bool>,
    explained: Vec<bool>,
}

impl Rs03Blocks {
    /// Sector `q` of layer `j`.
    fn sector(&self, j: usize, q: u64) -> &[u8] {
        let nb = (self.n * ECC_SECTOR_BYTES) as usize;
        &self.layers[j * nb + (q * ECC_SECTOR_BYTES) as usize..j * nb + ((q + 1) * ECC_SECTOR_BYTES) as usize]
    }
}

pub(super) fn verify_rs03(
    ecc: &Ecc,
    l: &Rs03Layout,
    image: &dyn ByteSource,
    ecc_src: Option<&dyn ByteSource>,
    opts: &Options,
    r: &mut Report,
    run: &mut Run<'_>,
) -> crate::Result<()> {
    let h = &ecc.header;
    let nsec = r.image_sectors;
    if l.ecc_file {
        r.expected_sectors = l.ds;
        r.missing_sectors.extend(past_end(nsec, l.ds));
        let ecc_nsec = ecc_src.map_or(0, |s| s.size_bytes().div_ceil(ECC_SECTOR_BYTES));
        r.ecc_file_sectors = Some((l.total_sectors(), ecc_nsec));
        r.missing_ecc_file_sectors.extend(past_end(ecc_nsec, l.total_sectors()));
    } else {
        r.expected_sectors = l.total_sectors();
        r.missing_sectors.extend(past_end(nsec, l.total_sectors()));
        // The header at ds: present and valid?
        let mut buf = vec![0u8; HEADER_BYTES];
        if read_sectors(image, l.ds, &mut buf)? < 2 || layout::EccHeader::parse(&buf).is_err() {
            r.header_copies_ok = 0;
            if !r.header_copies_damaged.contains(&l.ds) {
                r.header_copies_damaged.push(l.ds);
            }
        }
    }
    let code = rs::Code::new(l.nroots)?;
    let group = Rs03Group { l, image, ecc_src, fp: h.medium_fp, image_sectors: nsec, tables: code.root_tables() };
    let _ = group.image_sectors;
    enum Job {
        DataMd5,
        Blocks(u64, u64),
    }
    let mut jobs = vec![Job::DataMd5];
    jobs.extend(
        (0..l.spl.div_ceil(RS03_GROUP)).map(|g| Job::Blocks(g * RS03_GROUP, ((g + 1) * RS03_GROUP).min(l.spl))),
    );
    let total = r.data_bytes + 255 * l.spl * ECC_SECTOR_BYTES;
    let results =
        Pool::new(opts.workers, &mut *run.progress, run.interrupt).phase("checking ECC (RS03)", Some(total)).run_all(
            &jobs,
            || Ok(()),
            |job, _, ctx| match job {
                Job::DataMd5 => Ok(Found { md5: Some(md5_stream(image, 0, r.data_bytes, ctx)?), ..Found::default() }),
                Job::Blocks(a, b) => group.run(*a, *b, opts.syndromes, ctx),
            },
        )?;
    let mut found = Found::default();
    for f in results {
        if let Some(m) = f.md5 {
            r.md5 = m;
        }
        found.merge(f);
    }
    r.md5_ok = h.medium_sum_valid().then(|| r.md5 == h.medium_sum);
    r.ecc_blocks = Some(l.spl);
    r.ecc_blocks_bad = Some(found.blocks_bad);
    r.codewords_bad = Some(found.codewords_bad);
    // Section integrity: CRC layer = its sectors present and valid; ECC layers = present and
    // no failing block that known damage elsewhere does not explain.
    let crc_range = (l.ndata as u64 - 1) * l.spl..l.ndata as u64 * l.spl;
    let ecc_range = l.ndata as u64 * l.spl..255 * l.spl;
    let in_section = |range: &std::ops::Range<u64>| {
        if l.ecc_file {
            let to_file = |v: u64| 2 + v - (l.ndata as u64 - 1) * l.spl;
            let fr = to_file(range.start)..to_file(range.end);
            found.missing_ecc_file.iter().chain(&r.missing_ecc_file_sectors).any(|s| fr.contains(s))
        } else {
            found.missing.iter().chain(&r.missing_sectors).any(|s| range.contains(s))
        }
    };
    r.crc_section_ok = !in_section(&crc_range) && found.crc_blocks_bad.is_empty();
    r.ecc_section_ok = !in_section(&ecc_range) && found.blocks_bad_unexplained == 0;
    r.crc_blocks_bad = found.crc_blocks_bad;
    r.missing_sectors.extend(found.missing);
    r.missing_ecc_file_sectors.extend(found.missing_ecc_file);
    r.bad_sectors.extend(found.bad);
    r.unchecked_sectors = found.unchecked;
    Ok(())
}
