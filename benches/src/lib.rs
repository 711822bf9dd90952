//! Criterion benchmarks of the quorate crates, each side by side with the
//! peer crates it is compared against. Run with `cargo bench -p quorate-benches`;
//! the results are written up in `benches/RESULTS.md`.

// The root README's snippets run as doctests here, where every crate and tokio
// are at hand, so the README cannot drift from the APIs it shows.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RootReadme;
