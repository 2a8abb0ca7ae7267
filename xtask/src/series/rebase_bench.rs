//! `cargo xtask bench rebase`: `series rebase` of the real series from its
//! base onto another point release, against `git rebase` (and `git
//! replay`, which needs no work tree) of the same commits, measured in the
//! same run on trees already imported (fetching is not measured). Which
//! version of the series and which pair of bases: [`super::rebase_case`].
//!
//! Each side works on its own clone of the new base (`git clone --local`,
//! set up outside the timing); the git side sees the old base through an
//! alternate and has the series as a branch on it, checked out. The sides
//! take turns going first, so neither always finds the caches warmed by
//! the other. Every round's two trees must be the same.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::rebase::{self, RebaseJob, RebaseRequest, RebaseResult};
use super::rebase_case::{self, Case};

/// What `bench rebase` is asked for.
#[derive(Debug, Clone, Default)]
pub struct BenchRequest {
    pub to: Option<String>,
    pub series_version: Option<u32>,
    pub rounds: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub series: String,
    pub series_version: u32,
    /// The project commit the series was read from; None: patches/ as it is.
    pub series_commit: Option<String>,
    pub patches: usize,
    pub from: String,
    pub to: String,
    /// Pairs tried before this one and why they were passed over.
    pub passed_over: Vec<String>,
    pub rounds: Vec<RoundTimes>,
    /// Medians over the rounds (the ratio's is of the rounds' ratios).
    pub xtask_rebase_s: f64,
    pub git_rebase_s: f64,
    pub git_replay_s: f64,
    pub xtask_replay_only_s: f64,
    pub ratio_xtask_to_git_rebase: f64,
    pub same_tree: bool,
    /// The tree both sides produced (xtask's when they differ).
    pub tree: String,
}

/// One round, in seconds, and the trees each side produced.
#[derive(Debug, Clone, Serialize)]
pub struct RoundTimes {
    pub xtask_rebase_s: f64,
    pub xtask_replay_only_s: f64,
    pub git_rebase_s: f64,
    pub git_replay_s: f64,
    pub ratio: f64,
    pub xtask_first: bool,
    pub xtask_tree: String,
    pub git_tree: String,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The middle value (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(req: &BenchRequest) -> Result<ExitCode> {
    if req.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let scratch_parent = crate::util::kernel_work_dir().join("bench");
    std::fs::create_dir_all(&scratch_parent)?;
    let scratch = tempfile::Builder::new()
        .prefix("rebase-")
        .tempdir_in(&scratch_parent)?;
    let case = choose(req, scratch.path())?;
    for why in &case.passed_over {
        eprintln!("  passed over: {why}");
    }
    let report = measure(&case, req.rounds, scratch.path())?;
    print_report(&report);
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

/// The case the request names, or the default one.
fn choose(req: &BenchRequest, scratch: &Path) -> Result<Case> {
    let series_dir = crate::util::patches_dir().join(super::DEFAULT_SERIES);
    let project = crate::util::project_root();
    let history = scratch.join("series");
    let fetch = |v: &str| rebase::fetch_base("debian", v, None);
    let all = || rebase_case::versions(&project, &series_dir, &history);
    let Some(to) = &req.to else {
        return rebase_case::pick(&all()?, req.series_version, &fetch, scratch);
    };
    let now = rebase_case::current(&series_dir)?;
    let v = match req.series_version {
        None => now,
        Some(n) if n == now.version => now,
        Some(n) => all()?
            .into_iter()
            .find(|v| v.version == n)
            .with_context(|| format!("the project's history has no version {n} of the series"))?,
    };
    let suggest = || {
        let versions = all().ok()?;
        rebase_case::pick(&versions, None, &fetch, scratch).ok()
    };
    rebase_case::exact(&v, to, &fetch, scratch, suggest)
}

/// Both sides' inputs, set up outside the timing.
struct Setup<'c> {
    case: &'c Case,
    series: super::Series,
    scratch: PathBuf,
    /// The git side's clone: the series as branch bench-series, checked out.
    git_dir: PathBuf,
    /// The series tip on the old base, in `git_dir`.
    old_tip: String,
}

/// `rounds` rounds of both sides on `case`, in clones under `scratch`.
pub fn measure(case: &Case, rounds: usize, scratch: &Path) -> Result<Report> {
    let setup = set_up(case, scratch)?;
    eprintln!(
        "bench rebase: {} {} -> {}, {rounds} round(s)",
        setup.series.name(),
        case.series.describe(),
        case.to
    );
    let mut times = Vec::new();
    for round in 0..rounds {
        let r = time_round(&setup, round)?;
        eprintln!(
            "  round {}/{rounds}: xtask {:.3} s, git rebase {:.3} s (ratio {:.2}), git replay {:.3} s{}",
            round + 1,
            r.xtask_rebase_s,
            r.git_rebase_s,
            r.ratio,
            r.git_replay_s,
            if r.xtask_tree == r.git_tree {
                ""
            } else {
                "; TREES DIFFER"
            }
        );
        times.push(r);
    }
    Ok(summarize(case, &setup.series, times))
}

/// Prepares the git side: a clone of the new base, the old base visible
/// through an alternate, the series applied on it as branch bench-series,
/// checked out.
fn set_up<'c>(case: &'c Case, scratch: &Path) -> Result<Setup<'c>> {
    let series = super::Series::load(&case.series.dir)?;
    let (from, to) = (&case.series.base, &case.to);
    let (old, new) = (&case.old, &case.new);
    let sh = Shell::new()?;
    let git_dir = scratch.join("git");
    eprintln!("setting up the git side (clone, series branch, checkout; not timed)...");
    cmd!(sh, "git clone -q --local {new} {git_dir}")
        .quiet()
        .run()?;
    let old_objects = old.join(".git").join("objects");
    std::fs::write(
        git_dir.join(".git/objects/info/alternates"),
        format!("{}\n", old_objects.display()),
    )?;
    for (tree, version) in [(old, from), (new, to)] {
        let commit = tag_commit(tree, version)?;
        cmd!(sh, "git -C {git_dir} tag -f v{version} {commit}")
            .quiet()
            .run()?;
    }
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
        case,
        series,
        scratch: scratch.to_path_buf(),
        git_dir,
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

/// Both sides once; xtask goes first in even rounds.
fn time_round(setup: &Setup<'_>, round: usize) -> Result<RoundTimes> {
    let xtask_first = round.is_multiple_of(2);
    let (ours, git) = if xtask_first {
        let ours = time_ours(setup, round)?;
        (ours, time_git(setup)?)
    } else {
        let git = time_git(setup)?;
        (time_ours(setup, round)?, git)
    };
    Ok(RoundTimes {
        xtask_rebase_s: secs(ours.rebase),
        xtask_replay_only_s: secs(ours.survey),
        git_rebase_s: secs(git.rebase),
        git_replay_s: secs(git.replay),
        ratio: secs(ours.rebase) / secs(git.rebase),
        xtask_first,
        xtask_tree: ours.tree,
        git_tree: git.tree,
    })
}

struct Ours {
    rebase: Duration,
    survey: Duration,
    tree: String,
}

/// `series rebase` on a fresh bare clone of the new base (its output in
/// the scratch directory, never in patches/), then the replay alone (what
/// `series bases` does per release): both times and the rebased tree.
fn time_ours(setup: &Setup<'_>, round: usize) -> Result<Ours> {
    let (s, sh) = (&setup.scratch, Shell::new()?);
    let (case, to) = (setup.case, &setup.case.to);
    let ours_dir = s.join(format!("ours-{round}"));
    // Only the base: branches an earlier rebase left in the source tree stay out.
    rebase_case::bare_copy(&case.new, to, &ours_dir)?;
    let req = RebaseRequest {
        job: RebaseJob {
            series_dir: setup.series.dir.clone(),
            old_tree: case.old.clone(),
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
    let rebase_time = t.elapsed();
    let t = Instant::now();
    rebase::survey(&setup.series, &case.old, &ours_dir, to)?;
    let survey = t.elapsed();
    let RebaseResult::Done(done) = result else {
        bail!("series rebase stopped at a conflict the survey before the rounds did not see");
    };
    let rev = format!("{}^{{tree}}", done.branch);
    let tree = cmd!(sh, "git -C {ours_dir} rev-parse {rev}")
        .quiet()
        .read()?;
    Ok(Ours {
        rebase: rebase_time,
        survey,
        tree,
    })
}

struct Git {
    rebase: Duration,
    replay: Duration,
    tree: String,
}

/// `git rebase` of the checked-out series branch, then `git replay` (no
/// work tree, like ours): both times and the rebased tree.
fn time_git(setup: &Setup<'_>) -> Result<Git> {
    let sh = Shell::new()?;
    let (git_dir, old_tip) = (&setup.git_dir, &setup.old_tip);
    let (from, to) = (&setup.case.series.base, &setup.case.to);
    cmd!(sh, "git -C {git_dir} checkout -q -B bench-series {old_tip}")
        .quiet()
        .run()?;
    let t = Instant::now();
    cmd!(sh, "git -C {git_dir} -c user.name=bench -c user.email=bench@example.invalid rebase -q --onto v{to} v{from} bench-series")
        .quiet()
        .run()
        .context("git rebase (baseline)")?;
    let rebase = t.elapsed();
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
    let replay = t.elapsed();
    if out.trim().is_empty() {
        bail!("git replay printed no ref update");
    }
    Ok(Git {
        rebase,
        replay,
        tree,
    })
}

/// Medians over the rounds; the trees must agree in every round.
fn summarize(case: &Case, series: &super::Series, rounds: Vec<RoundTimes>) -> Report {
    let med = |f: fn(&RoundTimes) -> f64| median(rounds.iter().map(f).collect());
    let same_tree = rounds.iter().all(|r| r.xtask_tree == r.git_tree);
    Report {
        series: series.name().to_string(),
        series_version: case.series.version,
        series_commit: case.series.commit.clone(),
        patches: series.patches.len(),
        from: case.series.base.clone(),
        to: case.to.clone(),
        passed_over: case.passed_over.clone(),
        xtask_rebase_s: med(|r| r.xtask_rebase_s),
        git_rebase_s: med(|r| r.git_rebase_s),
        git_replay_s: med(|r| r.git_replay_s),
        xtask_replay_only_s: med(|r| r.xtask_replay_only_s),
        ratio_xtask_to_git_rebase: med(|r| r.ratio),
        same_tree,
        tree: rounds
            .last()
            .map(|r| r.xtask_tree.clone())
            .unwrap_or_default(),
        rounds,
    }
}

fn print_report(report: &Report) {
    let (from, to) = (&report.from, &report.to);
    let source = match &report.series_commit {
        Some(c) => format!("from commit {}", &c[..c.len().min(12)]),
        None => "as in patches/".to_string(),
    };
    println!(
        "bench rebase: {} v{} ({source}, {} patches) {from} -> {to}, median of {} rounds",
        report.series,
        report.series_version,
        report.patches,
        report.rounds.len()
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
    let ratios: Vec<String> = report
        .rounds
        .iter()
        .map(|r| format!("{:.2}", r.ratio))
        .collect();
    let ratio = report.ratio_xtask_to_git_rebase;
    println!(
        "ratio xtask/git-rebase: {ratio:.2} (median of rounds {}; goal <= 1.00: {}); xtask/git-replay: {:.2}",
        ratios.join(", "),
        if ratio <= 1.0 { "met" } else { "NOT met" },
        report.xtask_rebase_s / report.git_replay_s
    );
    if report.same_tree {
        println!("both produced tree {} in every round", report.tree);
    } else {
        for (n, r) in report.rounds.iter().enumerate() {
            if r.xtask_tree != r.git_tree {
                println!(
                    "TREES DIFFER in round {}: xtask {}, git rebase {}",
                    n + 1,
                    r.xtask_tree,
                    r.git_tree
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::rebase_case::SeriesVersion;

    fn round(ratio: f64, ours: &str, git: &str) -> RoundTimes {
        RoundTimes {
            xtask_rebase_s: ratio,
            xtask_replay_only_s: 0.1,
            git_rebase_s: 1.0,
            git_replay_s: 0.1,
            ratio,
            xtask_first: true,
            xtask_tree: ours.into(),
            git_tree: git.into(),
        }
    }

    #[test]
    fn one_round_whose_trees_differ_fails_the_report_and_ratios_take_the_median() {
        let dir = crate::util::patches_dir().join(crate::series::DEFAULT_SERIES);
        let series = crate::series::Series::load(&dir).unwrap();
        let case = Case {
            series: SeriesVersion {
                version: series.toml.version,
                base: series.toml.base.version.clone(),
                commit: None,
                dir,
            },
            to: "6.1.176".into(),
            old: PathBuf::new(),
            new: PathBuf::new(),
            passed_over: vec![],
        };
        let same = summarize(
            &case,
            &series,
            vec![
                round(0.3, "a", "a"),
                round(1.2, "a", "a"),
                round(0.9, "a", "a"),
            ],
        );
        assert!(same.same_tree);
        assert_eq!(same.ratio_xtask_to_git_rebase, 0.9);
        let differ = summarize(
            &case,
            &series,
            vec![
                round(0.3, "a", "a"),
                round(0.4, "a", "b"),
                round(0.5, "a", "a"),
            ],
        );
        assert!(!differ.same_tree);
        assert_eq!(median(vec![2.0, 1.0]), 2.0);
    }
}
