//! `cargo xtask mutate`: generated mutants over the lines the series adds.

pub mod model;
