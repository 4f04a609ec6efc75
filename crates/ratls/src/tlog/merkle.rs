//! The Merkle tree of RFC 9162 (Certificate Transparency 2.0), section 2.1: its hashes, its
//! right edge for appending, and inclusion and consistency proofs, made and verified.
//!
//! RFC 9162 section 2.1.1: the hash of an empty tree is SHA-256 of nothing; a leaf's hash is
//! `SHA-256(0x00 || entry)`; an inner node's is `SHA-256(0x01 || left || right)`; a tree of
//! `n > 1` leaves splits at `k`, the largest power of two smaller than `n`.

use super::TlogError;

/// A SHA-256 hash: a leaf's, a node's or a tree's root.
pub type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        c.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// The hash of a leaf: `SHA-256(0x00 || entry)` (RFC 9162 section 2.1.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    sha256(&[&[0x00], entry])
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)` (RFC 9162 section 2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The root of the empty tree: SHA-256 of the empty string (RFC 9162 section 2.1.1).
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The largest power of two smaller than `n` (`n > 1`): where RFC 9162 splits a tree.
fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH: the root of the tree over `leaves` (leaf hashes), RFC 9162 section 2.1.1.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The tree's right edge: the roots of its perfect subtrees, largest first. Enough to append
/// a leaf, to give the new leaf's inclusion proof, and to compute the root, in memory that
/// grows with the logarithm of the size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactTree {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash and returns its inclusion proof in the tree of the new size.
    ///
    /// The last leaf's audit path (RFC 9162 section 2.1.3.1, PATH) is the roots of the perfect
    /// subtrees to its left, smallest first: exactly the edge before the append.
    pub fn push(&mut self, leaf: Hash) -> Vec<Hash> {
        let proof: Vec<Hash> = self.peaks.iter().rev().copied().collect();
        let mut h = leaf;
        let mut s = self.size;
        // Each trailing one bit of the old size is a perfect subtree the new leaf completes.
        while s & 1 == 1 {
            if let Some(left) = self.peaks.pop() {
                h = node_hash(&left, &h);
            }
            s >>= 1;
        }
        self.peaks.push(h);
        self.size += 1;
        proof
    }

    /// The root hash (MTH) of the tree.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// `PATH(m, D[n])`: the inclusion proof of leaf `index` in the tree over `leaves` (RFC 9162
/// section 2.1.3.1), from the leaf's sibling up.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, TlogError> {
    let m = usize::try_from(index).unwrap_or(usize::MAX);
    if m >= leaves.len() {
        return Err(TlogError::Proof(format!(
            "entry {index} is not in a tree of {} entries",
            leaves.len()
        )));
    }
    let mut out = Vec::new();
    path(m, leaves, &mut out);
    Ok(out)
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// The root of the tree over `leaves` and the inclusion proof of every leaf, in one pass:
/// O(n) hashes for the tree and O(log n) copies per proof, where asking `inclusion_proof` for
/// each leaf would hash O(n) per leaf. The tree is built level by level, pairing neighbours
/// and carrying a level's odd last node up unhashed; that is the tree RFC 9162 section 2.1.1
/// defines by splitting at the largest power of two (each split's left part is a perfect tree
/// of whole pairs, so pairing from the left never crosses a split).
pub fn root_and_inclusion_proofs(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    if leaves.is_empty() {
        return (empty_root(), Vec::new());
    }
    let mut levels: Vec<Vec<Hash>> = vec![leaves.to_vec()];
    while levels.last().is_some_and(|l| l.len() > 1) {
        let below = levels.last().map(Vec::as_slice).unwrap_or_default();
        let up = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                // chunks(2) yields one or two: the odd last node, carried up.
                _ => pair[0],
            })
            .collect();
        levels.push(up);
    }
    let root = levels
        .last()
        .and_then(|l| l.first())
        .copied()
        .unwrap_or_else(empty_root);
    let proofs = (0..leaves.len())
        .map(|leaf| {
            let mut i = leaf;
            let mut path = Vec::with_capacity(levels.len());
            for level in &levels[..levels.len() - 1] {
                if let Some(sibling) = level.get(i ^ 1) {
                    path.push(*sibling);
                }
                i >>= 1;
            }
            path
        })
        .collect();
    (root, proofs)
}

/// `PROOF(m, D[n])`: the consistency proof between the tree of the first `old_size` leaves and
/// the tree over all of `leaves` (RFC 9162 section 2.1.4.1).
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, TlogError> {
    let m = usize::try_from(old_size).unwrap_or(usize::MAX);
    if m > leaves.len() {
        return Err(TlogError::Proof(format!(
            "tree size {old_size} is larger than the log's {}",
            leaves.len()
        )));
    }
    let mut out = Vec::new();
    if m > 0 && m < leaves.len() {
        subproof(m, leaves, true, &mut out);
    }
    Ok(out)
}

fn subproof(m: usize, d: &[Hash], whole: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !whole {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], whole, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// The root an inclusion proof leads to (RFC 9162 section 2.1.3.2, steps 1 to 4), or why the
/// proof cannot be a proof for `index` in a tree of `size` leaves.
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, TlogError> {
    if index >= size {
        return Err(TlogError::Proof(format!(
            "entry {index} is not in a tree of size {size}"
        )));
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(TlogError::Proof(format!(
                "the inclusion proof of entry {index} in tree size {size} has {} hashes, more than the tree's height",
                proof.len()
            )));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(TlogError::Proof(format!(
            "the inclusion proof of entry {index} in tree size {size} has {} hashes, fewer than the path needs",
            proof.len()
        )));
    }
    Ok(r)
}

/// Verifies that `leaf` is entry `index` of the tree of `size` leaves whose root is `root`
/// (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), TlogError> {
    let got = root_from_inclusion(index, size, leaf, proof)?;
    if &got != root {
        return Err(TlogError::Proof(format!(
            "the inclusion proof of entry {index} leads to root {}, not to the checkpoint's {} (tree size {size})",
            hex::encode(got),
            hex::encode(root)
        )));
    }
    Ok(())
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root` (RFC 9162 section 2.1.4.2). Equal sizes need equal
/// roots and an empty proof; every tree extends the empty one.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), TlogError> {
    let fail = |why: String| {
        Err(TlogError::Proof(format!(
            "consistency of tree size {old_size} with tree size {new_size}: {why}"
        )))
    };
    if old_size > new_size {
        return fail("the old tree is larger than the new one".into());
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return fail(format!("expected no hashes, got {}", proof.len()));
        }
        if old_size == new_size && old_root != new_root {
            return fail(format!(
                "two different roots for the same size: {} and {}",
                hex::encode(old_root),
                hex::encode(new_root)
            ));
        }
        return Ok(());
    }
    if proof.is_empty() {
        return fail("the proof is empty".into());
    }
    // Step 2: a perfect old tree is its own first node.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return fail(format!("{} hashes are more than needed", proof.len()));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return fail(format!("{} hashes are fewer than needed", proof.len()));
    }
    if &fr != old_root {
        return fail(format!(
            "the proof leads to old root {}, not {}",
            hex::encode(fr),
            hex::encode(old_root)
        ));
    }
    if &sr != new_root {
        return fail(format!(
            "the proof leads to new root {}, not {}",
            hex::encode(sr),
            hex::encode(new_root)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        out.copy_from_slice(&hex::decode(s).unwrap());
        out
    }

    // The leaves and roots of the RFC 6962/9162 test tree as published by transparency-dev
    // (github.com/transparency-dev/merkle, testonly/constants.go: LeafInputs, RootHashes) and
    // Certificate Transparency before it.
    fn leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|x| leaf_hash(&hex::decode(x).unwrap()))
        .collect()
    }

    #[test]
    fn all_inclusion_proofs_at_once_match_rfc_9162_one_at_a_time() {
        for n in 1..=70usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let (r, proofs) = root_and_inclusion_proofs(&leaves);
            assert_eq!(r, root(&leaves), "root of {n}");
            assert_eq!(proofs.len(), n);
            for (i, p) in proofs.iter().enumerate() {
                assert_eq!(
                    p,
                    &inclusion_proof(&leaves, i as u64).unwrap(),
                    "{i} of {n}"
                );
                verify_inclusion(i as u64, n as u64, &leaves[i], p, &r).unwrap();
            }
        }
        assert_eq!(root_and_inclusion_proofs(&[]), (empty_root(), vec![]));
    }

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn roots_match_the_published_vectors_whole_and_appended() {
        let l = leaves();
        let mut t = CompactTree::new();
        assert_eq!(t.root(), h(ROOTS[0]));
        for n in 0..=8 {
            assert_eq!(root(&l[..n]), h(ROOTS[n]), "size {n}");
            if n > 0 {
                let proof = t.push(l[n - 1]);
                assert_eq!(t.root(), h(ROOTS[n]), "compact size {n}");
                // The proof the append gives is PATH of the last leaf.
                assert_eq!(proof, inclusion_proof(&l[..n], n as u64 - 1).unwrap());
                verify_inclusion(n as u64 - 1, n as u64, &l[n - 1], &proof, &h(ROOTS[n])).unwrap();
            }
        }
    }

    // transparency-dev/merkle proof/verify_test.go: inclusionProofs (1-based leaf there).
    #[test]
    fn inclusion_proofs_match_the_published_vectors() {
        let l = leaves();
        let vectors: [(u64, usize, &[&str]); 4] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, want) in vectors {
            let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
            let got = inclusion_proof(&l[..size], index).unwrap();
            assert_eq!(got, want, "entry {index} size {size}");
            let r = h(ROOTS[size]);
            verify_inclusion(index, size as u64, &l[index as usize], &got, &r).unwrap();
            // A proof for another place, another size, or with a hash changed fails.
            assert!(
                verify_inclusion(index ^ 1, size as u64, &l[index as usize], &got, &r).is_err()
            );
            assert!(
                verify_inclusion(index, size as u64 * 2, &l[index as usize], &got, &r).is_err()
            );
            for i in 0..got.len() {
                let mut bad = got.clone();
                bad[i][0] ^= 8;
                assert!(
                    verify_inclusion(index, size as u64, &l[index as usize], &bad, &r).is_err()
                );
            }
            assert!(
                verify_inclusion(index, size as u64, &l[index as usize], &got[1..], &r).is_err()
            );
            let mut longer = got.clone();
            longer.push(r);
            assert!(verify_inclusion(index, size as u64, &l[index as usize], &longer, &r).is_err());
        }
        assert!(verify_inclusion(0, 0, &l[0], &[], &empty_root()).is_err());
    }

    // transparency-dev/merkle proof/verify_test.go: consistencyProofs.
    #[test]
    fn consistency_proofs_match_the_published_vectors() {
        let l = leaves();
        let vectors: [(u64, usize, &[&str]); 4] = [
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (m, n, want) in vectors {
            let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
            let got = consistency_proof(&l[..n], m).unwrap();
            assert_eq!(got, want, "{m} -> {n}");
            let (r1, r2) = (h(ROOTS[m as usize]), h(ROOTS[n]));
            verify_consistency(m, n as u64, &r1, &r2, &got).unwrap();
            assert!(verify_consistency(m, n as u64, &r2, &r1, &got).is_err());
            assert!(verify_consistency(m + 1, n as u64, &r1, &r2, &got).is_err());
            assert!(verify_consistency(m, n as u64, &r1, &r2, &got[..got.len() - 1]).is_err());
            for i in 0..got.len() {
                let mut bad = got.clone();
                bad[i][0] ^= 16;
                assert!(verify_consistency(m, n as u64, &r1, &r2, &bad).is_err());
            }
        }
        // Every pair of sizes of the test tree, made and checked.
        for n in 0..=8usize {
            for (m, old_root) in ROOTS.iter().enumerate().take(n + 1) {
                let p = consistency_proof(&l[..n], m as u64).unwrap();
                verify_consistency(m as u64, n as u64, &h(old_root), &h(ROOTS[n]), &p).unwrap();
            }
        }
        assert!(verify_consistency(2, 1, &h(ROOTS[2]), &h(ROOTS[1]), &[]).is_err());
        assert!(verify_consistency(3, 3, &h(ROOTS[3]), &h(ROOTS[4]), &[]).is_err());
    }

    #[test]
    fn a_larger_tree_agrees_with_itself() {
        let l: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut t = CompactTree::new();
        for (i, leaf) in l.iter().enumerate() {
            let p = t.push(*leaf);
            verify_inclusion(i as u64, i as u64 + 1, leaf, &p, &t.root()).unwrap();
        }
        assert_eq!(t.root(), root(&l));
        for &(m, i) in &[(1u64, 0u64), (37, 36), (128, 5), (255, 254), (299, 150)] {
            let p = inclusion_proof(&l, i).unwrap();
            verify_inclusion(i, 300, &l[i as usize], &p, &t.root()).unwrap();
            let c = consistency_proof(&l, m).unwrap();
            verify_consistency(m, 300, &root(&l[..m as usize]), &t.root(), &c).unwrap();
        }
    }
}
