//! Command-line definition and dispatch. Every subcommand's arguments are
//! defined by the module that implements it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "guest_memfd-on-6.1 maintainer tooling")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch and import an upstream kernel tree.
    #[command(subcommand)]
    Tree(crate::tree::TreeCmd),
    /// Apply a series from patches/ onto a kernel tree, on a new branch.
    Apply(crate::series::ApplyArgs),
    /// Export or format the patch series.
    #[command(subcommand)]
    Series(crate::series::SeriesCmd),
    /// Build a kernel from Kconfig fragments (out of tree, under target/).
    BuildKernel(crate::build::BuildArgs),
    /// Build, boot under virtme-ng and run the selftests (or --host).
    Test(crate::test::TestArgs),
    /// The suite on 6.1 + series, the upstream reference and the host:
    /// cases x kernels, and the divergence rule.
    Matrix(crate::matrix::MatrixArgs),
    /// Mutation campaign: generated mutants of the series, built, booted,
    /// judged, scored.
    #[command(subcommand)]
    Mutate(crate::mutate::MutateCmd),
    /// Check (and optionally install) the host tools the pipeline needs.
    Doctor(crate::doctor::DoctorArgs),
    /// Benchmarks that print ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(crate::bench::BenchCmd),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Tree(cmd) => crate::tree::run(cmd),
        Command::Apply(args) => crate::series::run_apply(args),
        Command::Series(cmd) => crate::series::run(cmd),
        Command::BuildKernel(args) => crate::build::run(args),
        Command::Test(args) => crate::test::run(args),
        Command::Matrix(args) => crate::matrix::run(args),
        Command::Mutate(cmd) => crate::mutate::run(cmd),
        Command::Doctor(args) => crate::doctor::run(args),
        Command::Bench(cmd) => crate::bench::run(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::AccelRequest;

    fn accel_of(argv: &[&str]) -> AccelRequest {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Test(a) => a.accel,
            Command::Matrix(a) => a.accel,
            Command::Mutate(crate::mutate::MutateCmd::Run(a)) => a.accel,
            other => panic!("no --accel in {other:?}"),
        }
    }

    #[test]
    fn accel_takes_auto_kvm_or_tcg_wherever_it_is_an_argument() {
        for cmd in [
            &["x", "test"][..],
            &["x", "matrix"],
            &["x", "mutate", "run"],
        ] {
            assert_eq!(accel_of(cmd), AccelRequest::Auto, "{cmd:?}");
            for (name, want) in [
                ("auto", AccelRequest::Auto),
                ("kvm", AccelRequest::Kvm),
                ("tcg", AccelRequest::Tcg),
            ] {
                let argv: Vec<&str> = cmd.iter().copied().chain(["--accel", name]).collect();
                assert_eq!(accel_of(&argv), want, "{argv:?}");
                assert_eq!(want.name(), name);
            }
            let argv: Vec<&str> = cmd.iter().copied().chain(["--accel", "host"]).collect();
            let e = Cli::try_parse_from(&argv).unwrap_err().to_string();
            assert!(
                e.contains("auto") && e.contains("kvm") && e.contains("tcg"),
                "{e}"
            );
        }
    }

    #[test]
    fn all_mutants_is_a_flag_beside_the_one_mutant_option() {
        let test = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Test(a)) => Ok((a.mutant, a.all_mutants)),
            Ok(other) => panic!("not a test command: {other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(test(&["x", "test", "--all-mutants"]), Ok((None, true)));
        assert_eq!(
            test(&["x", "test", "--mutant", "m"]),
            Ok((Some("m".into()), false))
        );
        assert!(test(&["x", "test", "--all-mutants", "--mutant", "m"]).is_err());
        assert!(test(&["x", "test", "--mutants", "all"]).is_err());
    }
}
