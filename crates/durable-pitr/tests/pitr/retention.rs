//! retention tests (below).
