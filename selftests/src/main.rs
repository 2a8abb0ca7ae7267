//! `gmem-selftests`: guest_memfd selftests printing KTAP v1.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// guest_memfd selftests (KTAP v1 on stdout).
#[derive(Debug, Parser)]
#[command(name = "gmem-selftests", version)]
struct Cli {
    /// Print the case names and exit.
    #[arg(long)]
    list: bool,
    /// Only run cases whose name contains PATTERN (repeatable: any matches).
    #[arg(long, value_name = "PATTERN")]
    filter: Vec<String>,
    /// Per-case timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Stop at the first failing case (KTAP `Bail out!`).
    #[arg(long)]
    fail_fast: bool,
}

fn main() -> ExitCode {
    // clap exits with status 2 on usage errors.
    let cli = Cli::parse();
    let opts = selftests::harness::suite::Options {
        list: cli.list,
        filters: cli.filter,
        timeout: Duration::from_secs(cli.timeout),
        fail_fast: cli.fail_fast,
    };
    ExitCode::from(selftests::harness::suite::run(&opts))
}
