//! Library behind `cargo xtask`. One module per stage of the pipeline:
//! `tree` (fetch/import an upstream tree), `series` (series.toml, apply,
//! the harness checkouts, export, format), `kconfig` (fragments), `build`
//! (kernel builds), `boot` (virtme-ng and the guest script's files),
//! `results` (KTAP, splats, the judge, JSON/JUnit), `test` (the
//! orchestration behind `cargo xtask test`), `reference` and `matrix`
//! (the upstream lane and the cross-kernel table), `mutate`, `doctor`,
//! `bench` (dispatch to each stage's bench) and `util`.

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
