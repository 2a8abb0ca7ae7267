//! `cargo xtask test`: build, boot, run the selftests, report. (Issue #3.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Run the selftests against the running kernel, booting nothing.
    #[arg(long)]
    pub host: bool,
    #[arg(long)]
    pub tree: Option<PathBuf>,
    #[arg(long, default_value = "gmem")]
    pub config: String,
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub accel: String,
    #[arg(long)]
    pub timeout: Option<u64>,
    #[arg(long)]
    pub filter: Option<String>,
}

pub fn run(_args: TestArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`test` is not implemented yet (issue #3)")
}

pub fn bench_selftests() -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bench` for this stage is not implemented yet")
}
