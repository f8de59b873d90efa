//! stores tests (below).
