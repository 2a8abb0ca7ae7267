//! Patch series: `patches/<series>/series.toml` plus format-patch files;
//! `apply`, `series export` and `series format`. (Issue #2.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Series name (a directory under patches/).
    #[arg(long, default_value = "guest_memfd")]
    pub series: String,
    /// Kernel tree (default: the fetched tree under target/kernel/).
    #[arg(long)]
    pub tree: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SeriesCmd {
    /// Regenerate patches/<series>/ from the commits of a branch.
    Export {
        #[arg(long)]
        tree: PathBuf,
        #[arg(long)]
        range: Option<String>,
        #[arg(long, default_value = "guest_memfd")]
        series: String,
    },
    /// Write a mailing-list-ready series (nothing is sent).
    Format {
        #[arg(long, default_value = "guest_memfd")]
        series: String,
        #[arg(long)]
        reroll: Option<u32>,
        #[arg(long)]
        to: Vec<String>,
        #[arg(long)]
        cc: Vec<String>,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        tree: Option<PathBuf>,
    },
}

pub fn run_apply(_args: ApplyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`apply` is not implemented yet (issue #2)")
}

pub fn run(cmd: SeriesCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SeriesCmd::Export { .. } => anyhow::bail!("`series export` is not implemented yet (issue #2)"),
        SeriesCmd::Format { .. } => anyhow::bail!("`series format` is not implemented yet (issue #2)"),
    }
}

pub fn bench_apply() -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bench` for this stage is not implemented yet")
}

/// What `apply` is asked to do; also used by `build-kernel --each-patch`
/// and `test --mutant` (extra patches go on top of the series).
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    pub series: String,
    pub tree: PathBuf,
    /// Patches applied after the series, e.g. patches/mutants/NAME.patch.
    pub extra: Vec<PathBuf>,
    /// Branch to create (default `<series>/v<N>`).
    pub branch: Option<String>,
}

/// What `apply` did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub branch: String,
    /// Commit id of the base and of each applied patch, in order.
    pub base: String,
    pub commits: Vec<AppliedPatch>,
}

#[derive(Debug, Clone)]
pub struct AppliedPatch {
    pub file: PathBuf,
    pub subject: String,
    /// None when the patch was already contained in the base and skipped.
    pub commit: Option<String>,
}

pub fn apply(_req: &ApplyRequest) -> anyhow::Result<Applied> {
    anyhow::bail!("`apply` is not implemented yet (issue #2)")
}
