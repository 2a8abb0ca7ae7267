//! `cargo xtask doctor`: check the host tools the pipeline needs. (Issue #6.)

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Install what is missing (apt-get, pip); needs root.
    #[arg(long)]
    pub install: bool,
}

pub fn run(_args: DoctorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`doctor` is not implemented yet (issue #6)")
}
