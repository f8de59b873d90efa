//! crash tests (below).
