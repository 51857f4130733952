//! Reed–Solomon over GF(2^8) with dvdisaster's parameters: field polynomial 0x187, first
//! consecutive root 112, root spacing (primitive element) 11, full length 255. A pure codec —
//! encoder, syndromes, errors-and-erasures decoder — that knows nothing about sectors or layers
//! (the format modules feed it codewords), like cryptsetup's `lib/verity/rs*` beside
//! `verity_fec.c`.
//!
//! Codeword order: `c[0]` is the coefficient of `x^254`, data first, parity last; syndromes are
//! `S_i = c(α^{11·(112+i)})`. Written from the parameters in `docs/formats/research/dvdisaster.md` §8 and
//! checked against the blue manual's test vectors and against dvdisaster-made images.

use std::fmt;

/// Field generator polynomial x^8+x^7+x^2+x+1.
pub const FIELD_POLY: u16 = 0x187;
/// First consecutive root of the generator polynomial (in units of the root spacing).
pub const FIRST_ROOT: usize = 112;
/// Root spacing: the roots are `α^(PRIM_ELEM·(FIRST_ROOT+i))`.
pub const PRIM_ELEM: usize = 11;
/// `PRIM_ELEM⁻¹ mod 255`, the step of the Chien search.
pub const PRIMTH_ROOT: usize = 116;
/// Codeword length (the code is never shortened).
pub const N: usize = 255;
/// Fewest and most parity symbols dvdisaster ever writes.
pub const ROOTS_RANGE: std::ops::RangeInclusive<usize> = 8..=170;

/// The log of zero in log-form arrays (log values of nonzero elements are 0..=254).
const LOG_ZERO: usize = N;

const fn build_exp() -> [u8; 2 * N] {
    let mut t = [0u8; 2 * N];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < N {
        t[i] = x as u8;
        t[i + N] = x as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= FIELD_POLY;
        }
        i += 1;
    }
    t
}

const fn build_log() -> [u8; 256] {
    let exp = build_exp();
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < N {
        t[exp[i] as usize] = i as u8;
        i += 1;
    }
    t
}

/// `EXP[i] = α^i` for i in 0..510 (doubled so sums of two logs need no reduction).
static EXP: [u8; 2 * N] = build_exp();
/// `LOG[x]` for x ≠ 0 (LOG[0] is meaningless).
static LOG: [u8; 256] = build_log();

/// `α^e` for any exponent.
#[inline]
pub fn alpha_pow(e: usize) -> u8 {
    EXP[e % N]
}

/// Field multiplication.
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 { 0 } else { EXP[LOG[a as usize] as usize + LOG[b as usize] as usize] }
}

fn log_of(x: u8) -> usize {
    if x == 0 { LOG_ZERO } else { LOG[x as usize] as usize }
}

/// `α^l` for a sum of logs (callers never pass the log of zero).
fn exp_of(l: usize) -> u8 {
    EXP[l % N]
}

/// A 256-entry table for multiplying by one constant (the vectorisable form of [`mul`]).
#[derive(Clone)]
pub struct MulTable(pub [u8; 256]);

impl MulTable {
    /// The table of `x ↦ c·x`.
    pub fn new(c: u8) -> Self {
        let mut t = [0u8; 256];
        for (x, v) in t.iter_mut().enumerate() {
            *v = mul(c, x as u8);
        }
        MulTable(t)
    }
}

impl fmt::Debug for MulTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MulTable(×{:#04x})", self.0[1])
    }
}

/// One Horner step on many codewords at once: `acc[b] = acc[b]·r ⊕ input[b]`, where `t`
/// multiplies by `r`. Feeding the 255 symbols of each codeword in order leaves `c(r)` in `acc`.
#[inline]
pub fn horner_step(acc: &mut [u8], t: &MulTable, input: &[u8]) {
    for (a, &x) in acc.iter_mut().zip(input) {
        *a = t.0[*a as usize] ^ x;
    }
}

/// Why a codeword could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// More erasures than parity symbols.
    TooManyErasures,
    /// The errors exceed what the code can correct (the error locator has no consistent roots).
    Uncorrectable,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::TooManyErasures => "more erasures than parity symbols",
            DecodeError::Uncorrectable => "too many errors to correct",
        })
    }
}

impl std::error::Error for DecodeError {}

/// An RS(255, 255−nroots) code with dvdisaster's parameters.
#[derive(Clone)]
pub struct Code {
    nroots: usize,
    /// Generator polynomial, highest degree first; `gen[0] = 1`, `nroots + 1` coefficients.
    generator: Vec<u8>,
    /// `roots[i] = α^(11·(112+i))`.
    roots: Vec<u8>,
    /// Multiplication tables for the roots (syndromes).
    root_tables: Vec<MulTable>,
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code(RS(255,{}))", N - self.nroots)
    }
}

impl Code {
    /// The code with `nroots` parity symbols (1..=254).
    ///
    /// # Errors
    /// `InvalidInput` when `nroots` is out of range.
    pub fn new(nroots: usize) -> crate::Result<Self> {
        if nroots == 0 || nroots >= N {
            return Err(crate::Error::invalid(format!("Reed-Solomon code with {nroots} roots (must be 1..=254)")));
        }
        let roots: Vec<u8> = (0..nroots).map(|i| alpha_pow(PRIM_ELEM * (FIRST_ROOT + i))).collect();
        // g(x) = Π (x − r_i), built highest degree first.
        let mut generator = vec![1u8];
        for &r in &roots {
            let mut next = vec![0u8; generator.len() + 1];
            for (k, &g) in generator.iter().enumerate() {
                next[k] ^= g;
                next[k + 1] ^= mul(g, r);
            }
            generator = next;
        }
        let root_tables = roots.iter().map(|&r| MulTable::new(r)).collect();
        Ok(Code { nroots, generator, roots, root_tables })
    }

    /// Parity symbols per codeword.
    pub fn nroots(&self) -> usize {
        self.nroots
    }

    /// Data symbols per codeword.
    pub fn ndata(&self) -> usize {
        N - self.nroots
    }

    /// The generator polynomial, highest degree first.
    pub fn generator(&self) -> &[u8] {
        &self.generator
    }

    /// The roots `α^(11·(112+i))`, i = 0..nroots.
    pub fn roots(&self) -> &[u8] {
        &self.roots
    }

    /// Multiplication tables for the roots, in root order.
    pub fn root_tables(&self) -> &[MulTable] {
        &self.root_tables
    }

    /// Systematic encoding: the `nroots` parity symbols of `data` (`ndata` symbols).
    ///
    /// # Panics
    /// If the slice lengths do not match the code (a caller bug, never input data).
    pub fn encode(&self, data: &[u8], parity: &mut [u8]) {
        assert_eq!(data.len(), self.ndata());
        assert_eq!(parity.len(), self.nroots);
        parity.fill(0);
        for &d in data {
            let fb = d ^ parity[0];
            parity.copy_within(1.., 0);
            parity[self.nroots - 1] = 0;
            if fb != 0 {
                for (p, &g) in parity.iter_mut().zip(&self.generator[1..]) {
                    *p ^= mul(fb, g);
                }
            }
        }
    }

    /// The syndromes `S_i = c(r_i)` of a 255-symbol codeword (all zero ⇔ valid).
    pub fn syndromes(&self, cw: &[u8]) -> Vec<u8> {
        debug_assert_eq!(cw.len(), N);
        self.roots
            .iter()
            .map(|&r| {
                let mut s = 0u8;
                for &c in cw {
                    s = mul(s, r) ^ c;
                }
                s
            })
            .collect()
    }

    /// Correct `cw` (255 symbols) in place, given the positions (0..255, `c[0]` first) known to be
    /// wrong or unknown. Up to `nroots` erasures, or `2·errors + erasures ≤ nroots`, are
    /// corrected. Returns the positions whose symbols changed (empty for a valid codeword).
    ///
    /// Berlekamp–Massey seeded with the erasure locator, Chien search, Forney's formula — the
    /// classic errors-and-erasures decoder (Karn's `decode_rs`), which dvdisaster's repair uses.
    ///
    /// # Errors
    /// [`DecodeError`] when the codeword cannot be corrected; `cw` is then left unchanged.
    pub fn decode(&self, cw: &mut [u8], erasures: &[usize]) -> Result<Vec<usize>, DecodeError> {
        let fixes = self.corrections(cw, erasures)?;
        for &(pos, v) in &fixes {
            cw[pos] ^= v;
        }
        if !fixes.is_empty() && self.syndromes(cw).iter().any(|&x| x != 0) {
            // Not a codeword after all (more errors than the code handles): undo.
            for &(pos, v) in &fixes {
                cw[pos] ^= v;
            }
            return Err(DecodeError::Uncorrectable);
        }
        if fixes.is_empty() && self.syndromes(cw).iter().any(|&x| x != 0) {
            return Err(DecodeError::Uncorrectable);
        }
        let mut changed: Vec<usize> = fixes.iter().map(|&(p, _)| p).collect();
        changed.sort_unstable();
        Ok(changed)
    }

    /// The decoder's raw output for `cw`: `(position, value to XOR)` pairs, exactly as the
    /// classic decoder (and dvdisaster's repair) computes them — without checking that the
    /// result is a codeword, and treating a zero Forney denominator the way dvdisaster's tables
    /// do (log 0 read as 255). Empty for a valid codeword.
    ///
    /// # Errors
    /// `TooManyErasures`; `Uncorrectable` when the locator's degree differs from its number of
    /// roots (dvdisaster's "decoder problem").
    pub fn corrections(&self, cw: &[u8], erasures: &[usize]) -> Result<Vec<(usize, u8)>, DecodeError> {
        debug_assert_eq!(cw.len(), N);
        let nroots = self.nroots;
        if erasures.len() > nroots {
            return Err(DecodeError::TooManyErasures);
        }
        let synd = self.syndromes(cw);
        if synd.iter().all(|&s| s == 0) {
            return Ok(Vec::new());
        }
        // Syndromes in log form.
        let s: Vec<usize> = synd.iter().map(|&x| log_of(x)).collect();
        let mut lambda = erasure_locator(erasures, nroots)?;
        berlekamp_massey(&mut lambda, &s, erasures.len());

        // Log form and degree of lambda.
        let lam: Vec<usize> = lambda.iter().map(|&x| log_of(x)).collect();
        let deg_lambda = lam.iter().rposition(|&l| l != LOG_ZERO).unwrap_or(0);
        if deg_lambda == 0 {
            // No locator roots to find: the classic decoder changes nothing.
            return Ok(Vec::new());
        }
        let (root, loc) = chien_search(&lam, deg_lambda).ok_or(DecodeError::Uncorrectable)?;
        let omega = error_evaluator(&s, &lam, deg_lambda);
        Ok(forney(&lam, &omega, &root, &loc, deg_lambda, nroots))
    }
}

/// The erasure locator Π (1 − X_k x), X_k = α^(11·(254 − pos)), as `nroots + 1` coefficients.
///
/// # Errors
/// `Uncorrectable` for a position outside the codeword.
fn erasure_locator(erasures: &[usize], nroots: usize) -> Result<Vec<u8>, DecodeError> {
    let mut lambda = vec![0u8; nroots + 1];
    lambda[0] = 1;
    for (n, &pos) in erasures.iter().enumerate() {
        if pos >= N {
            return Err(DecodeError::Uncorrectable);
        }
        let u = (PRIM_ELEM * (N - 1 - pos)) % N;
        for j in (1..=n + 1).rev() {
            let l = log_of(lambda[j - 1]);
            if l != LOG_ZERO {
                lambda[j] ^= exp_of(u + l);
            }
        }
    }
    Ok(lambda)
}

/// Berlekamp–Massey: extend the erasure locator `lambda` to the error-and-erasure locator, from
/// the syndromes `s` (log form), starting after the `no_eras` erasures.
fn berlekamp_massey(lambda: &mut [u8], s: &[usize], no_eras: usize) {
    let nroots = lambda.len() - 1;
    let mut b: Vec<usize> = lambda.iter().map(|&x| log_of(x)).collect();
    let mut t = vec![0u8; nroots + 1];
    let mut el = no_eras;
    for r in no_eras + 1..=nroots {
        let mut discr = 0u8;
        for i in 0..r {
            if lambda[i] != 0 && s[r - i - 1] != LOG_ZERO {
                discr ^= exp_of(log_of(lambda[i]) + s[r - i - 1]);
            }
        }
        let discr_log = log_of(discr);
        if discr_log == LOG_ZERO {
            b.rotate_right(1);
            b[0] = LOG_ZERO;
        } else {
            t[0] = lambda[0];
            for i in 0..nroots {
                t[i + 1] = if b[i] != LOG_ZERO { lambda[i + 1] ^ exp_of(discr_log + b[i]) } else { lambda[i + 1] };
            }
            if 2 * el < r + no_eras {
                el = r + no_eras - el;
                for i in 0..=nroots {
                    b[i] = if lambda[i] == 0 { LOG_ZERO } else { (log_of(lambda[i]) + N - discr_log) % N };
                }
            } else {
                b.rotate_right(1);
                b[0] = LOG_ZERO;
            }
            lambda.copy_from_slice(&t);
        }
    }
}

/// Chien search: the roots of the locator `lam` (log form, degree `deg_lambda`) and the error
/// locations they give, or `None` when it has fewer roots than its degree.
fn chien_search(lam: &[usize], deg_lambda: usize) -> Option<(Vec<usize>, Vec<usize>)> {
    let mut reg = lam.to_vec();
    let mut root = Vec::with_capacity(deg_lambda);
    let mut loc = Vec::with_capacity(deg_lambda);
    let mut k = PRIMTH_ROOT - 1;
    for i in 1..=N {
        let mut q = 1u8;
        for j in (1..=deg_lambda).rev() {
            if reg[j] != LOG_ZERO {
                reg[j] = (reg[j] + j) % N;
                q ^= EXP[reg[j]];
            }
        }
        if q == 0 {
            root.push(i);
            loc.push(k);
            if root.len() == deg_lambda {
                break;
            }
        }
        k = (k + PRIMTH_ROOT) % N;
    }
    (root.len() == deg_lambda).then_some((root, loc))
}

/// The error evaluator omega = S·lambda mod x^nroots, in log form.
fn error_evaluator(s: &[usize], lam: &[usize], deg_lambda: usize) -> Vec<usize> {
    let deg_omega = deg_lambda - 1;
    (0..=deg_omega)
        .map(|i| {
            let mut tmp = 0u8;
            for j in 0..=i {
                if s[i - j] != LOG_ZERO && lam[j] != LOG_ZERO {
                    tmp ^= exp_of(s[i - j] + lam[j]);
                }
            }
            log_of(tmp)
        })
        .collect()
}

/// Forney: the error value at each location, as `(position, value to XOR)`; all computed before
/// any is applied, so a failure leaves the codeword intact.
fn forney(
    lam: &[usize],
    omega: &[usize],
    root: &[usize],
    loc: &[usize],
    deg_lambda: usize,
    nroots: usize,
) -> Vec<(usize, u8)> {
    let mut fixes = Vec::with_capacity(root.len());
    for (&rt, &lc) in root.iter().zip(loc) {
        let mut num1 = 0u8;
        for (i, &o) in omega.iter().enumerate() {
            if o != LOG_ZERO {
                num1 ^= exp_of(o + i * rt);
            }
        }
        let num2 = exp_of((rt * (FIRST_ROOT + N - 1)) % N);
        let mut den = 0u8;
        // Formal derivative: only odd powers of lambda survive.
        let top = deg_lambda.min(nroots - 1) & !1;
        let mut i = top as isize;
        while i >= 0 {
            let iu = i as usize;
            if lam[iu + 1] != LOG_ZERO {
                den ^= exp_of(lam[iu + 1] + iu * rt);
            }
            i -= 2;
        }
        if num1 != 0 {
            // log(0) is 255 (= N) in the decoder's tables; it cancels the `+ N` below.
            let v = exp_of(log_of(num1) + log_of(num2) + N - log_of(den));
            fixes.push((lc, v));
        }
    }
    fixes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()).collect()
    }

    #[test]
    fn field_tables_match_blue_manual() {
        // rs-params.tex alpha_to: 01 02 04 08 10 20 40 80 87 89 95 ad
        let want = hex("01 02 04 08 10 20 40 80 87 89 95 ad");
        let got: Vec<u8> = (0..want.len()).map(alpha_pow).collect();
        assert_eq!(got, want);
        for a in 1..=255u8 {
            assert_eq!(mul(a, 1), a);
            let inv = (1..=255u8).find(|&b| mul(a, b) == 1).unwrap();
            assert_eq!(mul(inv, a), 1);
        }
        assert_eq!(alpha_pow(PRIM_ELEM * PRIMTH_ROOT), 2);
    }

    #[test]
    fn generator_and_parity_vectors() {
        // docs/formats/research/dvdisaster.md §8 (blue manual test vectors).
        let code = Code::new(32).unwrap();
        assert_eq!(
            code.generator(),
            &hex("01 5b 7f 56 10 1e 0d eb 61 a5 08 2a 36 56 ab 20 71 20 ab 56 36 2a 08 a5 61 eb 0d 1e 10 56 7f 5b 01")
                [..]
        );
        let data: Vec<u8> = (0..223u32).map(|i| i as u8).collect();
        let mut parity = vec![0u8; 32];
        code.encode(&data, &mut parity);
        assert_eq!(
            parity,
            hex("2f bd 4f b4 74 84 94 b9 ac d5 54 62 72 12 ee b3 eb ed 41 19 1d e1 d3 63 20 ea 49 29 0b 25 ab cf")
        );
        let cw: Vec<u8> = data.iter().chain(&parity).copied().collect();
        assert!(code.syndromes(&cw).iter().all(|&s| s == 0));
    }

    fn codeword(code: &Code, seed: u32) -> Vec<u8> {
        let data: Vec<u8> = (0..code.ndata() as u32).map(|i| (i.wrapping_mul(2654435761) ^ seed) as u8).collect();
        let mut parity = vec![0u8; code.nroots()];
        code.encode(&data, &mut parity);
        data.into_iter().chain(parity).collect()
    }

    #[test]
    fn decodes_errors_and_erasures() {
        for nroots in [8usize, 32, 170] {
            let code = Code::new(nroots).unwrap();
            let good = codeword(&code, nroots as u32);
            // Erasures only, up to nroots.
            let mut cw = good.clone();
            let eras: Vec<usize> = (0..nroots).map(|k| (k * 7 + 3) % N).collect();
            for &p in &eras {
                cw[p] ^= 0x5a;
            }
            code.decode(&mut cw, &eras).unwrap();
            assert_eq!(cw, good, "erasures, {nroots} roots");
            // Errors only, up to nroots/2.
            let mut cw = good.clone();
            for k in 0..nroots / 2 {
                cw[(k * 13 + 1) % N] ^= (k as u8) | 1;
            }
            let fixed = code.decode(&mut cw, &[]).unwrap();
            assert_eq!(fixed.len(), nroots / 2);
            assert_eq!(cw, good, "errors, {nroots} roots");
            // Mixed: 2e + f <= nroots.
            let mut cw = good.clone();
            let f = nroots / 2;
            let e = (nroots - f) / 2;
            let eras: Vec<usize> = (0..f).map(|k| 254 - k * 3).collect();
            for &p in &eras {
                cw[p] = 0;
            }
            for k in 0..e {
                cw[k * 5] ^= 0x81;
            }
            code.decode(&mut cw, &eras).unwrap();
            assert_eq!(cw, good, "mixed, {nroots} roots");
            // Valid codeword: nothing changes.
            let mut cw = good.clone();
            assert_eq!(code.decode(&mut cw, &[]).unwrap(), Vec::<usize>::new());
        }
    }

    #[test]
    fn refuses_too_much_damage() {
        let code = Code::new(8).unwrap();
        let good = codeword(&code, 9);
        let mut cw = good.clone();
        let eras: Vec<usize> = (0..9).collect();
        assert_eq!(code.decode(&mut cw, &eras), Err(DecodeError::TooManyErasures));
        for k in 0..20 {
            cw[k * 11] ^= 0x33;
        }
        let before = cw.clone();
        if code.decode(&mut cw, &[]).is_err() {
            assert_eq!(cw, before, "a failed decode must leave the codeword alone");
        }
        assert!(Code::new(0).is_err() && Code::new(255).is_err());
    }

    #[test]
    fn horner_matches_scalar_syndromes() {
        let code = Code::new(16).unwrap();
        let cws: Vec<Vec<u8>> = (0..4)
            .map(|s| {
                let mut c = codeword(&code, s);
                c[s as usize * 3] ^= 1;
                c
            })
            .collect();
        for (i, t) in code.root_tables().iter().enumerate() {
            let mut acc = vec![0u8; 4];
            for j in 0..N {
                let col: Vec<u8> = cws.iter().map(|c| c[j]).collect();
                horner_step(&mut acc, t, &col);
            }
            for (w, c) in cws.iter().enumerate() {
                assert_eq!(acc[w], code.syndromes(c)[i]);
            }
        }
    }
}
