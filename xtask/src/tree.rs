//! `cargo xtask tree fetch`: a git repository whose first commit is a
//! pristine upstream kernel source, tagged `v<version>`. (Issue #2.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TreeCmd {
    /// Fetch (or reuse) an upstream tree and print its path.
    Fetch {
        /// Upstream version, e.g. 6.1.176 (default: newest 6.1.y in Debian main).
        #[arg(long)]
        version: Option<String>,
        /// debian | git:<url>#<ref> | tarball:<path>
        #[arg(long, default_value = "debian")]
        from: String,
        /// Where to put the repository (default: target/kernel/linux-<version>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: TreeCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TreeCmd::Fetch { .. } => anyhow::bail!("`tree fetch` is not implemented yet (issue #2)"),
    }
}

pub fn bench_import() -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bench` for this stage is not implemented yet")
}

/// The tree `apply`/`build-kernel`/`test` use when none is given: the
/// pinned version fetched (from cache when present) under target/kernel/.
pub fn ensure_default_tree() -> anyhow::Result<PathBuf> {
    anyhow::bail!("`tree fetch` is not implemented yet (issue #2)")
}
