//! `cargo xtask`: the project's commands. This file only parses the command
//! line and dispatches; each stage lives in its own module of the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = xtask::cli::Cli::parse();
    match xtask::cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
