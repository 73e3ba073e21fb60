//! What quackfs knows of DuckDB's single-file format: enough to tell when DuckDB has completed a
//! checkpoint (see docs/semantics.md, "Checkpoint commits") and where its blocks sit.
//!
//! A DuckDB database file starts with three 4 KiB headers: the main header at 0 (checksum, then
//! the magic `DUCK`), and two database headers at 4096 and 8192. A checkpoint writes its blocks,
//! syncs the file, then writes the *inactive* database header with an iteration one higher than
//! the active one and syncs again; on open the valid header with the higher iteration wins. So
//! the active iteration of the durable bytes names the last completed checkpoint of the file.
//! Each header block is `[checksum: u64][payload: 4088 bytes]`, the payload starting with the
//! iteration (u64, little endian); the checksum is DuckDB's `Checksum` over the payload.
//! Encrypted databases (flag bit 0 of the main header's first flag word) encrypt their database
//! headers, so their iteration cannot be read; but DuckDB writes a database header only when it
//! creates the file and when a checkpoint completes, and each write encrypts with a fresh nonce:
//! for them, a change of the two headers' bytes marks a completed checkpoint (see [`HeaderMark`]
//! and docs/semantics.md).

/// Size of each of the three headers.
pub const HEADER_SIZE: u64 = 4096;
/// Where the first block starts: everything before is headers.
pub const HEADERS_END: u64 = 3 * HEADER_SIZE;
/// Offset of the magic bytes in the main header.
const MAGIC_OFF: usize = 8;
const MAGIC: &[u8; 4] = b"DUCK";
/// Offset of the main header's first flag word (after the magic and the version number).
const FLAGS_OFF: usize = MAGIC_OFF + 4 + 8;
/// The flag of an encrypted database in the first flag word.
const ENCRYPTED_FLAG: u64 = 1;

/// Suffixes DuckDB gives the WAL files of database `X`: `X.wal` (the WAL), and since 1.4
/// `X.wal.checkpoint` (written during a checkpoint) and `X.wal.recovery` (while merging the two
/// after a crash).
pub const WAL_SUFFIXES: [&str; 3] = [".wal", ".wal.checkpoint", ".wal.recovery"];

/// Whether `head` (the first bytes of a file) starts like a DuckDB database file.
pub fn is_database(head: &[u8]) -> bool {
    head.get(MAGIC_OFF..MAGIC_OFF + MAGIC.len()) == Some(MAGIC.as_slice())
}

/// DuckDB's block checksum (`duckdb::Checksum` for lengths that are a multiple of 8, which is
/// the case for header payloads): 5381 xor-folded with every little-endian u64 word times a
/// constant.
fn checksum(payload: &[u8]) -> u64 {
    payload
        .chunks_exact(8)
        .map(|w| {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            u64::from_le_bytes(b).wrapping_mul(0xbf58_476d_1ce4_e5b9)
        })
        .fold(5381, |acc, x| acc ^ x)
}

/// The iteration of the database header at `off` (4096 or 8192), if it is present and its
/// checksum matches.
fn header_iteration(head: &[u8], off: usize) -> Option<u64> {
    let block = head.get(off..off + HEADER_SIZE as usize)?;
    let (sum, payload) = block.split_at(8);
    let sum = u64::from_le_bytes(sum.try_into().ok()?);
    if checksum(payload) != sum {
        return None;
    }
    Some(u64::from_le_bytes(payload[..8].try_into().ok()?))
}

/// The iteration of the active database header of a DuckDB file whose first bytes are `head`
/// (at most [`HEADERS_END`] of them are looked at): the higher of the valid headers, or None if
/// the file is not a DuckDB database (or is encrypted, or shorter than its headers).
pub fn active_iteration(head: &[u8]) -> Option<u64> {
    active_header(head).map(|(iteration, _)| iteration)
}

/// The active database header of a DuckDB file whose first bytes are `head`: its iteration and
/// its offset (the valid header with the higher iteration), as [`active_iteration`] says.
fn active_header(head: &[u8]) -> Option<(u64, usize)> {
    if !is_database(head) {
        return None;
    }
    [HEADER_SIZE as usize, 2 * HEADER_SIZE as usize]
        .into_iter()
        .filter_map(|off| header_iteration(head, off).map(|it| (it, off)))
        .max()
}

/// What the durable headers of a DuckDB database file say about the checkpoints it completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderMark {
    /// The iteration of the active database header: one higher after each checkpoint.
    Iteration(u64),
    /// An encrypted database: the bytes of its two database headers, which change when (and
    /// only when) DuckDB creates the file or completes a checkpoint. They cannot be ordered, only
    /// compared.
    Encrypted(Box<[u8]>),
}

impl HeaderMark {
    /// Whether a file whose durable headers carry this mark holds a completed checkpoint that is
    /// not in a commit, `committed` being the mark of its last checkpoint in a commit. Without
    /// one, a plain database counts from iteration 0 (what creating it writes); an encrypted
    /// database cannot tell creation from a checkpoint, and the caller makes its mark the
    /// baseline (see [`HeaderMark::needs_baseline`]).
    pub fn after(&self, committed: Option<&HeaderMark>) -> bool {
        match (self, committed) {
            (HeaderMark::Iteration(i), None) => *i > 0,
            (HeaderMark::Iteration(i), Some(HeaderMark::Iteration(c))) => i > c,
            (HeaderMark::Encrypted(_), None) => false,
            (HeaderMark::Encrypted(h), Some(HeaderMark::Encrypted(c))) => h != c,
            // Another kind of database under the same file: something new.
            (HeaderMark::Iteration(_), Some(HeaderMark::Encrypted(_)))
            | (HeaderMark::Encrypted(_), Some(HeaderMark::Iteration(_))) => true,
        }
    }

    /// Whether, with no committed mark, this mark becomes the file's baseline (encrypted).
    pub fn needs_baseline(&self) -> bool {
        matches!(self, HeaderMark::Encrypted(_))
    }
}

/// Whether `head` (the first bytes of a file) is the main header of an encrypted DuckDB database.
pub fn is_encrypted(head: &[u8]) -> bool {
    is_database(head)
        && head
            .get(FLAGS_OFF..FLAGS_OFF + 8)
            .and_then(|w| w.try_into().ok())
            .is_some_and(|w| u64::from_le_bytes(w) & ENCRYPTED_FLAG != 0)
}

/// The checkpoint mark of a DuckDB file whose first bytes are `head` (at most [`HEADERS_END`]
/// of them are looked at): the active iteration, or for an encrypted database its database
/// headers (all of them needed). None if the file is not a DuckDB database or is too short.
pub fn header_mark(head: &[u8]) -> Option<HeaderMark> {
    if is_encrypted(head) {
        let headers = head.get(HEADER_SIZE as usize..HEADERS_END as usize)?;
        return Some(HeaderMark::Encrypted(headers.into()));
    }
    active_iteration(head).map(HeaderMark::Iteration)
}

/// DuckDB's block size before it was a header field, and its default since.
const DEFAULT_BLOCK_ALLOC: u64 = 256 * 1024;

/// Where the metadata block named by the active database header lies (offset, length), in a
/// DuckDB file whose first bytes are `head` (at least [`HEADERS_END`] of them): DuckDB reads it
/// whole right after the headers when it opens the file. The header's payload is iteration,
/// `meta_block` (a block id in its low 56 bits; all ones: no metadata yet), free list, block
/// count, block size; blocks follow the headers back to back. None if the file is not a DuckDB
/// database (or is encrypted) or has no metadata.
pub fn metadata_block(head: &[u8]) -> Option<(u64, u64)> {
    let (_, at) = active_header(head)?;
    let word = |i: usize| {
        let b = head.get(at + 8 + 8 * i..at + 16 + 8 * i)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    let meta = word(1)?;
    if meta == u64::MAX {
        return None;
    }
    let block = meta & ((1 << 56) - 1);
    let size = word(4)
        .filter(|s| s.is_power_of_two() && (16 * 1024..=(1 << 30)).contains(s))
        .unwrap_or(DEFAULT_BLOCK_ALLOC);
    Some((HEADERS_END.checked_add(block.checked_mul(size)?)?, size))
}

/// The database file a WAL file name belongs to (`x.duckdb.wal` -> `x.duckdb`), if `name` is one.
pub fn database_of_wal(name: &str) -> Option<&str> {
    WAL_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|db| !db.is_empty())
}

/// The main WAL of database file `db`.
pub fn wal_of(db: &str) -> String {
    format!("{db}{}", WAL_SUFFIXES[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header block with `iteration` and a correct checksum.
    fn header(iteration: u64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE as usize];
        b[8..16].copy_from_slice(&iteration.to_le_bytes());
        b[16..24].copy_from_slice(&7u64.to_le_bytes());
        let sum = checksum(&b[8..]);
        b[..8].copy_from_slice(&sum.to_le_bytes());
        b
    }

    fn file(h1: Vec<u8>, h2: Vec<u8>) -> Vec<u8> {
        let mut main = vec![0u8; HEADER_SIZE as usize];
        main[8..12].copy_from_slice(b"DUCK");
        [main, h1, h2].concat()
    }

    /// A header block with `iteration`, `meta_block` and `block_size`, checksummed.
    fn header_with(iteration: u64, meta: u64, block_size: u64) -> Vec<u8> {
        let mut b = header(iteration);
        b[16..24].copy_from_slice(&meta.to_le_bytes());
        b[40..48].copy_from_slice(&block_size.to_le_bytes());
        let sum = checksum(&b[8..]);
        b[..8].copy_from_slice(&sum.to_le_bytes());
        b
    }

    #[test]
    fn the_active_header_names_where_the_metadata_starts() {
        let at = |block: u64, size: u64| (HEADERS_END + block * size, size);
        // The active header's block, with its block size; the other header does not count.
        let f = file(header_with(3, 992, 262144), header_with(2, 5, 262144));
        assert_eq!(metadata_block(&f), Some(at(992, 262144)));
        let f = file(header_with(3, 10, 262144), header_with(4, 20, 65536));
        assert_eq!(metadata_block(&f), Some(at(20, 65536)));
        // The sub-block index in the top byte is not part of the block id.
        let f = file(header_with(1, (3 << 56) | 7, 262144), header(0));
        assert_eq!(metadata_block(&f), Some(at(7, 262144)));
        // No block size (older files) or an implausible one: DuckDB's default.
        let f = file(header_with(1, 7, 0), header(0));
        assert_eq!(metadata_block(&f), Some(at(7, 262144)));
        let f = file(header_with(1, 7, 12345), header(0));
        assert_eq!(metadata_block(&f), Some(at(7, 262144)));
        // No metadata yet, a torn active header, not a database, too short.
        assert_eq!(
            metadata_block(&file(header_with(1, u64::MAX, 262144), header(0))),
            None
        );
        let mut torn = header_with(5, 9, 262144);
        torn[200] ^= 1;
        assert_eq!(
            metadata_block(&file(header_with(4, 8, 262144), torn)),
            Some(at(8, 262144))
        );
        let mut other = file(header(3), header(4));
        other[9] = b'X';
        assert_eq!(metadata_block(&other), None);
        let f = file(header_with(1, 7, 262144), header(0));
        assert_eq!(metadata_block(&f[..5000]), None);
        // A block id whose offset does not fit in 64 bits.
        let f = file(header_with(1, (1 << 56) - 1, 1 << 30), header(0));
        assert_eq!(metadata_block(&f), None);
    }

    #[test]
    fn the_valid_header_with_the_higher_iteration_wins() {
        assert_eq!(active_iteration(&file(header(3), header(4))), Some(4));
        assert_eq!(active_iteration(&file(header(5), header(4))), Some(5));
        // A torn or garbage header does not count.
        let mut torn = header(9);
        torn[100] ^= 1;
        assert_eq!(active_iteration(&file(header(3), torn)), Some(3));
        // Not a database, or too short.
        let mut other = file(header(3), header(4));
        other[8] = b'X';
        assert_eq!(active_iteration(&other), None);
        assert_eq!(
            active_iteration(&file(header(3), header(4))[..9000]),
            Some(3)
        );
        assert_eq!(active_iteration(b"DUCK"), None);
    }

    #[test]
    fn an_encrypted_database_is_marked_by_its_header_bytes() {
        let plain = file(header(3), header(4));
        assert_eq!(header_mark(&plain), Some(HeaderMark::Iteration(4)));
        // Flag bit 0 of the first flag word: the database headers are ciphertext.
        let mut enc = file(vec![7u8; 4096], vec![9u8; 4096]);
        enc[FLAGS_OFF] = 1;
        let mark = header_mark(&enc).unwrap();
        assert!(mark.needs_baseline());
        assert_eq!(active_iteration(&enc), None);
        assert_eq!(header_mark(&enc[..9000]), None);
        // A rewritten header is a new mark; the same bytes are not.
        let mut next = enc.clone();
        next[5000] ^= 1;
        let next = header_mark(&next).unwrap();
        assert!(next.after(Some(&mark)));
        assert!(!mark.after(Some(&mark)));
        assert!(!mark.after(None));
        // Plain marks order by iteration, from 0 when nothing is committed.
        let it = HeaderMark::Iteration;
        assert!(it(1).after(None) && !it(0).after(None));
        assert!(it(5).after(Some(&it(4))) && !it(4).after(Some(&it(4))));
        assert!(!it(3).after(Some(&it(4))));
        // Another kind of database in the file is new.
        assert!(it(1).after(Some(&mark)) && mark.after(Some(&it(1))));
        let mut other = enc.clone();
        other[8] = b'X';
        assert_eq!(header_mark(&other), None);
    }

    #[test]
    fn wal_names() {
        assert_eq!(database_of_wal("a.duckdb.wal"), Some("a.duckdb"));
        assert_eq!(database_of_wal("a.duckdb.wal.checkpoint"), Some("a.duckdb"));
        assert_eq!(database_of_wal("a.duckdb.wal.recovery"), Some("a.duckdb"));
        assert_eq!(database_of_wal("a.duckdb"), None);
        assert_eq!(database_of_wal(".wal"), None);
        assert_eq!(wal_of("a.db"), "a.db.wal");
    }
}
