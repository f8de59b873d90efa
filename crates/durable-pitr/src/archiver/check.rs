//! Archive health, from the catalog alone: history a later lease term superseded, segments
//! that straddle the start of a later term, and positions missing from the chain.

use std::ops::RangeInclusive;

use crate::archive::Catalog;

/// What an object's archive holds besides a clean chain of history, as
/// [`ArchiveReader::check`](super::ArchiveReader::check) found it. Superseded history is
/// expected after a takeover; straddling segments and gaps are damage
/// ([`is_healthy`](Self::is_healthy) is false).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveCheck {
    /// Keys (`seg/...`, `snap/...`, under the object's prefix) of history at or past the
    /// start of a later lease term: a fenced writer's late uploads. Readers ignore them and
    /// retention deletes them. The straddling segments are not counted here.
    pub superseded: Vec<String>,
    /// Keys (`seg/...`) of segments that begin before the start of a later lease term and
    /// end at or after it. Readers ignore them whole, so their positions before that start
    /// are missing unless other segments hold them (which then shows in `gaps`).
    pub straddling: Vec<String>,
    /// Positions (sequence numbers, inclusive) that history needs and no segment or
    /// snapshot holds: between two segments of the chain, between the newest snapshot
    /// before the chain and its first segment, or between the chain's end and a later
    /// snapshot. A rebuild of any later position up to the next snapshot fails.
    pub gaps: Vec<RangeInclusive<u64>>,
}

impl ArchiveCheck {
    /// True when nothing is broken: no straddling segment and no gap. Superseded history
    /// does not count: it is what a takeover leaves behind.
    pub fn is_healthy(&self) -> bool {
        self.straddling.is_empty() && self.gaps.is_empty()
    }

    pub(super) fn of(catalog: &Catalog) -> ArchiveCheck {
        let chain: Vec<(u64, u64)> =
            catalog.chain().iter().map(|e| (e.name.first_seq, e.name.last_seq)).collect();
        let snapshots: Vec<u64> = catalog.snapshots.iter().map(|s| s.seq).collect();
        ArchiveCheck {
            superseded: catalog
                .superseded
                .iter()
                .filter(|k| !catalog.straddling.contains(k))
                .cloned()
                .collect(),
            straddling: catalog.straddling.clone(),
            gaps: gaps(&chain, &snapshots),
        }
    }
}

/// The positions missing from `chain` (the segments' first and last positions, sorted, none
/// covering another) given snapshots at `snapshots`.
///
/// History before the chain's first segment is retention's business (it deletes old
/// segments first, then old snapshots), so only one stretch before it counts: when no
/// snapshot sits in or just before the chain's first run of positions (and it does not
/// start at 0, the first image), the positions after the newest snapshot before it. With
/// no snapshot at all the base is unknown (history that began in another archive starts
/// with a full image), and nothing is reported.
fn gaps(chain: &[(u64, u64)], snapshots: &[u64]) -> Vec<RangeInclusive<u64>> {
    let Some(&(start, _)) = chain.first() else { return Vec::new() };
    // Every position held, as spans, merged into runs of consecutive positions.
    let mut spans: Vec<(u64, u64)> = chain.to_vec();
    spans.extend(snapshots.iter().filter(|s| **s + 1 >= start).map(|&s| (s, s)));
    spans.sort_unstable();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (first, last) in spans {
        match runs.last_mut() {
            Some(run) if first <= run.1.saturating_add(1) => run.1 = run.1.max(last),
            _ => runs.push((first, last)),
        }
    }
    let mut out = Vec::new();
    let Some((first_run, rest)) = runs.split_first() else { return out };
    let based =
        first_run.0 == 0 || snapshots.iter().any(|s| (first_run.0..=first_run.1).contains(s));
    if !based && let Some(newest) = snapshots.iter().copied().filter(|s| *s < first_run.0).max() {
        out.push(newest + 1..=first_run.0 - 1);
    }
    let mut end = first_run.1;
    for &(first, last) in rest {
        out.push(end + 1..=first - 1);
        end = last;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::gaps;

    /// `chain` and `snapshots` give `expected` gaps.
    fn check(chain: &[(u64, u64)], snapshots: &[u64], expected: &[(u64, u64)]) {
        let got: Vec<(u64, u64)> =
            gaps(chain, snapshots).into_iter().map(|r| (*r.start(), *r.end())).collect();
        assert_eq!(got, expected, "chain {chain:?}, snapshots {snapshots:?}");
    }

    #[test]
    fn contiguous_history_has_no_gap() {
        check(&[], &[], &[]);
        check(&[], &[5], &[]);
        check(&[(0, 3), (4, 9), (10, 10)], &[], &[]);
        check(&[(0, 3), (4, 9)], &[6, 9], &[]);
        // A snapshot holds the one position between two segments.
        check(&[(0, 3), (5, 9)], &[4], &[]);
    }

    #[test]
    fn missing_segments_between_segments_are_gaps() {
        check(&[(0, 3), (7, 9)], &[], &[(4, 6)]);
        check(&[(0, 3), (5, 6), (9, 9)], &[], &[(4, 4), (7, 8)]);
        // A snapshot inside the hole leaves the positions on both sides of it missing.
        check(&[(0, 3), (7, 9)], &[5], &[(4, 4), (6, 6)]);
    }

    #[test]
    fn the_chain_must_reach_back_to_its_snapshot_and_up_to_later_ones() {
        // The newest snapshot before the chain, then positions nobody holds.
        check(&[(20, 30)], &[5, 10], &[(11, 19)]);
        // Right after a snapshot, or a snapshot inside the first segment: based.
        check(&[(11, 30)], &[10], &[]);
        check(&[(8, 30)], &[10], &[]);
        // Retention stopped between its segment and snapshot deletes: older snapshots stay.
        check(&[(8, 30)], &[2, 5, 10], &[]);
        // A snapshot past the chain's end.
        check(&[(0, 30)], &[40], &[(31, 39)]);
        check(&[(0, 30)], &[31], &[]);
        // No snapshot and a chain that does not start at 0: a base the catalog cannot see.
        check(&[(20, 30)], &[], &[]);
    }
}
