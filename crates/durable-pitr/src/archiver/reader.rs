//! Read-only access to an object's archived history, without opening the object: no lock,
//! no lease, nothing written. For tools that copy a state out of the archive while the
//! object runs elsewhere (`durable export`), and for checking what another node uploaded.

use super::check::ArchiveCheck;
use super::history::newest_sealed_at;
use super::rebuild::{Sources, materialize};
use crate::archive::Archive;
use crate::bookmark::HistoryKey;
use crate::config::ArchiveConfig;
use crate::error::{BookmarkError, Error, Result, missing};
use crate::record;

/// What an object's archive holds, read once (see [`ArchiveReader::open`]).
pub struct ArchiveReader {
    sources: Sources,
    /// The newest archived position: (epoch, seq, ts).
    newest: Option<(u32, u64, u64)>,
}

impl std::fmt::Debug for ArchiveReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("archive", &self.sources.archive)
            .field("newest", &self.newest)
            .finish_non_exhaustive()
    }
}

impl ArchiveReader {
    /// Reads the object's identity and the list of its archived history (the history a
    /// later lease term superseded left out). Fails with `Missing` when nothing was ever
    /// archived there.
    pub async fn open(config: &ArchiveConfig) -> Result<ArchiveReader> {
        let archive = Archive::reading(config);
        let meta = archive.get("meta").await?.ok_or_else(|| missing("the archive's meta"))?;
        let history: HistoryKey = record::decode_meta(&meta, "archive meta")?;
        let mut catalog = archive.catalog().await?;
        // The newest commits may still be only in a node's shared log: the live owner's
        // newest deltas, or those of a writer that stopped before uploading them.
        let leases = crate::lease::read_leases(&archive).await?;
        let after = catalog.newest_seq();
        let cache = config.node.as_deref().map(|node| node.slot_cache());
        for (name, bytes) in
            crate::log::logged_segments(&archive, &leases, leases.newest(), after, cache).await?
        {
            let size = bytes.len() as u64;
            catalog.held.insert(name, std::sync::Arc::new(bytes));
            catalog.add_segment(crate::archive::SegEntry {
                name,
                local: None,
                remote: false,
                size,
            });
        }
        let sources = Sources { archive, history, catalog, open_journal: None };
        let newest = match sources.catalog.chain().last() {
            Some(last) => {
                let what = last.name.file_name();
                let bytes = sources.segment(last).await?;
                let records = record::decode_segment(&bytes, &history, &what)?;
                records
                    .iter()
                    .rev()
                    .map(|r| r.header)
                    .find(|h| h.kind.is_position())
                    .map(|h| (h.epoch, h.seq, h.ts_ms))
            }
            None => None,
        };
        Ok(ArchiveReader { sources, newest })
    }

    /// The bookmark of the newest archived commit (`None` when no commit is archived).
    pub fn latest_bookmark(&self) -> Option<String> {
        let (epoch, seq, ts) = self.newest?;
        Some(self.sources.history.bookmark(epoch, seq, ts).to_string())
    }

    /// The bookmark of the newest archived commit at or before `time_ms` (ms since the Unix
    /// epoch); `None` when every archived commit is later (or none is archived).
    pub async fn bookmark_for_time(&self, time_ms: i64) -> Result<Option<String>> {
        let t = u64::try_from(time_ms).unwrap_or(0);
        let found = newest_sealed_at(&self.sources, t).await?;
        Ok(found.map(|e| self.sources.history.bookmark(e.epoch, e.seq, e.ts).to_string()))
    }

    /// The archive's health as [`open`](Self::open) read it (nothing more is read):
    /// history a later lease term superseded (expected after a takeover), segments that
    /// straddle the start of a later term, and positions missing from the chain of
    /// segments. See [`ArchiveCheck::is_healthy`].
    pub fn check(&self) -> ArchiveCheck {
        ArchiveCheck::of(&self.sources.catalog)
    }

    /// The database image at the newest archived commit.
    pub async fn latest_image(&self) -> Result<Vec<u8>> {
        let (_, seq, _) = self.newest.ok_or_else(|| missing("an archived commit"))?;
        Ok(materialize(&self.sources, seq, None).await?.data)
    }

    /// The database image at `bookmark` (one of this object's, archived).
    pub async fn image_at(&self, bookmark: &str) -> Result<Vec<u8>> {
        let b = self.sources.history.parse(bookmark)?;
        let newest = self.newest.map_or(0, |(_, s, _)| s);
        if b.is_sentinel() || b.seq > newest {
            return Err(Error::Bookmark(BookmarkError::Future { bookmark: bookmark.to_owned() }));
        }
        Ok(materialize(&self.sources, b.seq, Some((b.epoch, b.ts_ms))).await?.data)
    }
}
