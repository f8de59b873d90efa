//! Benchmarks of the archiver (filled in below).
fn main() {}
