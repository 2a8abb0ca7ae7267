//! `cargo xtask bench rebase`: `series rebase` of the real series from its
//! pinned base onto a newer point release, against `git rebase` (and `git
//! replay`, which needs no work tree) of the same commits, measured in the
//! same run on trees already imported (fetching is not measured).
//!
//! Each side works on its own clone of the new base (`git clone --local`,
//! set up outside the timing); the git side sees the old base through an
//! alternate and has the series as a branch on it, checked out.

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
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn run(to: &str) -> Result<ExitCode> {
    let series = super::load_series(super::DEFAULT_SERIES)?;
    let from = series.toml.base.version.clone();
    let old = rebase::fetch_base("debian", &from, None)?;
    let new = rebase::fetch_base("debian", to, None)?;
    let scratch_parent = crate::util::kernel_work_dir().join("bench");
    std::fs::create_dir_all(&scratch_parent)?;
    let scratch = tempfile::Builder::new()
        .prefix("rebase-")
        .tempdir_in(&scratch_parent)?;
    let s = scratch.path();
    let sh = Shell::new()?;
    let old_objects = old.join(".git").join("objects");

    // The git side: a clone of the new base, the old base visible through an
    // alternate, the series applied on it as branch bench-series, checked out.
    let git_dir = s.join("git");
    eprintln!("setting up the git side (clone, series branch, checkout; not timed)...");
    cmd!(sh, "git clone -q --local {new} {git_dir}")
        .quiet()
        .run()?;
    std::fs::write(
        git_dir.join(".git/objects/info/alternates"),
        format!("{}\n", old_objects.display()),
    )?;
    let old_commit = git2::Repository::open(&old)?
        .revparse_single(&format!("refs/tags/v{from}"))?
        .peel_to_commit()?
        .id()
        .to_string();
    cmd!(sh, "git -C {git_dir} tag v{from} {old_commit}")
        .quiet()
        .run()?;
    let new_commit = git2::Repository::open(&new)?
        .revparse_single(&format!("refs/tags/v{to}"))?
        .peel_to_commit()?
        .id()
        .to_string();
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

    let mut ours = Vec::new();
    let mut git_rebase = Vec::new();
    let mut git_replay = Vec::new();
    let mut survey = Vec::new();
    let mut our_tree = String::new();
    let mut git_tree = String::new();
    for round in 0..ROUNDS {
        // Ours, on a fresh bare clone of the new base.
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
                series_dir: series.dir.clone(),
                old_tree: old.clone(),
                new_tree: ours_dir.clone(),
                to: to.to_string(),
                out: s.join(format!("out-{round}")).join(series.name()),
                range_diff: s.join(format!("out-{round}.range-diff")),
            },
            worktree: Some(s.join(format!("wt-{round}"))),
            progress: false,
        };
        let t = Instant::now();
        let result = rebase::rebase(&req)?;
        ours.push(t.elapsed());
        // The replay alone (what `series bases` does per release).
        let t = Instant::now();
        rebase::survey(&series, &old, &ours_dir, to)?;
        survey.push(t.elapsed());
        let RebaseResult::Done(done) = result else {
            bail!("series rebase stopped at a conflict; the benchmark needs a clean rebase");
        };
        let rev = format!("{}^{{tree}}", done.branch);
        our_tree = cmd!(sh, "git -C {ours_dir} rev-parse {rev}")
            .quiet()
            .read()?;

        // git rebase on the checked-out series branch.
        cmd!(sh, "git -C {git_dir} checkout -q -B bench-series {old_tip}")
            .quiet()
            .run()?;
        let t = Instant::now();
        cmd!(sh, "git -C {git_dir} -c user.name=bench -c user.email=bench@example.invalid rebase -q --onto v{to} v{from} bench-series")
            .quiet()
            .run()
            .context("git rebase (baseline)")?;
        git_rebase.push(t.elapsed());
        let rev = "HEAD^{tree}";
        git_tree = cmd!(sh, "git -C {git_dir} rev-parse {rev}")
            .quiet()
            .read()?;

        // git replay: no work tree, like ours.
        let t = Instant::now();
        let out = cmd!(
            sh,
            "git -C {git_dir} replay --onto v{to} v{from}..bench-old"
        )
        .quiet()
        .read()
        .context("git replay")?;
        git_replay.push(t.elapsed());
        if out.trim().is_empty() {
            bail!("git replay printed no ref update");
        }
        eprintln!(
            "  round {}/{ROUNDS}: xtask {:.3} s, git rebase {:.3} s, git replay {:.3} s",
            round + 1,
            secs(ours[round]),
            secs(git_rebase[round]),
            secs(git_replay[round])
        );
    }
    let (o, g, r, v) = (
        median(ours),
        median(git_rebase),
        median(git_replay),
        median(survey),
    );
    let ratio = secs(o) / secs(g);
    println!(
        "bench rebase: {} ({} patches) {from} -> {to}, median of {ROUNDS} rounds",
        series.name(),
        series.patches.len()
    );
    println!("{:<48} {:>8}", "method", "seconds");
    println!(
        "{:<48} {:>8.3}",
        "xtask series rebase (incl. export, range-diff)",
        secs(o)
    );
    println!(
        "{:<48} {:>8.3}",
        "xtask replay only (series bases, nothing kept)",
        secs(v)
    );
    println!(
        "{:<48} {:>8.3}",
        "git rebase --onto (baseline, work tree)",
        secs(g)
    );
    println!(
        "{:<48} {:>8.3}",
        "git replay --onto (no work tree)",
        secs(r)
    );
    println!(
        "ratio xtask/git-rebase: {ratio:.2} (goal <= 1.00: {}); xtask/git-replay: {:.2}",
        if ratio <= 1.0 { "met" } else { "NOT met" },
        secs(o) / secs(r)
    );
    let same = our_tree == git_tree;
    println!(
        "{}",
        if same {
            format!("both produced tree {our_tree}")
        } else {
            format!("TREES DIFFER: xtask {our_tree}, git rebase {git_tree}")
        }
    );
    let report = Report {
        series: series.name().to_string(),
        from,
        to: to.to_string(),
        rounds: ROUNDS,
        xtask_rebase_s: secs(o),
        git_rebase_s: secs(g),
        git_replay_s: secs(r),
        xtask_replay_only_s: secs(v),
        ratio_xtask_to_git_rebase: ratio,
        same_tree: same,
        tree: our_tree,
    };
    let json = crate::util::target_dir().join("bench").join("rebase.json");
    crate::tree::dest_parent(&json)?;
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("written {}", json.display());
    Ok(if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
