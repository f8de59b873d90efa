//! time tests (below).
