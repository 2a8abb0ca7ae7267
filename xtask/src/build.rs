//! `cargo xtask build-kernel`: out-of-tree kernel builds from fragments.
//! (Issue #3.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Kernel tree (default: the fetched tree with the series applied).
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// Comma-separated fragment names from kconfigs/ (base is always first).
    #[arg(long, default_value = "gmem")]
    pub config: String,
    /// Build after every patch of the series and report the first that breaks.
    #[arg(long)]
    pub each_patch: bool,
}

pub fn run(_args: BuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`build-kernel` is not implemented yet (issue #3)")
}

pub fn bench_build() -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bench` for this stage is not implemented yet")
}
