//! Rebuilding a database image at a position of history: the newest snapshot at or before
//! it, then every record after the snapshot, in order, from archived or local segments and
//! the open journal segment.

use std::path::PathBuf;

use futures_util::StreamExt;

use super::Archiver;
use crate::archive::{Archive, Catalog, read_local};
use crate::bookmark::HistoryKey;
use crate::error::{Result, corrupt, missing};
use crate::record::{self, Header};

/// What a rebuild reads: the catalog, the open journal segment and the archive (a copy taken
/// under the archiver's lock, so the object-store reads run without it).
#[derive(Clone)]
pub(super) struct Sources {
    pub(super) archive: Archive,
    pub(super) history: HistoryKey,
    pub(super) catalog: Catalog,
    pub(super) open_journal: Option<PathBuf>,
}

/// A database image being rebuilt.
#[derive(Debug, Default, Clone)]
pub(super) struct Image {
    pub(super) page_size: u32,
    pub(super) data: Vec<u8>,
}

impl Image {
    pub(super) fn apply(
        &mut self,
        header: &Header,
        pages: impl Iterator<Item = (u32, impl AsRef<[u8]>)>,
    ) -> Result<()> {
        if header.kind.is_full_image() {
            self.data.clear();
            self.page_size = header.page_size;
        } else if self.page_size == 0 {
            self.page_size = header.page_size;
        } else if header.n_pages > 0 && header.page_size != self.page_size {
            return Err(corrupt(
                "history",
                format!(
                    "page size changes from {} to {} at seq {}",
                    self.page_size, header.page_size, header.seq
                ),
            ));
        }
        let size = self.page_size as usize;
        for (pgno, page) in pages {
            let page = page.as_ref();
            if pgno == 0 || page.len() != size {
                return Err(corrupt("history", format!("bad page {pgno} at seq {}", header.seq)));
            }
            let at = (pgno as usize - 1) * size;
            if self.data.len() < at + size {
                self.data.resize(at + size, 0);
            }
            self.data[at..at + size].copy_from_slice(page);
        }
        self.data.resize(header.db_pages as usize * size, 0);
        Ok(())
    }
}

/// A rebuild in progress: the image and the next sequence number to apply.
struct Rebuild {
    image: Image,
    next: u64,
    target: u64,
    found: Option<(u32, u64)>,
}

impl Rebuild {
    /// Applies the positions of one segment; true once `target` is reached.
    fn segment(
        &mut self,
        bytes: &[u8],
        history: &HistoryKey,
        what: &str,
        sealed: bool,
    ) -> Result<bool> {
        let records = if sealed {
            record::decode_segment(bytes, history, what)?
        } else {
            let mut at = record::check_segment_header(bytes, history, what)?;
            let mut out = Vec::new();
            while let Some((r, len)) = record::decode_record(&bytes[at..]) {
                out.push(r);
                at += len;
            }
            out
        };
        for r in records {
            let h = r.header;
            if !h.kind.is_position() || h.seq < self.next {
                continue;
            }
            if h.seq > self.target {
                return Ok(true);
            }
            // A full image is a base of its own: history before it need not be reachable
            // (a journal that began in another archive records one on its first open here).
            if h.seq > self.next && h.kind.is_full_image() {
                self.next = h.seq;
            }
            if h.seq != self.next {
                return Err(missing(format!("seq {} (found {} in {what})", self.next, h.seq)));
            }
            self.image.apply(&h, r.pages())?;
            self.next += 1;
            self.found = Some((h.epoch, h.ts_ms));
            if h.seq == self.target {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Sources {
    /// A segment's bytes: from its local copy, the shared log (readers), or the archive.
    pub(super) async fn segment(&self, seg: &crate::archive::SegEntry) -> Result<Vec<u8>> {
        if let Some(path) = &seg.local
            && path.exists()
        {
            return read_local(path);
        }
        if let Some(bytes) = self.catalog.held.get(&seg.name) {
            return Ok(bytes.to_vec());
        }
        let key = format!("seg/{}", seg.name.file_name());
        self.archive.get(&key).await?.ok_or_else(|| missing(format!("segment {key}")))
    }
}

/// Segments a rebuild fetches at once.
const SEGMENT_READS_AT_ONCE: usize = 8;

/// Rebuilds the database image at `target`: the newest snapshot at or before it, then the
/// records after the snapshot, in order.
pub(super) async fn materialize(
    src: &Sources,
    target: u64,
    check: Option<(u32, u64)>,
) -> Result<Image> {
    let mut rb = Rebuild { image: Image::default(), next: 0, target, found: None };
    if let Some(snap) =
        src.catalog.snapshots.iter().filter(|s| s.seq <= target).max_by_key(|s| s.seq)
    {
        let key = format!("snap/{}", snap.file_name());
        let bytes =
            src.archive.get(&key).await?.ok_or_else(|| missing(format!("snapshot {key}")))?;
        let (h, data) = record::decode_snapshot(&bytes, &src.history, &key)?;
        if (h.seq, h.epoch, h.ts_ms) != (snap.seq, snap.epoch, snap.ts) {
            return Err(corrupt(key, "header does not match its name"));
        }
        rb.image = Image { page_size: h.page_size, data: data.to_vec() };
        rb.next = h.seq + 1;
        rb.found = Some((h.epoch, h.ts_ms));
    }
    let mut done = rb.next > target;
    if !done {
        // The segments after the snapshot up to the target, fetched several at once and
        // applied in order (a takeover rebuilds the object from them, and one after
        // another they were most of its opening).
        let wanted: Vec<&crate::archive::SegEntry> = src
            .catalog
            .chain()
            .into_iter()
            .filter(|seg| seg.name.last_seq >= rb.next && seg.name.first_seq <= target)
            .collect();
        let reads: Vec<_> = wanted.iter().map(|seg| src.segment(seg)).collect();
        let mut fetched = futures_util::stream::iter(reads).buffered(SEGMENT_READS_AT_ONCE);
        for seg in &wanted {
            let Some(bytes) = fetched.next().await else { break };
            done = rb.segment(&bytes?, &src.history, &seg.name.file_name(), true)?;
            if done {
                break;
            }
        }
    }
    if !done && let Some(path) = &src.open_journal {
        let bytes = read_local(path)?;
        done = rb.segment(&bytes, &src.history, &path.display().to_string(), false)?;
    }
    if !done || rb.next != target + 1 {
        return Err(missing(format!("history up to seq {target} (rebuilt to {})", rb.next)));
    }
    if let (Some(expected), Some(got)) = (check, rb.found)
        && expected != got
    {
        return Err(corrupt("history", format!("seq {target} is not the bookmark's commit")));
    }
    Ok(rb.image)
}

impl Archiver {
    /// The database image at `bookmark`, rebuilt from history (the bytes the database file
    /// has after restoring to it). Useful for tools and to copy a state elsewhere.
    pub async fn image_at(&self, bookmark: &str) -> Result<Vec<u8>> {
        self.durable()?;
        let (sources, seq, check) = {
            let inner = self.lock();
            let (seq, check) = inner.resolve(bookmark, false)?;
            (inner.sources(), seq, check)
        };
        Ok(materialize(&sources, seq, check).await?.data)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;
    use crate::archive::{SegEntry, SegName, SnapName};
    use crate::record::{Kind, SnapshotHeader};

    const PAGE: u32 = 512;

    fn history() -> HistoryKey {
        HistoryKey { id: [1; 16], key: [2; 16] }
    }

    fn header(kind: Kind, seq: u64, db_pages: u32) -> Header {
        let mut h = Header::new(kind, 0, seq, 1_000 + seq);
        h.page_size = PAGE;
        h.db_pages = db_pages;
        h
    }

    fn pages(list: &[(u32, u8)]) -> BTreeMap<u32, Vec<u8>> {
        list.iter().map(|&(n, b)| (n, vec![b; PAGE as usize])).collect()
    }

    /// A sealed segment of commits `seqs`, each writing page 1 with its sequence number and
    /// page `seq + 2` (so the database grows by a page per commit).
    fn segment(seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut bytes = record::encode_segment_header(&history());
        for seq in seqs {
            let kind = if seq == 0 { Kind::Init } else { Kind::Commit };
            let h = header(kind, seq, seq as u32 + 2);
            bytes.extend(record::encode_record(
                &h,
                &pages(&[(1, seq as u8), (seq as u32 + 2, 0xee)]),
            ));
        }
        bytes
    }

    fn name(first: u64, last: u64) -> SegName {
        SegName {
            epoch: 0,
            first_seq: first,
            last_seq: last,
            first_ts: 1_000 + first,
            last_ts: 1_000 + last,
            term: 0,
        }
    }

    async fn sources(segments: &[(u64, u64)]) -> Sources {
        let archive = Archive {
            store: Arc::new(InMemory::new()),
            prefix: "o".into(),
            attempts: 1,
            failpoint: None,
            term: 0,
        };
        let mut catalog = Catalog::default();
        for &(first, last) in segments {
            let n = name(first, last);
            let bytes = segment(first..=last);
            let size = bytes.len() as u64;
            archive.put_immutable(&format!("seg/{}", n.file_name()), bytes).await.unwrap();
            catalog.add_segment(SegEntry { name: n, local: None, remote: true, size });
        }
        Sources { archive, history: history(), catalog, open_journal: None }
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn an_image_grows_and_shrinks_with_its_commits() {
        let mut image = Image::default();
        image.apply(&header(Kind::Init, 0, 1), pages(&[(1, 7)]).into_iter()).unwrap();
        image.apply(&header(Kind::Commit, 1, 3), pages(&[(3, 9)]).into_iter()).unwrap();
        assert_eq!(image.data.len(), 3 * PAGE as usize);
        assert_eq!(image.data[2 * PAGE as usize], 9);
        assert_eq!(image.data[PAGE as usize], 0, "a page never written reads as zeros");
        image.apply(&header(Kind::Commit, 2, 1), pages(&[]).into_iter()).unwrap();
        assert_eq!(image.data, vec![7; PAGE as usize], "truncated to one page");
    }

    #[test]
    fn a_page_that_does_not_fit_is_corrupt_history() {
        let mut image = Image::default();
        image.apply(&header(Kind::Init, 0, 1), pages(&[(1, 7)]).into_iter()).unwrap();
        let short = [(1u32, vec![0u8; 3])];
        let err = image.apply(&header(Kind::Commit, 1, 1), short.into_iter()).unwrap_err();
        assert!(err.to_string().contains("bad page 1 at seq 1"), "{err}");
        let zero = [(0u32, vec![0u8; PAGE as usize])];
        assert!(image.apply(&header(Kind::Commit, 1, 1), zero.into_iter()).is_err());
        let mut other = header(Kind::Commit, 1, 1);
        other.page_size = 1024;
        other.n_pages = 1;
        let err = image.apply(&other, pages(&[]).into_iter()).unwrap_err();
        assert!(err.to_string().contains("page size changes from 512 to 1024"), "{err}");
    }

    #[test]
    fn materialize_reads_segments_in_order_up_to_the_target() {
        block_on(async {
            let src = sources(&[(0, 3), (4, 6)]).await;
            for target in 0..=6 {
                let image = materialize(&src, target, None).await.unwrap();
                assert_eq!(image.data.len(), (target as usize + 2) * PAGE as usize);
                assert_eq!(image.data[0], target as u8, "page 1 holds the last commit's mark");
            }
            let err = materialize(&src, 7, None).await.unwrap_err();
            assert!(err.to_string().contains("history up to seq 7"), "{err}");
            // The bookmark's epoch and time must match the commit found.
            assert!(materialize(&src, 5, Some((0, 1_005))).await.is_ok());
            let err = materialize(&src, 5, Some((0, 9))).await.unwrap_err();
            assert!(err.to_string().contains("not the bookmark's commit"), "{err}");
        });
    }

    #[test]
    fn a_gap_in_the_chain_is_reported_not_papered_over() {
        block_on(async {
            let src = sources(&[(0, 2), (4, 6)]).await;
            let err = materialize(&src, 5, None).await.unwrap_err();
            assert!(err.to_string().contains("seq 3"), "{err}");
        });
    }

    #[test]
    fn a_snapshot_starts_the_rebuild_and_must_match_its_name() {
        block_on(async {
            let mut src = sources(&[(5, 6)]).await;
            let image = vec![4u8; 6 * PAGE as usize];
            let snap = SnapName { epoch: 0, seq: 4, ts: 1_004, term: 0 };
            let h = SnapshotHeader { page_size: PAGE, epoch: 0, db_pages: 6, seq: 4, ts_ms: 1_004 };
            let bytes = record::encode_snapshot(&h, &history(), &image);
            src.archive.put_immutable(&format!("snap/{}", snap.file_name()), bytes).await.unwrap();
            src.catalog.snapshots.push(snap);
            let rebuilt = materialize(&src, 6, None).await.unwrap();
            assert_eq!(rebuilt.data[0], 6);
            assert_eq!(rebuilt.data[PAGE as usize], 4, "pages from the snapshot");
            // A snapshot whose header disagrees with its name is refused.
            let liar = SnapName { epoch: 0, seq: 4, ts: 1_005, term: 0 };
            src.catalog.snapshots = vec![liar];
            let h = SnapshotHeader { ts_ms: 1_004, ..h };
            let bytes = record::encode_snapshot(&h, &history(), &image);
            src.archive.put_immutable(&format!("snap/{}", liar.file_name()), bytes).await.unwrap();
            let err = materialize(&src, 6, None).await.unwrap_err();
            assert!(err.to_string().contains("does not match its name"), "{err}");
        });
    }
}
