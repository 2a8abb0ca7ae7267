//! `cargo xtask bench rebase`: `series rebase` of the real series from its
//! pinned base onto a newer point release, against `git rebase` (and `git
//! replay`, which needs no work tree) of the same commits, measured in the
//! same run on trees already imported (fetching is not measured).
//!
//! Each side works on its own clone of the new base (`git clone --local`,
//! set up outside the timing); the git side sees the old base through an
//! alternate and has the series as a branch on it, checked out.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::rebase::{self, RebaseJob, RebaseRequest, RebaseResult};

const ROUNDS: usize = 3;

#[derive(Serialize)]
struct Report {
    series: String,
    from: String,
    to: String,
    rounds: usize,
    xtask_rebase_s: f64,
    git_rebase_s: f64,
    git_replay_s: f64,
    xtask_replay_only_s: f64,
    ratio_xtask_to_git_rebase: f64,
    same_tree: bool,
    tree: String,
    #[serde(skip)]
    git_tree: String,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Both sides' inputs, set up outside the timing.
struct Setup {
    series: super::Series,
    from: String,
    to: String,
    old: PathBuf,
    new: PathBuf,
    /// Holds every clone of the run; removed when dropped.
    scratch: tempfile::TempDir,
    /// The git side's clone: the series as branch bench-series, checked out.
    git_dir: PathBuf,
    new_commit: String,
    /// The series tip on the old base, in `git_dir`.
    old_tip: String,
}

/// One round's times and the trees each side produced.
struct Round {
    ours: Duration,
    survey: Duration,
    git_rebase: Duration,
    git_replay: Duration,
    our_tree: String,
    git_tree: String,
}

pub fn run(to: &str) -> Result<ExitCode> {
    let setup = set_up(to)?;
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let r = time_round(&setup, round)?;
        eprintln!(
            "  round {}/{ROUNDS}: xtask {:.3} s, git rebase {:.3} s, git replay {:.3} s",
            round + 1,
            secs(r.ours),
            secs(r.git_rebase),
            secs(r.git_replay)
        );
        rounds.push(r);
    }
    let report = summarize(&setup, &rounds);
    print_report(&report, setup.series.patches.len());
    let json = crate::util::target_dir().join("bench").join("rebase.json");
    crate::tree::dest_parent(&json)?;
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("written {}", json.display());
    Ok(if report.same_tree {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Fetches both bases and prepares the git side: a clone of the new base,
/// the old base visible through an alternate, the series applied on it as
/// branch bench-series, checked out.
fn set_up(to: &str) -> Result<Setup> {
    let series = super::load_series(super::DEFAULT_SERIES)?;
    let from = series.toml.base.version.clone();
    let old = rebase::fetch_base("debian", &from, None)?;
    let new = rebase::fetch_base("debian", to, None)?;
    let scratch_parent = crate::util::kernel_work_dir().join("bench");
    std::fs::create_dir_all(&scratch_parent)?;
    let scratch = tempfile::Builder::new()
        .prefix("rebase-")
        .tempdir_in(&scratch_parent)?;
    let sh = Shell::new()?;
    let old_objects = old.join(".git").join("objects");

    let git_dir = scratch.path().join("git");
    eprintln!("setting up the git side (clone, series branch, checkout; not timed)...");
    cmd!(sh, "git clone -q --local {new} {git_dir}")
        .quiet()
        .run()?;
    std::fs::write(
        git_dir.join(".git/objects/info/alternates"),
        format!("{}\n", old_objects.display()),
    )?;
    let old_commit = tag_commit(&old, &from)?;
    cmd!(sh, "git -C {git_dir} tag v{from} {old_commit}")
        .quiet()
        .run()?;
    let new_commit = tag_commit(&new, to)?;
    let applied = super::apply::apply_series(
        &series,
        &git_dir,
        &[],
        Some("bench-old"),
        &super::apply::ApplyOptions::default(),
    )?;
    let old_tip = applied
        .commits
        .iter()
        .rev()
        .find_map(|c| c.commit.clone())
        .context("the series applied no commit")?;
    cmd!(sh, "git -C {git_dir} checkout -q -B bench-series {old_tip}")
        .quiet()
        .run()?;
    Ok(Setup {
        series,
        from,
        to: to.to_string(),
        old,
        new,
        scratch,
        git_dir,
        new_commit,
        old_tip,
    })
}

/// The commit id of tag `v<version>` in the repository at `tree`.
fn tag_commit(tree: &Path, version: &str) -> Result<String> {
    Ok(git2::Repository::open(tree)?
        .revparse_single(&format!("refs/tags/v{version}"))?
        .peel_to_commit()?
        .id()
        .to_string())
}

fn time_round(setup: &Setup, round: usize) -> Result<Round> {
    let (ours, survey, our_tree) = time_ours(setup, round)?;
    let (git_rebase, git_replay, git_tree) = time_git(setup)?;
    Ok(Round {
        ours,
        survey,
        git_rebase,
        git_replay,
        our_tree,
        git_tree,
    })
}

/// `series rebase` on a fresh bare clone of the new base, then the replay
/// alone (what `series bases` does per release): both times and the tree.
fn time_ours(setup: &Setup, round: usize) -> Result<(Duration, Duration, String)> {
    let (s, sh) = (setup.scratch.path(), Shell::new()?);
    let (new, to, new_commit) = (&setup.new, &setup.to, &setup.new_commit);
    let ours_dir = s.join(format!("ours-{round}"));
    // Only the base: branches an earlier rebase left in the source tree stay out.
    cmd!(
        sh,
        "git clone -q --local --bare --no-tags --single-branch {new} {ours_dir}"
    )
    .quiet()
    .run()?;
    cmd!(sh, "git -C {ours_dir} tag v{to} {new_commit}")
        .quiet()
        .run()?;
    let req = RebaseRequest {
        job: RebaseJob {
            series_dir: setup.series.dir.clone(),
            old_tree: setup.old.clone(),
            new_tree: ours_dir.clone(),
            to: to.clone(),
            out: s.join(format!("out-{round}")).join(setup.series.name()),
            range_diff: s.join(format!("out-{round}.range-diff")),
        },
        worktree: Some(s.join(format!("wt-{round}"))),
        progress: false,
    };
    let t = Instant::now();
    let result = rebase::rebase(&req)?;
    let ours = t.elapsed();
    let t = Instant::now();
    rebase::survey(&setup.series, &setup.old, &ours_dir, to)?;
    let survey = t.elapsed();
    let RebaseResult::Done(done) = result else {
        bail!("series rebase stopped at a conflict; the benchmark needs a clean rebase");
    };
    let rev = format!("{}^{{tree}}", done.branch);
    let tree = cmd!(sh, "git -C {ours_dir} rev-parse {rev}")
        .quiet()
        .read()?;
    Ok((ours, survey, tree))
}

/// `git rebase` of the checked-out series branch, then `git replay` (no
/// work tree, like ours): both times and the rebased tree.
fn time_git(setup: &Setup) -> Result<(Duration, Duration, String)> {
    let sh = Shell::new()?;
    let (git_dir, old_tip) = (&setup.git_dir, &setup.old_tip);
    let (from, to) = (&setup.from, &setup.to);
    cmd!(sh, "git -C {git_dir} checkout -q -B bench-series {old_tip}")
        .quiet()
        .run()?;
    let t = Instant::now();
    cmd!(sh, "git -C {git_dir} -c user.name=bench -c user.email=bench@example.invalid rebase -q --onto v{to} v{from} bench-series")
        .quiet()
        .run()
        .context("git rebase (baseline)")?;
    let git_rebase = t.elapsed();
    let rev = "HEAD^{tree}";
    let tree = cmd!(sh, "git -C {git_dir} rev-parse {rev}")
        .quiet()
        .read()?;

    let t = Instant::now();
    let out = cmd!(
        sh,
        "git -C {git_dir} replay --onto v{to} v{from}..bench-old"
    )
    .quiet()
    .read()
    .context("git replay")?;
    let git_replay = t.elapsed();
    if out.trim().is_empty() {
        bail!("git replay printed no ref update");
    }
    Ok((git_rebase, git_replay, tree))
}

/// Medians over the rounds; the trees compared are the last round's.
fn summarize(setup: &Setup, rounds: &[Round]) -> Report {
    let med = |f: fn(&Round) -> Duration| median(rounds.iter().map(f).collect());
    let (o, g) = (med(|r| r.ours), med(|r| r.git_rebase));
    let (r, v) = (med(|r| r.git_replay), med(|r| r.survey));
    let last = rounds.last().expect("at least one round");
    Report {
        series: setup.series.name().to_string(),
        from: setup.from.clone(),
        to: setup.to.clone(),
        rounds: rounds.len(),
        xtask_rebase_s: secs(o),
        git_rebase_s: secs(g),
        git_replay_s: secs(r),
        xtask_replay_only_s: secs(v),
        ratio_xtask_to_git_rebase: secs(o) / secs(g),
        same_tree: last.our_tree == last.git_tree,
        tree: last.our_tree.clone(),
        git_tree: last.git_tree.clone(),
    }
}

fn print_report(report: &Report, patches: usize) {
    let (from, to, rounds) = (&report.from, &report.to, report.rounds);
    println!(
        "bench rebase: {} ({patches} patches) {from} -> {to}, median of {rounds} rounds",
        report.series
    );
    println!("{:<48} {:>8}", "method", "seconds");
    for (method, s) in [
        (
            "xtask series rebase (incl. export, range-diff)",
            report.xtask_rebase_s,
        ),
        (
            "xtask replay only (series bases, nothing kept)",
            report.xtask_replay_only_s,
        ),
        (
            "git rebase --onto (baseline, work tree)",
            report.git_rebase_s,
        ),
        ("git replay --onto (no work tree)", report.git_replay_s),
    ] {
        println!("{method:<48} {s:>8.3}");
    }
    let ratio = report.ratio_xtask_to_git_rebase;
    println!(
        "ratio xtask/git-rebase: {ratio:.2} (goal <= 1.00: {}); xtask/git-replay: {:.2}",
        if ratio <= 1.0 { "met" } else { "NOT met" },
        report.xtask_rebase_s / report.git_replay_s
    );
    if report.same_tree {
        println!("both produced tree {}", report.tree);
    } else {
        println!(
            "TREES DIFFER: xtask {}, git rebase {}",
            report.tree, report.git_tree
        );
    }
}
