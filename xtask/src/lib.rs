//! Library behind `cargo xtask`. One module per stage of the pipeline:
//! `tree` (fetch/import an upstream tree), `series` (series.toml, apply,
//! export, format), `kconfig` (fragments), `build` (kernel builds), `boot`
//! (virtme-ng), `results` (KTAP, splats, JSON/JUnit), `test` (the
//! orchestration behind `cargo xtask test`), `doctor` and `bench`.

pub mod bench;
pub mod boot;
pub mod build;
pub mod cli;
pub mod doctor;
pub mod kconfig;
pub mod matrix;
pub mod mutate;
pub mod reference;
pub mod results;
pub mod series;
pub mod test;
pub mod tree;
pub mod util;
