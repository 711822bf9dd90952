//! Criterion benchmarks of the quorate crates, each side by side with the
//! peer crates it is compared against. Run with `cargo bench -p quorate-benches`;
//! the results are written up in `benches/RESULTS.md`.
