//! Booting a kernel with virtme-ng: accel detection and the vng command
//! line. (Issue #3.)

use std::process::ExitCode;

pub fn bench_boot() -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bench boot` is not implemented yet (issue #3)")
}
