//! Gramine protected files, as `gramine-sgx-pf-crypt` writes them (Gramine
//! `common/src/protected_files/protected_files_format.h` and `protected_files.c`).
//!
//! 4 KiB nodes: node 0 is the metadata node (plaintext header, then a blob encrypted with a key
//! derived by AES-CMAC from the 16-byte wrap key and a random nonce); the blob holds the bound
//! path, the size, the root Merkle-tree node's key and MAC, and the first 3072 bytes of data.
//! Further data lives in 4 KiB data nodes, each encrypted with AES-128-GCM under a fresh key
//! kept, with its MAC, in a Merkle-tree (MHT) node: 96 data slots and 32 child-MHT slots each.
//! IVs are all zero (every node key is fresh). Layout: metadata, MHT0, 96 data, MHT1, ...

use std::io::{Read, Seek, SeekFrom, Write};

use aes::Aes128;
use cmac::{Cmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM};
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use crate::key::SealKey;
use crate::stream::read_full;
use crate::SealError;

/// Node size.
pub const NODE: usize = 4096;
/// `file_id`: "GRAFS_PF" read as a little-endian u64.
pub const FILE_ID: [u8; 8] = *b"GRAFS_PF";
/// Plaintext bytes kept inside the metadata node.
pub const MD_USER_DATA: usize = 3072;
/// Longest bound path including its NUL.
pub const PATH_MAX: usize = 772;
const BLOB: usize = 3884;
const DATA_PER_MHT: usize = 96;
const CHILD_PER_MHT: usize = 32;
const KDF_LABEL: &[u8] = b"SGX-PROTECTED-FS-METADATA-KEY";
/// Largest file accepted when reading (bounds memory for the tree).
pub const MAX_FILE: u64 = 64 * 1024 * 1024 * 1024;

/// Format major version: 1 (Gramine up to 1.8) or 2 (Gramine 1.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PfVersion {
    /// Major version 1.
    V1,
    /// Major version 2 (adds a feature-flags byte).
    V2,
}

fn fmt_err(reason: impl Into<String>) -> SealError {
    SealError::Format {
        format: "gramine",
        reason: reason.into(),
    }
}

fn key16(key: &SealKey) -> Result<&[u8], SealError> {
    if key.len() != 16 {
        return Err(SealError::Key(format!(
            "Gramine protected files use 16-byte keys, this one has {} bytes",
            key.len()
        )));
    }
    Ok(key.bytes())
}

/// metadata key = AES-128-CMAC(kdk, u32 1 || label[64] || nonce[32] || u32 128).
fn metadata_key(kdk: &[u8], nonce: &[u8; 32]) -> Result<Zeroizing<[u8; 16]>, SealError> {
    let mut msg = [0u8; 104];
    msg[..4].copy_from_slice(&1u32.to_le_bytes());
    msg[4..4 + KDF_LABEL.len()].copy_from_slice(KDF_LABEL);
    msg[68..100].copy_from_slice(nonce);
    msg[100..104].copy_from_slice(&128u32.to_le_bytes());
    let mut mac =
        <Cmac<Aes128> as Mac>::new_from_slice(kdk).map_err(|_| SealError::Key("bad key".into()))?;
    mac.update(&msg);
    let mut out = Zeroizing::new([0u8; 16]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

fn gcm(key: &[u8]) -> Result<LessSafeKey, SealError> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, key).map_err(|_| SealError::Key("bad node key".into()))?,
    ))
}

fn zero_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0u8; 12])
}

fn encrypt(key: &[u8], data: &mut [u8]) -> Result<[u8; 16], SealError> {
    let tag = gcm(key)?
        .seal_in_place_separate_tag(zero_nonce(), Aad::empty(), data)
        .map_err(|_| SealError::Invalid("encryption failed".into()))?;
    let mut t = [0u8; 16];
    t.copy_from_slice(tag.as_ref());
    Ok(t)
}

fn decrypt(key: &[u8], data: &mut [u8], mac: &[u8], what: &str) -> Result<(), SealError> {
    let tag: [u8; 16] = mac
        .try_into()
        .map_err(|_| fmt_err(format!("{what}: MAC of {} bytes", mac.len())))?;
    gcm(key)?
        .open_in_place_separate_tag(zero_nonce(), Aad::empty(), Tag::from(tag), data, 0..)
        .map_err(|_| SealError::Tampered(format!("{what} does not authenticate")))?;
    Ok(())
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, SealError> {
    let mut b = Zeroizing::new([0u8; N]);
    ring::rand::SystemRandom::new()
        .fill(&mut b[..])
        .map_err(|_| SealError::Key("no randomness".into()))?;
    Ok(b)
}

/// Physical node index of data node `d`.
fn data_node_index(d: u64) -> u64 {
    d + 2 + d / DATA_PER_MHT as u64
}

/// Physical node index of MHT node `m`.
fn mht_node_index(m: u64) -> u64 {
    1 + 97 * m
}

fn counts(size: u64) -> (u64, u64) {
    if size <= MD_USER_DATA as u64 {
        return (0, 0);
    }
    let data = (size - MD_USER_DATA as u64).div_ceil(NODE as u64);
    let mht = data.div_ceil(DATA_PER_MHT as u64);
    (data, mht)
}

/// A tree node's key and MAC: the root's come from the metadata.
type NodeKey = (Zeroizing<[u8; 16]>, [u8; 16]);

/// Where tree node `m` (not the root) keeps its key and MAC: its parent tree node and the byte
/// offset of the slot there (after the 96 data-node slots).
fn child_slot(m: u64) -> (usize, usize) {
    let c = (m - 1) as usize;
    (c / CHILD_PER_MHT, (DATA_PER_MHT + c % CHILD_PER_MHT) * 32)
}

/// Encrypts the tree nodes children before parents under fresh keys, each child's key and MAC
/// going into its parent's slot, and hands each encrypted node to `write` with its file offset.
/// Returns the root's key and MAC (they go into the metadata).
fn seal_tree(
    mht: &mut [Zeroizing<Vec<u8>>],
    mut write: impl FnMut(u64, &[u8]) -> Result<(), SealError>,
) -> Result<NodeKey, SealError> {
    let mut root = (Zeroizing::new([0u8; 16]), [0u8; 16]);
    for m in (0..mht.len()).rev() {
        let k = random::<16>()?;
        let mut plain = mht[m].clone();
        let mac = encrypt(&k[..], &mut plain)?;
        write(mht_node_index(m as u64) * NODE as u64, &plain)?;
        if m == 0 {
            root = (k, mac);
        } else {
            let (parent, slot) = child_slot(m as u64);
            mht[parent][slot..slot + 16].copy_from_slice(&k[..]);
            mht[parent][slot + 16..slot + 32].copy_from_slice(&mac);
        }
    }
    Ok(root)
}

/// The key and MAC of tree node `m`, from the root or from its (already decrypted) parent.
fn tree_node_key(mht: &[Zeroizing<Vec<u8>>], root: &NodeKey, m: u64) -> Result<NodeKey, SealError> {
    if m == 0 {
        return Ok((root.0.clone(), root.1));
    }
    let (parent, slot) = child_slot(m);
    let p = mht
        .get(parent)
        .ok_or_else(|| fmt_err("tree node out of order"))?;
    let mut k = Zeroizing::new([0u8; 16]);
    k.copy_from_slice(&p[slot..slot + 16]);
    let mac = p[slot + 16..slot + 32]
        .try_into()
        .map_err(|_| fmt_err("tree slot"))?;
    Ok((k, mac))
}

fn check_path(path: &str) -> Result<(), SealError> {
    if path.len() + 1 > PATH_MAX {
        return Err(SealError::Invalid(format!(
            "path of {} bytes is longer than Gramine's 771",
            path.len()
        )));
    }
    Ok(())
}

/// The metadata node: file id, version, KDF nonce, MAC, and the encrypted blob (path, size,
/// root tree node key and MAC, the first 3072 plaintext bytes).
fn metadata_node(
    kdk: &[u8],
    path: &str,
    size: u64,
    root: &NodeKey,
    head: &[u8],
    version: PfVersion,
) -> Result<Vec<u8>, SealError> {
    let first = head.len();
    let mut blob = Zeroizing::new(vec![0u8; BLOB]);
    blob[..path.len()].copy_from_slice(path.as_bytes());
    blob[772..780].copy_from_slice(&size.to_le_bytes());
    blob[780..796].copy_from_slice(&root.0[..]);
    blob[796..812].copy_from_slice(&root.1);
    blob[812..812 + first].copy_from_slice(&head[..first]);
    let nonce = random::<32>()?;
    let mkey = metadata_key(kdk, &nonce)?;
    let mac = encrypt(&mkey[..], &mut blob)?;
    let mut meta = vec![0u8; NODE];
    meta[..8].copy_from_slice(&FILE_ID);
    let blob_at = match version {
        PfVersion::V1 => {
            meta[8] = 1;
            58
        }
        PfVersion::V2 => {
            meta[8] = 2;
            59
        }
    };
    meta[10..42].copy_from_slice(&nonce[..]);
    meta[42..58].copy_from_slice(&mac);
    meta[blob_at..blob_at + BLOB].copy_from_slice(&blob);
    Ok(meta)
}

/// Encrypts exactly `size` bytes of `input` into `output` as a protected file bound to `path`.
/// The output is written once front to back, then the tree nodes and the metadata are filled in
/// by seeking back; memory use is about 1% of the file size (the tree).
pub fn encrypt_file<W: Write + Seek>(
    key: &SealKey,
    path: &str,
    size: u64,
    mut input: impl Read,
    mut output: W,
    version: PfVersion,
) -> Result<(), SealError> {
    let kdk = key16(key)?;
    check_path(path)?;
    let (n_data, n_mht) = counts(size);
    let mut head = Zeroizing::new(vec![0u8; MD_USER_DATA]);
    let first = size.min(MD_USER_DATA as u64) as usize;
    if read_full(&mut input, &mut head[..first])? != first {
        return Err(SealError::Invalid(format!(
            "input is shorter than the declared {size} bytes"
        )));
    }
    // MHT plaintexts: 128 slots of key(16) || mac(16).
    let mut mht: Vec<Zeroizing<Vec<u8>>> = (0..n_mht)
        .map(|_| Zeroizing::new(vec![0u8; NODE]))
        .collect();
    output.seek(SeekFrom::Start(0))?;
    output.write_all(&[0u8; NODE])?;
    let mut remaining = size - first as u64;
    let mut node = Zeroizing::new(vec![0u8; NODE]);
    for d in 0..n_data {
        if d % DATA_PER_MHT as u64 == 0 {
            output.write_all(&[0u8; NODE])?; // placeholder for MHT d/96
        }
        let n = remaining.min(NODE as u64) as usize;
        node.iter_mut().for_each(|b| *b = 0);
        if read_full(&mut input, &mut node[..n])? != n {
            return Err(SealError::Invalid(format!(
                "input is shorter than the declared {size} bytes"
            )));
        }
        remaining -= n as u64;
        let k = random::<16>()?;
        let mac = encrypt(&k[..], &mut node)?;
        let m = (d / DATA_PER_MHT as u64) as usize;
        let slot = (d % DATA_PER_MHT as u64) as usize * 32;
        mht[m][slot..slot + 16].copy_from_slice(&k[..]);
        mht[m][slot + 16..slot + 32].copy_from_slice(&mac);
        output.write_all(&node)?;
    }
    let mut probe = [0u8; 1];
    if read_full(&mut input, &mut probe)? != 0 {
        return Err(SealError::Invalid(format!(
            "input is longer than the declared {size} bytes"
        )));
    }
    let root = seal_tree(&mut mht, |at, node| {
        output.seek(SeekFrom::Start(at))?;
        output.write_all(node)?;
        Ok(())
    })?;
    let meta = metadata_node(kdk, path, size, &root, &head[..first], version)?;
    output.seek(SeekFrom::Start(0))?;
    output.write_all(&meta)?;
    output.seek(SeekFrom::Start((1 + n_data + n_mht) * NODE as u64))?;
    output.flush()?;
    Ok(())
}

/// Plaintext offset of data node `d` (the first 3072 bytes live in the metadata node).
#[cfg(unix)]
fn data_offset(d: u64) -> u64 {
    MD_USER_DATA as u64 + d * NODE as u64
}

/// Encrypts the regular file `input` into `output` (an empty file) as a protected file bound to
/// `path`, with positional I/O on every core: each group of 96 data nodes (one Merkle tree leaf
/// node's children) is read, encrypted under fresh random node keys and written at its final
/// offset by one thread; the tree nodes (about 1% of the file) and the metadata follow. The
/// result is the same format as [`encrypt_file`].
#[cfg(unix)]
pub fn encrypt_file_at(
    key: &SealKey,
    path: &str,
    input: &std::fs::File,
    output: &std::fs::File,
    version: PfVersion,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), SealError> {
    use std::os::unix::fs::FileExt;
    key16(key)?;
    check_path(path)?;
    let size = input.metadata()?.len();
    if size > MAX_FILE {
        return Err(SealError::Invalid(format!(
            "{size} bytes is larger than the {MAX_FILE} bytes supported"
        )));
    }
    let mut head = Zeroizing::new(vec![0u8; MD_USER_DATA]);
    let first = size.min(MD_USER_DATA as u64) as usize;
    crate::stream::read_input_at(input, &mut head[..first], 0, size)?;
    let (n_data, n_mht) = counts(size);
    let leaves: Vec<std::sync::Mutex<Zeroizing<Vec<u8>>>> = (0..n_mht)
        .map(|_| std::sync::Mutex::new(Zeroizing::new(vec![0u8; NODE])))
        .collect();
    crate::stream::par_groups(n_mht, 1, crate::stream::threads(0), |m, _, buf| {
        let fail = |e: SealError| (m, e);
        let d0 = m * DATA_PER_MHT as u64;
        let nodes = (n_data - d0).min(DATA_PER_MHT as u64) as usize;
        let plain = (size - data_offset(d0)).min((nodes * NODE) as u64) as usize;
        buf.clear();
        buf.resize(nodes * NODE, 0);
        crate::stream::read_input_at(input, &mut buf[..plain], data_offset(d0), size)
            .map_err(fail)?;
        // One draw of randomness for all the node keys of the group.
        let mut keys = Zeroizing::new([0u8; 16 * DATA_PER_MHT]);
        ring::rand::SystemRandom::new()
            .fill(&mut keys[..])
            .map_err(|_| fail(SealError::Key("no randomness".into())))?;
        let mut leaf = leaves[m as usize]
            .lock()
            .map_err(|_| fail(SealError::Invalid("worker panicked".into())))?;
        for (i, node) in buf.chunks_exact_mut(NODE).enumerate() {
            let k = &keys[16 * i..16 * i + 16];
            let mac = encrypt(k, node).map_err(fail)?;
            leaf[32 * i..32 * i + 16].copy_from_slice(k);
            leaf[32 * i + 16..32 * i + 32].copy_from_slice(&mac);
        }
        output
            .write_all_at(buf, data_node_index(d0) * NODE as u64)
            .map_err(|e| fail(e.into()))?;
        progress(plain as u64);
        Ok(())
    })?;
    crate::stream::check_unchanged(input, size)?;
    let mut mht: Vec<Zeroizing<Vec<u8>>> = leaves
        .into_iter()
        .map(|l| l.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    let root = seal_tree(&mut mht, |at, node| Ok(output.write_all_at(node, at)?))?;
    let meta = metadata_node(key16(key)?, path, size, &root, &head[..first], version)?;
    output.write_all_at(&meta, 0)?;
    Ok(())
}

/// Decrypts the protected file `input` into `output` (an empty file) with positional I/O on
/// every core, like [`encrypt_file_at`]: the metadata and the tree nodes are read and
/// authenticated first (parents before children), then each group of 96 data nodes is
/// decrypted by one thread and written at its plaintext offset. On error the caller must
/// discard `output`. Refuses exactly what [`decrypt_file`] refuses, with the same messages.
#[cfg(unix)]
pub fn decrypt_file_at(
    key: &SealKey,
    input: &std::fs::File,
    output: &std::fs::File,
    expected_path: Option<&str>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PfInfo, SealError> {
    use std::os::unix::fs::FileExt;
    let have = input.metadata()?.len();
    let mut meta = vec![0u8; NODE];
    let got = have.min(NODE as u64) as usize;
    input.read_exact_at(&mut meta[..got], 0)?;
    if got < NODE {
        return Err(fmt_err(format!(
            "{got} bytes; a protected file is at least one 4096-byte node"
        )));
    }
    let (info, root, head) = open_metadata(key16(key)?, &meta, expected_path)?;
    output.write_all_at(&head, 0)?;
    let size = info.size;
    let (n_data, n_mht) = counts(size);
    let total_nodes = 1 + n_data + n_mht;
    if have < total_nodes * NODE as u64 {
        let p = have / NODE as u64;
        return Err(SealError::Tampered(format!(
            "truncated: node {p} of {total_nodes} has {} of 4096 bytes",
            have % NODE as u64
        )));
    }
    if have > total_nodes * NODE as u64 {
        return Err(SealError::Tampered("data after the last node".into()));
    }
    let mut mht: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(n_mht as usize);
    for m in 0..n_mht {
        let (k, mac) = tree_node_key(&mht, &root, m)?;
        let mut node = Zeroizing::new(vec![0u8; NODE]);
        input.read_exact_at(&mut node, mht_node_index(m) * NODE as u64)?;
        decrypt(&k[..], &mut node, &mac, &format!("Merkle tree node {m}"))?;
        mht.push(node);
    }
    crate::stream::par_groups(n_mht, 1, crate::stream::threads(0), |m, _, buf| {
        let d0 = m * DATA_PER_MHT as u64;
        let nodes = (n_data - d0).min(DATA_PER_MHT as u64) as usize;
        buf.clear();
        buf.resize(nodes * NODE, 0);
        input
            .read_exact_at(buf, data_node_index(d0) * NODE as u64)
            .map_err(|e| (d0, e.into()))?;
        let leaf = &mht[m as usize];
        for (i, node) in buf.chunks_exact_mut(NODE).enumerate() {
            let d = d0 + i as u64;
            decrypt(
                &leaf[32 * i..32 * i + 16],
                node,
                &leaf[32 * i + 16..32 * i + 32],
                &format!("data node {d}"),
            )
            .map_err(|e| (d, e))?;
        }
        let plain = (size - data_offset(d0)).min((nodes * NODE) as u64) as usize;
        output
            .write_all_at(&buf[..plain], data_offset(d0))
            .map_err(|e| (d0, e.into()))?;
        progress(plain as u64);
        Ok(())
    })?;
    Ok(info)
}

/// What the metadata of a protected file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfInfo {
    /// Format major version.
    pub version: PfVersion,
    /// The bound path.
    pub path: String,
    /// Plaintext size.
    pub size: u64,
}

/// Authenticates the metadata node and reads it: what it says, the root tree node's key and
/// MAC, and the first 3072 plaintext bytes (fewer for a smaller file).
fn open_metadata(
    kdk: &[u8],
    meta: &[u8],
    expected_path: Option<&str>,
) -> Result<(PfInfo, NodeKey, Zeroizing<Vec<u8>>), SealError> {
    if meta[..8] != FILE_ID {
        return Err(fmt_err("file_id GRAFS_PF missing"));
    }
    let (version, blob_at) = match meta[8] {
        1 => (PfVersion::V1, 58),
        2 => (PfVersion::V2, 59),
        v => {
            return Err(fmt_err(format!(
                "major version {v} is not supported (1 or 2)"
            )))
        }
    };
    let nonce: [u8; 32] = meta[10..42].try_into().map_err(|_| fmt_err("nonce"))?;
    let mkey = metadata_key(kdk, &nonce)?;
    let mut blob = Zeroizing::new(meta[blob_at..blob_at + BLOB].to_vec());
    decrypt(&mkey[..], &mut blob, &meta[42..58], "metadata (wrong key, or the file was modified)").map_err(|_| {
        SealError::WrongKey("the metadata node does not authenticate under this key (wrong key, or a modified header)".into())
    })?;
    let path_end = blob[..PATH_MAX]
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(PATH_MAX);
    let path = String::from_utf8_lossy(&blob[..path_end]).into_owned();
    if let Some(want) = expected_path {
        if path != want {
            return Err(SealError::NameMismatch {
                found: path,
                expected: want.to_owned(),
            });
        }
    }
    let size = u64::from_le_bytes(blob[772..780].try_into().map_err(|_| fmt_err("size"))?);
    if size > MAX_FILE {
        return Err(fmt_err(format!("size {size} is larger than supported")));
    }
    let root_key: Zeroizing<[u8; 16]> =
        Zeroizing::new(blob[780..796].try_into().map_err(|_| fmt_err("root key"))?);
    let root_mac: [u8; 16] = blob[796..812].try_into().map_err(|_| fmt_err("root mac"))?;
    let first = size.min(MD_USER_DATA as u64) as usize;
    Ok((
        PfInfo {
            version,
            path,
            size,
        },
        (root_key, root_mac),
        Zeroizing::new(blob[812..812 + first].to_vec()),
    ))
}

/// Decrypts a protected file from `input` into `output`, streaming front to back. With
/// `expected_path`, the bound path must match exactly (Gramine's check on open).
pub fn decrypt_file(
    key: &SealKey,
    mut input: impl Read,
    mut output: impl Write,
    expected_path: Option<&str>,
) -> Result<PfInfo, SealError> {
    let kdk = key16(key)?;
    let mut meta = vec![0u8; NODE];
    let got = read_full(&mut input, &mut meta)?;
    if got < NODE {
        return Err(fmt_err(format!(
            "{got} bytes; a protected file is at least one 4096-byte node"
        )));
    }
    let (info, root, head) = open_metadata(kdk, &meta, expected_path)?;
    output.write_all(&head)?;
    let size = info.size;
    let first = head.len();

    let (n_data, n_mht) = counts(size);
    let mut mht: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(n_mht as usize);
    let mut remaining = size - first as u64;
    let mut node = Zeroizing::new(vec![0u8; NODE]);
    let total_nodes = 1 + n_data + n_mht;
    for p in 1..total_nodes {
        let got = read_full(&mut input, &mut node)?;
        if got != NODE {
            return Err(SealError::Tampered(format!(
                "truncated: node {p} of {total_nodes} has {got} of 4096 bytes"
            )));
        }
        let m = (p - 1) / 97;
        let r = (p - 1) % 97;
        if r == 0 {
            let (k, mac) = tree_node_key(&mht, &root, m)?;
            decrypt(&k[..], &mut node, &mac, &format!("Merkle tree node {m}"))?;
            mht.push(Zeroizing::new(node.to_vec()));
        } else {
            let d = m * DATA_PER_MHT as u64 + r - 1;
            debug_assert_eq!(data_node_index(d), p);
            let parent = mht
                .get(m as usize)
                .ok_or_else(|| fmt_err("tree node out of order"))?;
            let slot = (d % DATA_PER_MHT as u64) as usize * 32;
            let (k, mac) = (
                parent[slot..slot + 16].to_vec(),
                parent[slot + 16..slot + 32].to_vec(),
            );
            decrypt(&k, &mut node, &mac, &format!("data node {d}"))?;
            let n = remaining.min(NODE as u64) as usize;
            output.write_all(&node[..n])?;
            remaining -= n as u64;
        }
    }
    let mut probe = [0u8; 1];
    if read_full(&mut input, &mut probe)? != 0 {
        return Err(SealError::Tampered("data after the last node".into()));
    }
    output.flush()?;
    Ok(info)
}

/// True when `b` starts like a protected file.
pub fn looks_like_pf(b: &[u8]) -> bool {
    b.len() >= 9 && b[..8] == FILE_ID && (b[8] == 1 || b[8] == 2)
}
