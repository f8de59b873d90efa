//! Bookmarks and history: resolving a bookmark to a position, the bookmark for a time,
//! recording a restore request, and listing the retained points, newest first.

use super::rebuild::Sources;
use super::{Archiver, HistoryEntry, Inner, PointKind, random_bytes, write_atomic};
use crate::archive::{SegEntry, read_local};
use crate::bookmark::{Bookmark, HistoryKey};
use crate::error::{BookmarkError, Error, Result, TimeError};
use crate::journal::Entry;
use crate::record::{self, Pending};

impl Inner {
    /// The first sequence number of `epoch`, if its history is still held.
    pub(super) fn epoch_start(&self, epoch: u32) -> Option<u64> {
        let from_segments = self
            .catalog
            .chain()
            .iter()
            .filter(|e| e.name.epoch == epoch)
            .map(|e| e.name.first_seq)
            .min();
        let from_journal = self.journal.index().iter().find(|e| e.epoch == epoch).map(|e| e.seq);
        from_segments.or(from_journal)
    }

    /// The oldest sequence number that can still be rebuilt.
    pub(super) fn earliest(&self) -> u64 {
        let chain = self.catalog.chain();
        let from_init = chain
            .first()
            .map(|e| e.name.first_seq)
            .or_else(|| self.journal.index().first().map(|e| e.seq));
        let from_snapshot = self.catalog.snapshots.iter().map(|s| s.seq).min();
        match (from_init, from_snapshot) {
            (Some(0), _) => 0,
            (_, Some(s)) => s,
            (Some(f), None) => f,
            (None, None) => self.head.seq,
        }
    }

    /// Resolves a bookmark to (sequence number, expected epoch and time).
    pub(super) fn resolve(
        &self,
        text: &str,
        check_window: bool,
    ) -> Result<(u64, Option<(u32, u64)>)> {
        let b: Bookmark = self.history.parse(text)?;
        let future = || Error::Bookmark(BookmarkError::Future { bookmark: text.to_owned() });
        let out_of_window = || {
            Error::Bookmark(BookmarkError::OutOfWindow {
                bookmark: text.to_owned(),
                window_days: self.config.window_days(),
            })
        };
        if b.epoch > self.head.epoch {
            return Err(future());
        }
        let (seq, check) = if b.is_sentinel() {
            if b.epoch == self.head.epoch {
                (self.head.seq, None)
            } else {
                let next = self.epoch_start(b.epoch + 1).ok_or_else(out_of_window)?;
                (next - 1, None)
            }
        } else {
            if b.seq > self.head.seq {
                return Err(future());
            }
            if check_window
                && (b.ts_ms as i64) < self.config.clock.now_ms() - self.config.window_ms()
            {
                return Err(out_of_window());
            }
            (b.seq, Some((b.epoch, b.ts_ms)))
        };
        if seq < self.earliest() {
            return Err(out_of_window());
        }
        Ok((seq, check))
    }

    /// Writes a restore request durably (last call wins).
    pub(super) fn record_pending(&mut self, bookmark: &str) -> Result<()> {
        let request_id = u64::from_le_bytes(random_bytes::<8>()?);
        let pending = Pending {
            request_id,
            requested_ms: self.config.clock.now_ms(),
            bookmark: bookmark.to_owned(),
        };
        write_atomic(&self.paths.pending, &record::encode_pending(&pending))
    }
}

/// The newest position at or before `t` (ms) in the sealed segments of `sources` (local
/// copies first, else the archive's); `None` when every one is later.
pub(super) async fn newest_sealed_at(sources: &Sources, t: u64) -> Result<Option<Entry>> {
    for seg in sources.catalog.chain().into_iter().rev() {
        let n = seg.name;
        if n.first_ts > t {
            continue;
        }
        if n.last_ts <= t {
            return Ok(Some(Entry { epoch: n.epoch, seq: n.last_seq, ts: n.last_ts }));
        }
        let what = n.file_name();
        let bytes = sources.segment(seg).await?;
        let records = record::decode_segment(&bytes, &sources.history, &what)?;
        let best = records
            .iter()
            .map(|r| r.header)
            .filter(|h| h.kind.is_position() && h.ts_ms <= t)
            .max_by_key(|h| h.seq);
        if let Some(h) = best {
            return Ok(Some(Entry { epoch: h.epoch, seq: h.seq, ts: h.ts_ms }));
        }
    }
    Ok(None)
}

/// Adds the positions of `records` within `range` to `out`, newest first (each older than
/// the last one added); true once `out` holds `limit` points.
fn push_points(
    records: &[record::Record<'_>],
    history: &HistoryKey,
    range: std::ops::Range<u64>,
    limit: usize,
    out: &mut Vec<HistoryEntry>,
) -> bool {
    for r in records.iter().rev() {
        let h = r.header;
        if !h.kind.is_position() || !range.contains(&h.seq) {
            continue;
        }
        if out.last().is_some_and(|e| e.seq <= h.seq) {
            continue;
        }
        out.push(HistoryEntry {
            epoch: h.epoch,
            seq: h.seq,
            time_ms: h.ts_ms,
            bookmark: history.bookmark(h.epoch, h.seq, h.ts_ms).to_string(),
            db_bytes: h.db_pages as u64 * h.page_size as u64,
            kind: PointKind::of(h.kind),
        });
        if out.len() >= limit {
            return true;
        }
    }
    false
}

impl Archiver {
    /// The bookmark of the object's latest durable commit (`getCurrentBookmark()`).
    pub fn current_bookmark(&self) -> Result<String> {
        self.durable()?;
        let inner = self.lock();
        Ok(inner.history.bookmark(inner.head.epoch, inner.head.seq, inner.head.ts).to_string())
    }

    /// The bookmark of the latest commit at or before `time_ms` (ms since the Unix epoch),
    /// `getBookmarkForTime()`. The answer for a past time never changes, and later times
    /// never give earlier bookmarks. Times more than the window back, or in the future
    /// (beyond `future_skew`), are refused.
    pub async fn bookmark_for_time(&self, time_ms: i64) -> Result<String> {
        let (now, window, skew, days) = {
            let inner = self.lock();
            let c = &inner.config;
            (c.clock.now_ms(), c.window_ms(), c.future_skew.as_millis() as i64, c.window_days())
        };
        if time_ms > now.saturating_add(skew) {
            return Err(TimeError::InFuture { time_ms }.into());
        }
        if time_ms < now.saturating_sub(window) {
            return Err(TimeError::OutOfWindow { time_ms, window_days: days }.into());
        }
        self.durable()?;
        let t = time_ms.min(now).max(0) as u64;
        let (index, chain, sources) = {
            let inner = self.lock();
            let chain: Vec<SegEntry> = inner.catalog.chain().into_iter().cloned().collect();
            (inner.journal.index().to_vec(), chain, inner.sources())
        };
        let history = sources.history;
        let out = |e: Entry| history.bookmark(e.epoch, e.seq, e.ts).to_string();
        if let Some(e) = index.iter().rev().find(|e| e.ts <= t) {
            return Ok(out(*e));
        }
        if let Some(e) = newest_sealed_at(&sources, t).await? {
            return Ok(out(e));
        }
        // Before every retained commit: the creation state, if still held.
        let first = chain
            .first()
            .map(|s| Entry { epoch: s.name.epoch, seq: s.name.first_seq, ts: s.name.first_ts })
            .or_else(|| index.first().copied());
        match first {
            Some(e) if e.seq == 0 => Ok(out(e)),
            _ => Err(TimeError::OutOfWindow { time_ms, window_days: days }.into()),
        }
    }

    /// Asks for the object to be restored to `bookmark` the next time it opens
    /// (`onNextSessionRestoreBookmark()`). The request is durable when this returns. Returns
    /// the undo bookmark: the state just before the restore (the last state of the current
    /// epoch, which includes writes made after this call and before the restart).
    pub fn on_next_session_restore_bookmark(&self, bookmark: &str) -> Result<String> {
        self.durable()?;
        let mut inner = self.lock();
        inner.check_poisoned()?;
        inner.resolve(bookmark, true)?;
        inner.fail("restore.before_request")?;
        inner.record_pending(bookmark)?;
        Ok(inner.history.sentinel(inner.head.epoch).to_string())
    }

    /// The retained points of history, newest first: at most `limit` of them, only those
    /// older than `before` (a bookmark) when it is given, and none older than the earliest
    /// point that can still be rebuilt. Reads the local journal and, for older points, the
    /// sealed and archived segments, so the list covers the whole retained window; a page
    /// ends early once `limit` points are found, so paging with `before` set to the last
    /// bookmark of a page reads only what the next page needs.
    pub async fn history(&self, before: Option<&str>, limit: usize) -> Result<Vec<HistoryEntry>> {
        self.durable()?;
        let (sources, earliest, end) = {
            let inner = self.lock();
            let end = match before {
                Some(text) => inner.resolve(text, false)?.0,
                None => inner.head.seq + 1,
            };
            (inner.sources(), inner.earliest(), end)
        };
        let history = sources.history;
        let mut out = Vec::new();
        let take = |records: &[record::Record<'_>], out: &mut Vec<HistoryEntry>| {
            push_points(records, &history, earliest..end, limit, out)
        };
        if limit == 0 || end <= earliest {
            return Ok(out);
        }
        if let Some(path) = &sources.open_journal {
            let bytes = read_local(path)?;
            let what = path.display().to_string();
            let mut at = record::check_segment_header(&bytes, &history, &what)?;
            let mut records = Vec::new();
            while let Some((r, len)) = record::decode_record(&bytes[at..]) {
                records.push(r);
                at += len;
            }
            if take(&records, &mut out) {
                return Ok(out);
            }
        }
        for seg in sources.catalog.chain().into_iter().rev() {
            if seg.name.first_seq >= end {
                continue;
            }
            if seg.name.last_seq < earliest {
                break;
            }
            let what = seg.name.file_name();
            let bytes = sources.segment(seg).await?;
            if take(&record::decode_segment(&bytes, &history, &what)?, &mut out) {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::record::{Header, Kind};

    fn history() -> HistoryKey {
        HistoryKey { id: [3; 16], key: [4; 16] }
    }

    /// Encoded records: a mark, then commits `seqs` (time = 100 + seq).
    fn records(seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut out = record::encode_record(&Header::new(Kind::Mark, 0, 0, 0), &BTreeMap::new());
        for seq in seqs {
            out.extend(record::encode_record(
                &Header::new(Kind::Commit, 0, seq, 100 + seq),
                &BTreeMap::new(),
            ));
        }
        out
    }

    fn decode(bytes: &[u8]) -> Vec<record::Record<'_>> {
        let mut at = 0;
        let mut out = Vec::new();
        while let Some((r, len)) = record::decode_record(&bytes[at..]) {
            out.push(r);
            at += len;
        }
        out
    }

    #[test]
    fn points_come_newest_first_within_the_range_and_the_limit() {
        let bytes = records(1..=9);
        let recs = decode(&bytes);
        let mut out = Vec::new();
        assert!(!push_points(&recs, &history(), 3..8, 100, &mut out), "the limit was not hit");
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [7, 6, 5, 4, 3]);
        assert!(out.iter().all(|e| e.kind == PointKind::Commit));
        assert_eq!(out[0].time_ms, 107);
        assert_eq!(out[0].bookmark, history().bookmark(0, 7, 107).to_string());

        let mut out = Vec::new();
        assert!(push_points(&recs, &history(), 0..100, 2, &mut out), "full at two points");
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [9, 8]);
    }

    #[test]
    fn points_already_listed_from_a_newer_segment_are_not_repeated() {
        let newer = records(5..=9);
        let older = records(1..=6);
        let mut out = Vec::new();
        push_points(&decode(&newer), &history(), 0..100, 100, &mut out);
        push_points(&decode(&older), &history(), 0..100, 100, &mut out);
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [9, 8, 7, 6, 5, 4, 3, 2, 1]);
    }
}
