//! `cargo xtask mutate`: generated mutants over the lines the series adds.
//! `list` shows them; `run` builds, boots and judges each one on top of the
//! series (run.rs), after the unmutated series has passed.

pub mod equivalent;
pub mod generate;
pub mod model;
pub mod operators;
pub mod pipeline;
pub mod report;
pub mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum MutateCmd {
    /// Print the generated mutants (id, function, original -> mutated) and
    /// the hand-written ones in patches/mutants/.
    List(ListArgs),
    /// Run a campaign: the unmutated series first (it must pass), then each
    /// mutant as a one-line edit of the series tip, built incrementally,
    /// booted under virtme-ng and judged by the whole suite.
    Run(Box<RunArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Kernel tree (default: the pinned tree; the series is applied on a
    /// harness branch, the checkout is left alone).
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// Print the mutants as a JSON array (what `run --from` reads).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Kernel tree (default: the pinned tree).
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// Comma-separated fragments from kconfigs/ (base is always first).
    #[arg(long, default_value = "gmem")]
    pub config: String,
    /// Any text (CI passes the commit id): fixes the order of the generated
    /// mutants and so which ones `--sample` and `--budget` pick.
    #[arg(long, default_value = "0")]
    pub seed: String,
    /// Run only the first N generated mutants of the seeded order.
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Stop starting new mutants once this much wall time is spent
    /// (`20m`, `1h30m`, `90s`); the ones left are listed as not started.
    #[arg(long, value_parser = parse_budget)]
    pub budget: Option<Duration>,
    /// Run only this mutant: a generated id (FILE:LINE:OPERATOR[#N]) or the
    /// name of a patches/mutants/NAME.patch (repeatable).
    #[arg(long, value_name = "ID")]
    pub only: Vec<String>,
    /// Also run every hand-written patches/mutants/*.patch (before the
    /// generated ones).
    #[arg(long)]
    pub hand_written: bool,
    /// No generated mutants (with --hand-written: only the hand-written).
    #[arg(long)]
    pub no_generated: bool,
    /// Whole-run timeout per mutant's boot in seconds: a guest still
    /// running then is a hang, which kills the mutant (default: three times
    /// the baseline's boot + suite, at least 120 s; the baseline itself
    /// gets 900 s).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Per-case timeout passed to the selftests.
    #[arg(long)]
    pub case_timeout: Option<u64>,
    /// A mutant's guest whose suite, once started, prints nothing for this
    /// many seconds is killed as a hang (default: 1.5 times the baseline's
    /// whole suite, at least 30 s: no single case runs longer than the
    /// whole suite of the unmutated series). A hang then costs this, not
    /// the rest of the whole-run timeout.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: Option<u64>,
    /// A mutant's suite stops at its first failing case: a kill costs the
    /// cases up to it, not the whole suite, and names that one case as
    /// its killer. The baseline and every survivor still run everything.
    #[arg(long)]
    pub fail_fast: bool,
    /// auto, kvm or tcg, as for `cargo xtask test`.
    #[arg(long, value_enum, default_value_t = crate::boot::AccelRequest::Auto)]
    pub accel: crate::boot::AccelRequest,
    /// Use this selftests binary instead of building the workspace's.
    #[arg(long)]
    pub selftests: Option<PathBuf>,
    /// Do not rerun a survivor (the rerun rules out a flaky pass; without
    /// it a survivor is reported as survived once).
    #[arg(long)]
    pub no_rerun: bool,
    /// Leave out the mutants patches/mutants/equivalent.toml lists and the
    /// known survivors in patches/mutants/survivors.toml: a quick run (CI)
    /// checks that kills stay kills; scoring the listed ones (an equivalent
    /// that gets killed is wrong, a survivor that gets killed can go) is
    /// the whole campaign's job.
    #[arg(long)]
    pub skip_listed: bool,
    /// Take the generated mutants from this JSON file (an array of mutants,
    /// as `cargo xtask mutate list --json` writes) instead of generating.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Boot each mutant before building the next (default: the next mutant
    /// builds while the current one boots).
    #[arg(long)]
    pub sequential: bool,
    /// Parallel jobs for make (default: number of CPUs).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

fn parse_budget(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write it like 20m, 1h30m or 90s"))
}

pub fn run(cmd: MutateCmd) -> Result<ExitCode> {
    match cmd {
        MutateCmd::List(args) => run::list(&args),
        MutateCmd::Run(args) => run::run(&args),
    }
}

/// The report (mutants.json, mutants.md) beside campaign.json; prints its
/// text. `generated_total` is how many mutants the generator made.
pub(crate) fn write_reports(
    c: &run::Campaign,
    dir: &Path,
    run_id: &str,
    config: &str,
    generated_total: usize,
    stale_equivalents: Vec<equivalent::Stale>,
) -> Result<Vec<PathBuf>> {
    let rows = c
        .hand_written
        .iter()
        .map(|r| {
            report::Row::hand_written(
                &r.name,
                r.outcome.clone(),
                r.equivalent.clone(),
                r.seconds,
                r.run_id.clone(),
            )
        })
        .chain(c.generated.iter().map(report::Row::generated))
        .collect();
    let meta = report::Meta {
        series: format!("{} v{}", c.series.name, c.series.version),
        base: c.series.base.clone(),
        config: config.to_string(),
        seed: c.seed.clone(),
        generated_total,
        not_started: c.not_started.clone(),
        wall_s: c.wall_s,
        mutants_wall_s: (c.mutants_wall_s > 0.0).then_some(c.mutants_wall_s),
        baseline: Some(c.baseline.headline.clone()),
        stale_equivalents,
        run_id: Some(run_id.to_string()),
    };
    let r = report::build(rows, meta);
    println!("\n{}", r.text());
    r.write(dir)
}
