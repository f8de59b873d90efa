//! `RangeSet`: the key ranges whose contents the cache knows completely.

use std::collections::BTreeMap;
use std::ops::Bound;

/// The end of a range: a key (exclusive) or past every key.
pub(crate) type End = Option<Vec<u8>>;

/// `a` joined with `b`: the later of two ends (`None`, unbounded, is the latest).
fn max_end(a: End, b: End) -> End {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

/// The smallest key after `key`: `key` followed by a NUL byte.
pub(crate) fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Disjoint, non-adjacent half-open byte ranges `[start, end)`, kept merged.
#[derive(Debug, Default, Clone)]
pub(crate) struct RangeSet {
    ranges: BTreeMap<Vec<u8>, End>,
}

impl RangeSet {
    /// Forgets every range.
    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
    }

    /// Adds `[start, end)`, merging it with the ranges it touches.
    pub(crate) fn insert(&mut self, start: Vec<u8>, end: End) {
        if end.as_deref().is_some_and(|e| e <= start.as_slice()) {
            return;
        }
        let mut start = start;
        let mut end = end;
        let before = self
            .ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start.as_slice())))
            .next_back()
            .map(|(s, e)| (s.clone(), e.clone()));
        if let Some((s, e)) = before
            && e.as_deref().is_none_or(|e| e >= start.as_slice())
        {
            self.ranges.remove(&s);
            start = s;
            end = max_end(end, e);
        }
        loop {
            let next = self
                .ranges
                .range::<[u8], _>((Bound::Included(start.as_slice()), Bound::Unbounded))
                .next()
                .map(|(s, e)| (s.clone(), e.clone()));
            match next {
                Some((s, e)) if end.as_deref().is_none_or(|end| s.as_slice() <= end) => {
                    self.ranges.remove(&s);
                    end = max_end(end, e);
                }
                _ => break,
            }
        }
        self.ranges.insert(start, end);
    }

    /// The range holding `key`, as `(start, end)`.
    pub(crate) fn containing(&self, key: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
        let (s, e) =
            self.ranges.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        e.as_deref().is_none_or(|e| key < e).then_some((s.as_slice(), e.as_deref()))
    }

    /// True when `key` lies in a range.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.containing(key).is_some()
    }

    /// The start of the range that reaches up to `end` from below (covers the keys just
    /// under `end`; with no `end`, the range that runs past every key).
    pub(crate) fn reaching(&self, end: Option<&[u8]>) -> Option<&[u8]> {
        match end {
            Some(end) => {
                let (s, e) = self
                    .ranges
                    .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(end)))
                    .next_back()?;
                e.as_deref().is_none_or(|e| e >= end).then_some(s.as_slice())
            }
            None => {
                let (s, e) = self.ranges.iter().next_back()?;
                e.is_none().then_some(s.as_slice())
            }
        }
    }

    /// Takes `key` out of its range (splitting it), so the key is no longer known.
    pub(crate) fn remove_point(&mut self, key: &[u8]) {
        let Some((s, e)) = self.containing(key).map(|(s, e)| (s.to_vec(), e.map(<[u8]>::to_vec)))
        else {
            return;
        };
        self.ranges.remove(&s);
        if s.as_slice() < key {
            self.ranges.insert(s, Some(key.to_vec()));
        }
        let after = successor(key);
        if e.as_deref().is_none_or(|e| after.as_slice() < e) {
            self.ranges.insert(after, e);
        }
    }

    /// How many ranges are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(&str, Option<&str>)]) -> RangeSet {
        let mut s = RangeSet::default();
        for (a, b) in ranges {
            s.insert(a.as_bytes().to_vec(), b.map(|b| b.as_bytes().to_vec()));
        }
        s
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let s = set(&[("b", Some("d")), ("d", Some("f")), ("a", Some("c"))]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.containing(b"e"), Some((&b"a"[..], Some(&b"f"[..]))));
        assert!(!s.contains(b"f"));
        let s = set(&[("a", Some("b")), ("c", None), ("b", Some("c"))]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.reaching(None), Some(&b"a"[..]));
    }

    #[test]
    fn empty_and_inverted_ranges_add_nothing() {
        let s = set(&[("b", Some("b")), ("c", Some("a"))]);
        assert_eq!(s.len(), 0);
        assert!(!s.contains(b"b"));
    }

    #[test]
    fn removing_a_point_splits_the_range_around_it() {
        let mut s = set(&[("a", Some("z"))]);
        s.remove_point(b"m");
        assert!(s.contains(b"l"));
        assert!(!s.contains(b"m"));
        assert!(s.contains(b"m\0"));
        assert_eq!(s.len(), 2);
        s.remove_point(b"a");
        assert!(!s.contains(b"a"));
        assert!(s.contains(b"a\0"));
        let mut s = set(&[("", None)]);
        s.remove_point(b"");
        assert!(!s.contains(b""));
        assert!(s.contains(b"\0"));
    }

    #[test]
    fn reaching_finds_the_range_just_below_an_end() {
        let s = set(&[("b", Some("d")), ("f", Some("h"))]);
        assert_eq!(s.reaching(Some(b"d")), Some(&b"b"[..]));
        assert_eq!(s.reaching(Some(b"c")), Some(&b"b"[..]));
        assert_eq!(s.reaching(Some(b"e")), None);
        assert_eq!(s.reaching(Some(b"b")), None);
        assert_eq!(s.reaching(None), None);
    }
}
