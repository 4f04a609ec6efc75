//! teeserve's sealed format: an authenticated header, then AES-256-GCM chunks in the STREAM
//! construction (Hoang, Reyhanitabar, Rogaway, Vizár: "Online Authenticated-Encryption and its
//! Nonce-Reuse Misuse-Resistance", 2015). Byte layout: docs/SEALED_FORMAT.md.
//!
//! Per file, HKDF-SHA256 over the master key and a random salt derives an encryption key, a
//! 7-byte nonce prefix and a header MAC key. Chunk `i` uses the nonce `prefix || i (u32 BE) ||
//! last (u8)`, and the whole header as associated data. So an edited header, a truncated file,
//! reordered chunks, or a chunk taken from another file all fail authentication.

use std::io::{Read, Write};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use crate::key::SealKey;
use crate::SealError;

/// The magic bytes that open every sealed file.
pub const MAGIC: [u8; 8] = *b"TEESEAL\n";
/// The format version.
pub const VERSION: u8 = 1;
/// Algorithm id of AES-256-GCM.
pub const ALG_AES256_GCM: u8 = 1;
/// Default chunk size (256 KiB).
pub const DEFAULT_CHUNK_LOG2: u8 = 18;
/// Bounds of the chunk size (4 KiB .. 16 MiB).
pub const CHUNK_LOG2_RANGE: std::ops::RangeInclusive<u8> = 12..=24;
/// Longest bound name.
pub const MAX_NAME: usize = 4096;
const FIXED: usize = 62;
const TAG: usize = 16;
const BATCH: usize = 16;

/// Sealing options.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// log2 of the chunk size.
    pub chunk_log2: u8,
    /// Worker threads for encryption (chunks are independent); 0 = available cores.
    pub threads: usize,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self {
            chunk_log2: DEFAULT_CHUNK_LOG2,
            threads: 0,
        }
    }
}

/// The plaintext header of a sealed file (readable without the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    /// Format version.
    pub version: u8,
    /// Algorithm id.
    pub algorithm: u8,
    /// log2 of the chunk size.
    pub chunk_log2: u8,
    /// Random per-file salt.
    pub salt: [u8; 24],
    /// Identifier of the key that sealed the file.
    pub key_id: [u8; 16],
    /// Plaintext length.
    pub plaintext_len: u64,
    /// The name the file is bound to.
    pub name: String,
    /// The header MAC.
    pub tag: [u8; 16],
    raw: Vec<u8>,
}

impl SealedHeader {
    /// Parses the header at the start of `b`; returns it and its length in bytes.
    pub fn parse(b: &[u8]) -> Result<(Self, usize), SealError> {
        let fmt = |reason: &str| SealError::Format {
            format: "teeserve",
            reason: reason.to_owned(),
        };
        if b.len() < 8 || b[..8] != MAGIC {
            return Err(fmt("magic bytes TEESEAL missing"));
        }
        if b.len() < FIXED {
            return Err(fmt("header truncated"));
        }
        let name_len = u16::from_le_bytes([b[60], b[61]]) as usize;
        if name_len > MAX_NAME {
            return Err(fmt("bound name longer than 4096 bytes"));
        }
        let total = FIXED + name_len + TAG;
        if b.len() < total {
            return Err(fmt("header truncated"));
        }
        if b[8] != VERSION {
            return Err(fmt(&format!(
                "version {} is not supported (expected {VERSION})",
                b[8]
            )));
        }
        if b[9] != ALG_AES256_GCM {
            return Err(fmt(&format!(
                "algorithm {} is not supported (expected 1, AES-256-GCM)",
                b[9]
            )));
        }
        if !CHUNK_LOG2_RANGE.contains(&b[10]) || b[11] != 0 {
            return Err(fmt(&format!("chunk size 2^{} is out of range", b[10])));
        }
        let name = std::str::from_utf8(&b[FIXED..FIXED + name_len])
            .map_err(|_| fmt("bound name is not UTF-8"))?;
        let arr = |r: std::ops::Range<usize>| b[r].to_vec();
        Ok((
            SealedHeader {
                version: b[8],
                algorithm: b[9],
                chunk_log2: b[10],
                salt: arr(12..36).try_into().map_err(|_| fmt("salt"))?,
                key_id: arr(36..52).try_into().map_err(|_| fmt("key id"))?,
                plaintext_len: u64::from_le_bytes(
                    arr(52..60).try_into().map_err(|_| fmt("length"))?,
                ),
                name: name.to_owned(),
                tag: arr(FIXED + name_len..total)
                    .try_into()
                    .map_err(|_| fmt("tag"))?,
                raw: b[..total].to_vec(),
            },
            total,
        ))
    }

    fn chunk_size(&self) -> usize {
        1usize << self.chunk_log2
    }

    fn chunks(&self) -> u64 {
        let c = self.chunk_size() as u64;
        self.plaintext_len.div_ceil(c).max(1)
    }
}

struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

struct FileKeys {
    aead: LessSafeKey,
    prefix: [u8; 7],
    mac: ring::hmac::Key,
}

fn derive(key: &SealKey, salt: &[u8; 24]) -> Result<FileKeys, SealError> {
    if key.len() != 32 {
        return Err(SealError::Key(format!(
            "the teeserve format needs a 32-byte key, this one has {} bytes (16-byte keys are for --format gramine)",
            key.len()
        )));
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(key.bytes());
    let expand = |info: &'static [u8], n: usize| -> Result<Zeroizing<Vec<u8>>, SealError> {
        let mut out = Zeroizing::new(vec![0u8; n]);
        prk.expand(&[info], OkmLen(n))
            .and_then(|o| o.fill(&mut out))
            .map_err(|_| SealError::Key("key derivation failed".into()))?;
        Ok(out)
    };
    let enc = expand(b"teeserve-seal v1 chunk key", 32)?;
    let prefix = expand(b"teeserve-seal v1 nonce prefix", 7)?;
    let mac = expand(b"teeserve-seal v1 header key", 32)?;
    Ok(FileKeys {
        aead: LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &enc).map_err(|_| SealError::Key("bad key".into()))?,
        ),
        prefix: prefix[..]
            .try_into()
            .map_err(|_| SealError::Key("bad prefix".into()))?,
        mac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &mac),
    })
}

fn nonce(prefix: &[u8; 7], index: u64, last: bool) -> Result<Nonce, SealError> {
    let idx =
        u32::try_from(index).map_err(|_| SealError::Invalid("more than 2^32 chunks".into()))?;
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&idx.to_be_bytes());
    n[11] = u8::from(last);
    Ok(Nonce::assume_unique_for_key(n))
}

pub(crate) fn threads(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
}

/// Runs `f` over the items, on up to `n` threads.
fn par_each<T: Send>(
    items: &mut [T],
    n: usize,
    f: impl Fn(&mut T) -> Result<(), SealError> + Sync,
) -> Result<(), SealError> {
    if n <= 1 || items.len() < 2 {
        return items.iter_mut().try_for_each(&f);
    }
    let per = items.len().div_ceil(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks_mut(per)
            .map(|part| s.spawn(|| part.iter_mut().try_for_each(&f)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(SealError::Invalid("worker panicked".into())))
            })
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A fresh header (random salt) for `len` bytes bound to `name`, with the keys it derives.
fn new_header(
    key: &SealKey,
    name: &str,
    len: u64,
    opts: &SealOptions,
) -> Result<(Vec<u8>, FileKeys), SealError> {
    if !CHUNK_LOG2_RANGE.contains(&opts.chunk_log2) {
        return Err(SealError::Invalid(format!(
            "chunk size 2^{} is out of range 2^12..2^24",
            opts.chunk_log2
        )));
    }
    if name.len() > MAX_NAME {
        return Err(SealError::Invalid(
            "bound name longer than 4096 bytes".into(),
        ));
    }
    let mut salt = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| SealError::Key("no randomness".into()))?;
    let keys = derive(key, &salt)?;
    let mut header = Vec::with_capacity(FIXED + name.len() + TAG);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&[VERSION, ALG_AES256_GCM, opts.chunk_log2, 0]);
    header.extend_from_slice(&salt);
    header.extend_from_slice(&key.id());
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&(name.len() as u16).to_le_bytes());
    header.extend_from_slice(name.as_bytes());
    let tag = ring::hmac::sign(&keys.mac, &header);
    header.extend_from_slice(&tag.as_ref()[..TAG]);
    Ok((header, keys))
}

/// Seals exactly `len` bytes from `input` into `output`, bound to `name`. Returns bytes written.
pub fn seal(
    key: &SealKey,
    name: &str,
    len: u64,
    mut input: impl Read,
    mut output: impl Write,
    opts: &SealOptions,
) -> Result<u64, SealError> {
    let (header, keys) = new_header(key, name, len, opts)?;
    output.write_all(&header)?;
    let mut written = header.len() as u64;

    let chunk = 1usize << opts.chunk_log2;
    let total = len.div_ceil(chunk as u64).max(1);
    let n_threads = threads(opts.threads);
    // Buffers are allocated once and reused: fresh large allocations cost page faults.
    let mut bufs: Vec<(u64, Zeroizing<Vec<u8>>)> = (0..BATCH.min(total as usize))
        .map(|_| (0, Zeroizing::new(Vec::with_capacity(chunk + TAG))))
        .collect();
    let mut index = 0u64;
    let mut remaining = len;
    while index < total {
        let mut used = 0;
        while used < bufs.len() && index < total {
            let n = remaining.min(chunk as u64) as usize;
            let (i, b) = &mut bufs[used];
            b.resize(n + TAG, 0);
            let got = read_full(&mut input, &mut b[..n])?;
            if got != n {
                return Err(SealError::Invalid(format!(
                    "input ended after {} of {len} bytes",
                    len - remaining + got as u64
                )));
            }
            remaining -= n as u64;
            *i = index;
            index += 1;
            used += 1;
        }
        par_each(&mut bufs[..used], n_threads, |(i, b)| {
            let n = b.len() - TAG;
            let (data, tag_out) = b.split_at_mut(n);
            let t = keys
                .aead
                .seal_in_place_separate_tag(
                    nonce(&keys.prefix, *i, *i + 1 == total)?,
                    Aad::from(&header),
                    data,
                )
                .map_err(|_| SealError::Invalid("encryption failed".into()))?;
            tag_out.copy_from_slice(t.as_ref());
            Ok(())
        })?;
        for (_, b) in &bufs[..used] {
            output.write_all(b)?;
            written += b.len() as u64;
        }
    }
    let mut probe = [0u8; 1];
    if read_full(&mut input, &mut probe)? != 0 {
        return Err(SealError::Invalid(format!(
            "input is longer than the declared {len} bytes"
        )));
    }
    output.flush()?;
    Ok(written)
}

/// Reads and authenticates the header from `input`, checking the key and the bound name.
fn open_header(
    key: &SealKey,
    input: &mut impl Read,
    expected_name: Option<&str>,
) -> Result<(SealedHeader, FileKeys), SealError> {
    if key.len() != 32 {
        return Err(SealError::Key(format!(
            "the teeserve format needs a 32-byte key, this one has {} bytes (16-byte keys are for --format gramine)",
            key.len()
        )));
    }
    let mut fixed = vec![0u8; FIXED];
    let got = read_full(input, &mut fixed)?;
    if got < FIXED {
        SealedHeader::parse(&fixed[..got])?;
        return Err(SealError::Format {
            format: "teeserve",
            reason: "header truncated".into(),
        });
    }
    let name_len = u16::from_le_bytes([fixed[60], fixed[61]]) as usize;
    if name_len > MAX_NAME {
        return Err(SealError::Format {
            format: "teeserve",
            reason: "bound name longer than 4096 bytes".into(),
        });
    }
    let mut rest = vec![0u8; name_len + TAG];
    let got = read_full(input, &mut rest)?;
    fixed.extend_from_slice(&rest[..got]);
    let (h, _) = SealedHeader::parse(&fixed)?;
    if h.key_id != key.id() {
        return Err(SealError::WrongKey(format!(
            "the file names key id {}, this key is {} (or the header was tampered with)",
            hex::encode(h.key_id),
            key.id_hex()
        )));
    }
    let keys = derive(key, &h.salt)?;
    let want = ring::hmac::sign(&keys.mac, &h.raw[..h.raw.len() - TAG]);
    // Constant-time comparison of the truncated tag.
    let diff = want.as_ref()[..TAG]
        .iter()
        .zip(h.tag.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(SealError::Tampered(
            "the header does not authenticate (a header field was modified)".into(),
        ));
    }
    if let Some(want) = expected_name {
        if h.name != want {
            return Err(SealError::NameMismatch {
                found: h.name.clone(),
                expected: want.to_owned(),
            });
        }
    }
    Ok((h, keys))
}

/// Unseals `input` into `output`, streaming. Plaintext of a chunk is written only after that
/// chunk authenticates; on error, the caller must discard what was written (the CLI writes to a
/// temporary file that is removed).
pub fn unseal(
    key: &SealKey,
    mut input: impl Read,
    mut output: impl Write,
    expected_name: Option<&str>,
) -> Result<SealedHeader, SealError> {
    let (h, keys) = open_header(key, &mut input, expected_name)?;
    let chunk = h.chunk_size();
    let total = h.chunks();
    let n_threads = threads(0);
    let mut remaining = h.plaintext_len;
    let mut index = 0u64;
    let mut bufs: Vec<(u64, Zeroizing<Vec<u8>>)> = (0..BATCH.min(total as usize))
        .map(|_| (0, Zeroizing::new(Vec::with_capacity(chunk + TAG))))
        .collect();
    while index < total {
        let mut used = 0;
        while used < bufs.len() && index < total {
            let n = remaining.min(chunk as u64) as usize;
            let (i, b) = &mut bufs[used];
            b.resize(n + TAG, 0);
            let got = read_full(&mut input, b)?;
            if got != b.len() {
                return Err(SealError::Tampered(format!(
                    "truncated: chunk {index} of {total} has {got} of {} bytes",
                    n + TAG
                )));
            }
            remaining -= n as u64;
            *i = index;
            index += 1;
            used += 1;
        }
        par_each(&mut bufs[..used], n_threads, |(i, b)| {
            keys.aead
                .open_in_place(
                    nonce(&keys.prefix, *i, *i + 1 == total)?,
                    Aad::from(&h.raw),
                    &mut b[..],
                )
                .map_err(|_| {
                    SealError::Tampered(format!(
                        "chunk {i} does not authenticate (modified, moved, or from another file)"
                    ))
                })?;
            Ok(())
        })?;
        for (_, b) in &bufs[..used] {
            output.write_all(&b[..b.len() - TAG])?;
        }
    }
    let mut probe = [0u8; 1];
    if read_full(&mut input, &mut probe)? != 0 {
        return Err(SealError::Tampered("data after the last chunk".into()));
    }
    output.flush()?;
    Ok(h)
}

/// Bytes each thread reads, encrypts or decrypts, and writes at a time in the file variants.
#[cfg(unix)]
const GROUP_BYTES: usize = 1 << 20;

/// Runs `work(first, last)` over chunk groups `[first, last)` of `total` chunks on `n` threads.
/// Every thread stops at the first error; the error of the lowest chunk wins, so the report
/// does not depend on scheduling.
#[cfg(unix)]
pub(crate) fn par_groups(
    total: u64,
    group: u64,
    n: usize,
    work: impl Fn(u64, u64, &mut Vec<u8>) -> Result<(), (u64, SealError)> + Sync,
) -> Result<(), SealError> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Result<(), (u64, SealError)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n.min(total.div_ceil(group) as usize).max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut buf = Vec::new();
                    let r = loop {
                        let first = next.fetch_add(group, Ordering::Relaxed);
                        if first >= total || failed.load(Ordering::Relaxed) {
                            break Ok(());
                        }
                        if let Err(e) = work(first, (first + group).min(total), &mut buf) {
                            failed.store(true, Ordering::Relaxed);
                            break Err(e);
                        }
                    };
                    zeroize::Zeroize::zeroize(&mut buf);
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err((0, SealError::Invalid("worker panicked".into()))))
            })
            .collect()
    });
    match results
        .into_iter()
        .filter_map(Result::err)
        .min_by_key(|(i, _)| *i)
    {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Reads the input being sealed at `offset` into `buf`; a short read means the file shrank
/// below the `len` bytes it had when sealing began.
#[cfg(unix)]
pub(crate) fn read_input_at(
    input: &std::fs::File,
    buf: &mut [u8],
    offset: u64,
    len: u64,
) -> Result<(), SealError> {
    use std::os::unix::fs::FileExt;
    input
        .read_exact_at(buf, offset)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => SealError::Invalid(format!(
                "the input shrank below {len} bytes while it was being sealed"
            )),
            _ => e.into(),
        })
}

/// Refuses a sealed result if the input no longer has the `len` bytes it had when sealing began.
#[cfg(unix)]
pub(crate) fn check_unchanged(input: &std::fs::File, len: u64) -> Result<(), SealError> {
    if input.metadata()?.len() != len {
        return Err(SealError::Invalid(format!(
            "the input changed size while it was being sealed (was {len} bytes)"
        )));
    }
    Ok(())
}

/// Seals the regular file `input` into `output` (an empty file), bound to `name`, with
/// positional I/O: chunks are independent, so every thread reads, encrypts and writes its own
/// chunks at their final offsets, and the kernel's copies run on every core as well as the
/// encryption. Produces the same format as [`seal`]; `progress` is told of plaintext bytes done.
#[cfg(unix)]
pub fn seal_file(
    key: &SealKey,
    name: &str,
    input: &std::fs::File,
    output: &std::fs::File,
    opts: &SealOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, SealError> {
    use std::os::unix::fs::FileExt;
    let len = input.metadata()?.len();
    let (header, keys) = new_header(key, name, len, opts)?;
    output.write_all_at(&header, 0)?;
    let chunk = 1u64 << opts.chunk_log2;
    let total = len.div_ceil(chunk).max(1);
    let at = |i: u64| header.len() as u64 + i * (chunk + TAG as u64);
    let group = (GROUP_BYTES as u64 / chunk).max(1);
    par_groups(total, group, threads(opts.threads), |first, last, buf| {
        let fail = |e: SealError| (first, e);
        let mut pos = 0;
        for i in first..last {
            let n = (len - i * chunk).min(chunk) as usize;
            if buf.len() < pos + n + TAG {
                buf.resize(pos + n + TAG, 0);
            }
            read_input_at(input, &mut buf[pos..pos + n], i * chunk, len).map_err(fail)?;
            let tag = keys
                .aead
                .seal_in_place_separate_tag(
                    nonce(&keys.prefix, i, i + 1 == total).map_err(fail)?,
                    Aad::from(&header),
                    &mut buf[pos..pos + n],
                )
                .map_err(|_| fail(SealError::Invalid("encryption failed".into())))?;
            buf[pos + n..pos + n + TAG].copy_from_slice(tag.as_ref());
            pos += n + TAG;
        }
        output
            .write_all_at(&buf[..pos], at(first))
            .map_err(|e| fail(e.into()))?;
        progress(((last - first) * chunk).min(len - first * chunk));
        Ok(())
    })?;
    check_unchanged(input, len)?;
    Ok(at(total) - (total * chunk - len))
}

/// Unseals the regular file `input` into `output` (an empty file) with positional I/O on every
/// core, like [`seal_file`]. Plaintext of a chunk is written only after it authenticates; on
/// error the caller must discard `output` (the CLI writes to a temporary file it removes).
#[cfg(unix)]
pub fn unseal_file(
    key: &SealKey,
    input: &std::fs::File,
    output: &std::fs::File,
    expected_name: Option<&str>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<SealedHeader, SealError> {
    use std::os::unix::fs::FileExt;
    let mut head = input;
    std::io::Seek::seek(&mut head, std::io::SeekFrom::Start(0))?;
    let (h, keys) = open_header(key, &mut head, expected_name)?;
    let chunk = h.chunk_size() as u64;
    let total = h.chunks();
    let len = h.plaintext_len;
    let hl = h.raw.len() as u64;
    let sealed = |i: u64| hl + i * (chunk + TAG as u64);
    let want = sealed(total) - (total * chunk - len);
    let have = input.metadata()?.len();
    if have < want {
        let i = (have.saturating_sub(hl) / (chunk + TAG as u64)).min(total - 1);
        let n = (len - i * chunk).min(chunk) + TAG as u64;
        return Err(SealError::Tampered(format!(
            "truncated: chunk {i} of {total} has {} of {n} bytes",
            have.saturating_sub(sealed(i)).min(n)
        )));
    }
    if have > want {
        return Err(SealError::Tampered("data after the last chunk".into()));
    }
    let group = (GROUP_BYTES as u64 / chunk).max(1);
    par_groups(total, group, threads(0), |first, last, buf| {
        let span = (sealed(last).min(want) - sealed(first)) as usize;
        if buf.len() < span {
            buf.resize(span, 0);
        }
        input
            .read_exact_at(&mut buf[..span], sealed(first))
            .map_err(|e| (first, e.into()))?;
        let mut pos = 0;
        for i in first..last {
            let n = (len - i * chunk).min(chunk) as usize;
            let fail = |e: SealError| (i, e);
            keys.aead
                .open_in_place(
                    nonce(&keys.prefix, i, i + 1 == total).map_err(fail)?,
                    Aad::from(&h.raw),
                    &mut buf[pos..pos + n + TAG],
                )
                .map_err(|_| {
                    fail(SealError::Tampered(format!(
                        "chunk {i} does not authenticate (modified, moved, or from another file)"
                    )))
                })?;
            output
                .write_all_at(&buf[pos..pos + n], i * chunk)
                .map_err(|e| fail(e.into()))?;
            pos += n + TAG;
        }
        progress(((last - first) * chunk).min(len - first * chunk));
        Ok(())
    })?;
    Ok(h)
}

/// Unseals a whole file held in memory into a zeroizing buffer.
pub fn unseal_to_vec(
    key: &SealKey,
    sealed: &[u8],
    expected_name: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let (h, _) = SealedHeader::parse(sealed)?;
    let len = usize::try_from(h.plaintext_len)
        .map_err(|_| SealError::Invalid("file too large for memory".into()))?;
    if (len as u64) > (sealed.len() as u64) {
        return Err(SealError::Tampered(format!(
            "truncated: {len} plaintext bytes declared, file has {}",
            sealed.len()
        )));
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    unseal_into(key, sealed, &mut out, expected_name)?;
    Ok(out)
}

/// Unseals straight into `buf`, which must be exactly the plaintext length.
pub fn unseal_into(
    key: &SealKey,
    sealed: &[u8],
    buf: &mut [u8],
    expected_name: Option<&str>,
) -> Result<SealedHeader, SealError> {
    struct Slice<'a>(&'a mut [u8], usize);
    impl Write for Slice<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let end = self.1 + b.len();
            if end > self.0.len() {
                return Err(std::io::Error::other("plaintext larger than the buffer"));
            }
            self.0[self.1..end].copy_from_slice(b);
            self.1 = end;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (peek, _) = SealedHeader::parse(sealed)?;
    if peek.plaintext_len != buf.len() as u64 {
        return Err(SealError::Invalid(format!(
            "buffer of {} bytes for {} bytes of plaintext",
            buf.len(),
            peek.plaintext_len
        )));
    }
    let mut w = Slice(buf, 0);
    let r = unseal(key, sealed, &mut w, expected_name);
    if r.is_err() {
        w.0.iter_mut().for_each(|b| *b = 0);
    }
    r
}
