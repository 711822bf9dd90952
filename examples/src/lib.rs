//! The logic of quorate's example programs, one module per example, so that
//! tests can run every scenario the programs in `examples/examples` run.

pub mod clocks;
