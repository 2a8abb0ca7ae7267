//! `cargo xtask bench ...`: each benchmark measures its baseline in the same
//! run and prints the ratio. The measurements live with the stage they
//! measure; this module only dispatches.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Apply a generated 30-patch series with git2 vs `git am` on a copy.
    Apply,
    /// Rebase of the series onto another 6.1.y vs `git rebase` of it. By
    /// default: the newest version of the series (patches/ or the project's
    /// history) that rebases cleanly onto the base of another version.
    Rebase {
        /// The base to rebase onto (fetched if need be); it must take the
        /// series without a conflict. Default: chosen as above.
        #[arg(long)]
        to: Option<String>,
        /// Version N of the series, read from the project's git history
        /// when it is not the one in patches/ (default: with --to, the one
        /// in patches/).
        #[arg(long)]
        series_version: Option<u32>,
        /// How many rounds; the report gives the medians.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Tree import vs plain `tar x` of the same tarball.
    Import {
        /// Where both sides write (default: /dev/shm when it is a tmpfs
        /// with 4 GB free, else target/bench/).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Kernel build: cold, no-op, after touching virt/kvm/kvm_main.c.
    Build,
    /// Boot to the first KTAP line under TCG (and KVM where it works).
    Boot,
    /// Selftest suite on the host, per-area times.
    Selftests,
    /// One mutant the `test --mutant` way (series re-applied on a branch)
    /// vs `mutate run`'s worktree edit, same mutant, same run; with
    /// --generated N, N generated mutants as a sequential campaign vs a
    /// pipelined one.
    Mutate {
        /// A patches/mutants/NAME.patch.
        #[arg(
            long,
            default_value = "punch-no-invalidate",
            conflicts_with = "generated"
        )]
        mutant: String,
        /// Run this many generated mutants (of .c files) sequentially, then
        /// pipelined, and compare the seconds per mutant.
        #[arg(long, value_name = "N")]
        generated: Option<usize>,
        /// With --generated: the seed that picks and orders the mutants.
        #[arg(long, default_value = "bench", requires = "generated")]
        seed: String,
        /// With --generated: make's -j in both campaigns (default: CPUs).
        #[arg(long, short = 'j', requires = "generated")]
        jobs: Option<usize>,
    },
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::Apply => crate::series::bench_apply(),
        BenchCmd::Rebase {
            to,
            series_version,
            rounds,
        } => crate::series::bench_rebase(&crate::series::rebase_bench::BenchRequest {
            to,
            series_version,
            rounds,
        }),
        BenchCmd::Import { dir } => crate::tree::bench_import(dir.as_deref()),
        BenchCmd::Build => crate::build::bench_build(),
        BenchCmd::Boot => crate::boot::bench_boot(),
        BenchCmd::Selftests => crate::test::bench_selftests(),
        BenchCmd::Mutate {
            generated: Some(n),
            seed,
            jobs,
            ..
        } => crate::mutate::run::bench_pipeline(n, &seed, jobs),
        BenchCmd::Mutate { mutant, .. } => crate::mutate::run::bench_mutate(&mutant),
    }
}
