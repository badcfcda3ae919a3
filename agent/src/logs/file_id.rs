//! Which file, and whether it still holds the content it held: the (device, inode) pair that
//! names a file across renames, and the fingerprint of its head that proves a read position
//! still points into the same content (see [`super::checkpoint`]).

use crate::fnv::fnv1a;

/// Where an event's bytes came from, so that an acknowledged batch can move a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device number (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
}

/// Bytes at the start of a file that make up its [`Fingerprint`].
pub const HEAD_BYTES: usize = 256;

/// A file's first bytes (up to [`HEAD_BYTES`]), hashed: proof that a checkpoint's offset still
/// points into the content it was taken of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// How many of the file's first bytes are hashed (less than [`HEAD_BYTES`] while the file
    /// was shorter).
    pub len: u32,
    /// 64-bit FNV-1a of those bytes (accidental matches only; not security relevant).
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of a file whose first bytes are `head` (at most [`HEAD_BYTES`] are used).
    #[must_use]
    pub fn of(head: &[u8]) -> Self {
        let head = &head[..head.len().min(HEAD_BYTES)];
        Self {
            len: u32::try_from(head.len()).expect("at most HEAD_BYTES"),
            hash: fnv1a(head),
        }
    }

    /// Whether a file starting with `head` (its first bytes, at least as many as were
    /// fingerprinted when it was that long) is the fingerprinted file.
    #[must_use]
    pub fn matches(&self, head: &[u8]) -> bool {
        let len = self.len as usize;
        head.len() >= len && fnv1a(&head[..len]) == self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fingerprint_matches_only_the_same_head() {
        let fp = Fingerprint::of(b"000000001 a\n");
        assert!(fp.matches(b"000000001 a\n000000002 b\n")); // grown: same head
        assert!(!fp.matches(b"000000012500 x\n")); // truncated and rewritten
        assert!(!fp.matches(b"000000001")); // shorter than what was fingerprinted
        let long = vec![b'x'; 1000];
        assert_eq!(Fingerprint::of(&long).len as usize, HEAD_BYTES);
        assert!(Fingerprint::of(&long).matches(&long[..HEAD_BYTES]));
    }
}
