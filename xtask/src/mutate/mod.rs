//! `cargo xtask mutate`: generated mutants over the lines the series adds.

pub mod equivalent;
pub mod generate;
pub mod model;
pub mod operators;
pub mod report;
