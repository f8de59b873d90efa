//! List options and how they compile to one key range (the runtime's `compileListOptions`).

use crate::error::{Error, Result};

/// Options of `list()`: which keys, in which order, how many.
///
/// `start` is inclusive, `end` exclusive, in both directions; `start_after` is an exclusive
/// start; a non-empty `prefix` narrows the range to keys that begin with it.
///
/// Built with [`ListOptions::new`] and one method per option (more options may come, so
/// there is no struct literal outside this crate):
///
/// ```
/// use durable_kv::ListOptions;
///
/// let options = ListOptions::new().prefix("user:").start("user:100").limit(50).reverse(true);
/// assert_eq!(options.limit, Some(50));
/// assert_eq!(options.prefix.as_deref(), Some("user:"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// Only keys that start with this.
    pub prefix: Option<String>,
    /// The first key (inclusive).
    pub start: Option<String>,
    /// Keys after this one (exclusive); cannot be combined with `start`.
    pub start_after: Option<String>,
    /// Keys before this one (exclusive).
    pub end: Option<String>,
    /// At most this many entries (must be positive), taken in the chosen direction.
    pub limit: Option<i64>,
    /// Largest keys first.
    pub reverse: bool,
}

impl ListOptions {
    /// Every key, in order: the same as `ListOptions::default()`. Chain the builder methods to narrow it: `ListOptions::new().prefix("user:").limit(10)`.
    pub fn new() -> ListOptions {
        ListOptions::default()
    }

    /// Only keys that start with `prefix` ([`prefix`](ListOptions::prefix)).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> ListOptions {
        self.prefix = Some(prefix.into());
        self
    }

    /// Keys from `start` on, inclusive ([`start`](ListOptions::start)).
    #[must_use]
    pub fn start(mut self, start: impl Into<String>) -> ListOptions {
        self.start = Some(start.into());
        self
    }

    /// Keys after `start_after`, exclusive ([`start_after`](ListOptions::start_after)).
    #[must_use]
    pub fn start_after(mut self, start_after: impl Into<String>) -> ListOptions {
        self.start_after = Some(start_after.into());
        self
    }

    /// Keys before `end`, exclusive ([`end`](ListOptions::end)).
    #[must_use]
    pub fn end(mut self, end: impl Into<String>) -> ListOptions {
        self.end = Some(end.into());
        self
    }

    /// At most `limit` entries ([`limit`](ListOptions::limit)); checked when the list runs.
    #[must_use]
    pub fn limit(mut self, limit: i64) -> ListOptions {
        self.limit = Some(limit);
        self
    }

    /// Largest keys first ([`reverse`](ListOptions::reverse)).
    #[must_use]
    pub fn reverse(mut self, reverse: bool) -> ListOptions {
        self.reverse = reverse;
        self
    }
}

/// A compiled range: `start <= key < end`, in order, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Inclusive lower bound (UTF-8 bytes).
    pub start: Vec<u8>,
    /// Exclusive upper bound, if any.
    pub end: Option<Vec<u8>>,
    /// Most entries to return.
    pub limit: Option<u64>,
    /// Descending order.
    pub reverse: bool,
}

impl ListOptions {
    /// Checks the options and computes the range; `Ok(None)` when the range is empty.
    pub fn compile(&self) -> Result<Option<KeyRange>> {
        if self.start.is_some() && self.start_after.is_some() {
            return Err(Error::StartAndStartAfter);
        }
        if let Some(limit) = self.limit
            && limit <= 0
        {
            return Err(Error::LimitNotPositive);
        }
        let mut start: Vec<u8> = match (&self.start, &self.start_after) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (_, Some(s)) => {
                let mut v = s.as_bytes().to_vec();
                v.push(0);
                v
            }
            _ => Vec::new(),
        };
        let mut end: Option<Vec<u8>> = self.end.as_ref().map(|e| e.as_bytes().to_vec());
        if let Some(prefix) = self.prefix.as_deref().filter(|p| !p.is_empty()) {
            let prefix = prefix.as_bytes();
            if start.as_slice() < prefix {
                start = prefix.to_vec();
            } else if !start.starts_with(prefix) {
                return Ok(None);
            }
            let prefix_end = prefix_successor(prefix);
            end = match end {
                Some(e) if e.as_slice() <= prefix => return Ok(None),
                Some(e) if e.starts_with(prefix) => Some(e),
                _ => prefix_end,
            };
        }
        if let Some(e) = &end
            && e.as_slice() <= start.as_slice()
        {
            return Ok(None);
        }
        Ok(Some(KeyRange {
            start,
            end,
            limit: self.limit.map(|l| l as u64),
            reverse: self.reverse,
        }))
    }
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None`
/// when there is none (the prefix is all 0xFF bytes).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}
