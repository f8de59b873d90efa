//! bookmarks tests (below).
