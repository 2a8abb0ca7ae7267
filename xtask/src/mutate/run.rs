//! Running a campaign: the series tip is checked out once in the scratch
//! worktree and built; each mutant is then an edit of that worktree (one
//! line for a generated mutant, `git apply` for a hand-written patch), an
//! incremental `make bzImage` in the shared build directory, a boot and the
//! whole suite. The edit is undone before the next one, so make sees only
//! the files that mutant changes (plus the one it restores).
//!
//! Verdicts: a run that fails names its culprits (killed), a hang or panic
//! is a kill by timeout or panic, a pass is rerun once on the same image
//! (survived when it passes again, flaky when it is killed the second
//! time), a compile error is build-failed, anything else is an error. Only
//! killed and survived mutants are in the score.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use super::model::{Mutant, MutantId, MutantResult, Outcome};
use super::pipeline::{self, Schedule};
use super::{ListArgs, RunArgs};
use crate::build::{self, BuildPlan};
use crate::kconfig;
use crate::results::{RunResult, SeriesTag};
use crate::test::{self, TestArgs};
use crate::util;

/// What a campaign runs: a generated one-line mutant or a hand-written
/// patch from patches/mutants/.
#[derive(Debug, Clone)]
pub enum Subject {
    Generated(Mutant),
    HandWritten { name: String, patch: PathBuf },
}

impl Subject {
    pub fn name(&self) -> String {
        match self {
            Subject::Generated(m) => m.id.to_string(),
            Subject::HandWritten { name, .. } => name.clone(),
        }
    }
}

/// Where one mutant's time went: the wall time of each of its stages.
/// Pipelined, its apply and build ran (in part) while the previous mutant
/// booted; `overlap_s` is that part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Editing the worktree (and undoing the previous edit).
    pub apply_s: f64,
    /// `make bzImage` after the edit, and the copy of the image to boot.
    pub build_s: f64,
    /// Boot to the first KTAP line.
    pub boot_s: f64,
    /// The suite, from the first KTAP line to the guest's exit.
    pub suite_s: f64,
    /// The survivor's second boot and suite (or the second boot of a run
    /// in which no case ran), when there was one.
    pub rerun_s: f64,
    /// Seconds of apply + build that ran while the previous mutant (or the
    /// baseline) booted: the time the pipeline saved on this mutant.
    #[serde(default)]
    pub overlap_s: f64,
}

impl Timing {
    /// Every stage's wall time, added up.
    pub fn total(&self) -> f64 {
        self.apply_s + self.build_s + self.boot_s + self.suite_s + self.rerun_s
    }

    /// What this mutant added to the campaign's wall time: its stages less
    /// the part that ran beside another mutant's boot.
    pub fn added(&self) -> f64 {
        self.total() - self.overlap_s
    }
}

/// A hand-written mutant's result (its name is not a generated id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandWrittenResult {
    pub name: String,
    pub outcome: Outcome,
    pub equivalent: Option<String>,
    pub seconds: f64,
    pub run_id: Option<String>,
}

/// The unmutated series' run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub passed: bool,
    pub headline: String,
    pub run_id: Option<String>,
    pub timing: Timing,
}

/// Everything a campaign did, as written to campaign.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub series: SeriesTag,
    pub seed: String,
    pub baseline: Baseline,
    pub generated: Vec<MutantResult>,
    pub hand_written: Vec<HandWrittenResult>,
    /// Per mutant (by id or name), in run order.
    pub timings: Vec<(String, Timing)>,
    /// Mutants the budget left unstarted, in the order they would have run.
    pub not_started: Vec<String>,
    /// Wall time of the whole campaign, baseline included.
    pub wall_s: f64,
    /// Wall time from the baseline's verdict to the last mutant's: what the
    /// mutants cost, divided by their number for seconds per mutant.
    #[serde(default)]
    pub mutants_wall_s: f64,
    /// Pipelined (the next mutant builds while one boots) or sequential.
    #[serde(default)]
    pub schedule: Schedule,
    /// make's -j.
    #[serde(default)]
    pub jobs: usize,
}

/// Counts over every mutant that ran (generated and hand-written): the
/// report's, so the campaign and its report cannot count differently.
pub use super::report::Counts;

impl Campaign {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.generated {
            c.add_outcome(&r.outcome, r.equivalent.is_some());
        }
        for r in &self.hand_written {
            c.add_outcome(&r.outcome, r.equivalent.is_some());
        }
        c
    }

    /// Seconds per mutant that ran (the mutants' wall time over their
    /// number, baseline excluded), and the mean wall time of each stage.
    pub fn per_mutant(&self) -> Option<(f64, Timing)> {
        let n = self.timings.len();
        if n == 0 {
            return None;
        }
        let mut sum = Timing::default();
        for (_, t) in &self.timings {
            sum.apply_s += t.apply_s;
            sum.build_s += t.build_s;
            sum.boot_s += t.boot_s;
            sum.suite_s += t.suite_s;
            sum.rerun_s += t.rerun_s;
            sum.overlap_s += t.overlap_s;
        }
        let d = n as f64;
        let mean = Timing {
            apply_s: sum.apply_s / d,
            build_s: sum.build_s / d,
            boot_s: sum.boot_s / d,
            suite_s: sum.suite_s / d,
            rerun_s: sum.rerun_s / d,
            overlap_s: sum.overlap_s / d,
        };
        // A campaign.json from before the mutants' wall time was kept.
        let wall = if self.mutants_wall_s > 0.0 {
            self.mutants_wall_s
        } else {
            sum.added()
        };
        Some((wall / d, mean))
    }
}

/// A deterministic order of the generated mutants for `seed`: sorted by id,
/// then shuffled by a generator seeded from sha256(seed), so the same seed
/// and the same series give the same order on every machine.
pub fn seeded_order(mut mutants: Vec<Mutant>, seed: &str) -> Vec<Mutant> {
    mutants.sort_by(|a, b| a.id.cmp(&b.id));
    let digest = Sha256::digest(seed.as_bytes());
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    let mut rng = fastrand::Rng::with_seed(u64::from_le_bytes(word));
    rng.shuffle(&mut mutants);
    mutants
}

/// Every patches/mutants/*.patch, by name.
pub fn hand_written() -> Result<Vec<(String, PathBuf)>> {
    let dir = util::patches_dir().join("mutants");
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".patch")?.to_string();
            Some((name, e.path()))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The generated mutants and the series tip their lines are from (None
/// for mutants read from a file: the series is applied again).
struct Source {
    mutants: Vec<Mutant>,
    tip: Option<String>,
}

fn generated(tree: &Path) -> Result<Source> {
    let g = super::generate::generate(tree)?;
    Ok(Source {
        mutants: g.mutants,
        tip: Some(g.tip),
    })
}

/// Picks the subjects the arguments ask for, in run order (hand-written
/// first, then the seeded generated ones).
pub fn select(
    args: &RunArgs,
    generated: Vec<Mutant>,
    hand: Vec<(String, PathBuf)>,
) -> Result<Vec<Subject>> {
    if !args.only.is_empty() {
        let mut out = Vec::new();
        for want in &args.only {
            if let Some((name, patch)) = hand.iter().find(|(n, _)| n == want) {
                out.push(Subject::HandWritten {
                    name: name.clone(),
                    patch: patch.clone(),
                });
                continue;
            }
            let id: MutantId = want.parse().map_err(|e: String| {
                anyhow::anyhow!(
                    "--only {want}: neither a patches/mutants/{want}.patch nor a mutant id: {e}"
                )
            })?;
            let Some(m) = generated.iter().find(|m| m.id == id) else {
                bail!("--only {want}: the generator makes no such mutant of this series (`cargo xtask mutate list` shows them)");
            };
            out.push(Subject::Generated(m.clone()));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    if args.hand_written {
        out.extend(
            hand.into_iter()
                .map(|(name, patch)| Subject::HandWritten { name, patch }),
        );
    }
    if !args.no_generated {
        let mut order = seeded_order(generated, &args.seed);
        if let Some(n) = args.sample {
            order.truncate(n);
        }
        out.extend(order.into_iter().map(Subject::Generated));
    }
    if out.is_empty() {
        bail!("nothing to run: --no-generated without --hand-written (or --sample 0)");
    }
    Ok(out)
}

/// The one edit the scratch worktree carries on top of the series tip.
enum Active {
    None,
    /// A generated mutant's file, with its text as the tip has it.
    Line {
        path: PathBuf,
        pristine: String,
    },
    /// A hand-written patch, applied with `git apply`.
    Patch(PathBuf),
}

/// The series tip checked out in the harness's scratch worktree, with at
/// most one mutant's edit on it. Dropping it undoes the edit.
pub struct Worktree {
    src: PathBuf,
    active: Active,
}

/// Where a campaign notes the edit it has on the worktree, beside it:
/// one stopped mid-mutant (Ctrl-C, a killed CI job) leaves the edit in
/// place, and the next campaign undoes exactly that edit and nothing else.
fn edit_note(src: &Path) -> PathBuf {
    let mut name = src.file_name().unwrap_or_default().to_os_string();
    name.push(".mutant-edit.json");
    src.with_file_name(name)
}

/// The edit an [`edit_note`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum EditNote {
    /// A generated mutant's line, in this file (relative to the worktree).
    Line { mutant: String, file: String },
    /// A hand-written patch, applied with `git apply`.
    Patch { patch: PathBuf },
}

impl Worktree {
    /// `src` must be a clean checkout of the series tip, or one whose only
    /// changes are the edit a stopped campaign noted (which is undone).
    pub fn new(src: PathBuf) -> Result<Worktree> {
        let sh = Shell::new()?;
        sh.change_dir(&src);
        let status = || {
            cmd!(sh, "git status --porcelain --untracked-files=no")
                .quiet()
                .read()
        };
        let mut dirty = status()?;
        if !dirty.trim().is_empty() {
            if let Some(undone) = undo_noted_edit(&sh, &src, &dirty)? {
                println!("mutate: {undone}");
                dirty = status()?;
            }
        }
        if !dirty.trim().is_empty() {
            bail!(
                "{} has changes on top of the series tip; a campaign edits only a clean checkout:\n{}",
                src.display(),
                dirty
            );
        }
        Ok(Worktree {
            src,
            active: Active::None,
        })
    }

    fn note(&self, note: &EditNote) -> Result<()> {
        let path = edit_note(&self.src);
        std::fs::write(&path, serde_json::to_string(note)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn src(&self) -> &Path {
        &self.src
    }

    /// Puts `m`'s line in place. A mutant of the file already edited is
    /// written over that edit, so make sees that one file changed.
    pub fn set_line(&mut self, m: &Mutant) -> Result<()> {
        let path = self.src.join(&m.id.file);
        let same_file = matches!(&self.active, Active::Line { path: p, .. } if *p == path);
        if !same_file {
            self.restore()?;
        }
        let pristine = match &self.active {
            Active::Line { pristine, .. } => pristine.clone(),
            _ => std::fs::read_to_string(&path)
                .with_context(|| format!("mutant {}: cannot read {}", m.id, path.display()))?,
        };
        let text = mutate_text(&pristine, m)?;
        self.note(&EditNote::Line {
            mutant: m.id.to_string(),
            file: m.id.file.clone(),
        })?;
        write_beside(&path, &text)?;
        self.active = Active::Line { path, pristine };
        Ok(())
    }

    /// Applies a hand-written patch (after undoing any edit).
    pub fn apply_patch(&mut self, patch: &Path) -> Result<()> {
        self.restore()?;
        let sh = Shell::new()?;
        sh.change_dir(&self.src);
        cmd!(sh, "git apply --check {patch}")
            .quiet()
            .run()
            .with_context(|| format!("{} does not apply on the series tip", patch.display()))?;
        self.note(&EditNote::Patch {
            patch: patch.to_path_buf(),
        })?;
        cmd!(sh, "git apply {patch}").quiet().run()?;
        self.active = Active::Patch(patch.to_path_buf());
        Ok(())
    }

    /// Back to the series tip. The restored file gets a new mtime (its
    /// object is the mutant's), so the next build recompiles it.
    pub fn restore(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.active, Active::None) {
            Active::None => {}
            Active::Line { path, pristine } => write_beside(&path, &pristine)?,
            Active::Patch(patch) => {
                let sh = Shell::new()?;
                sh.change_dir(&self.src);
                cmd!(sh, "git apply -R {patch}")
                    .quiet()
                    .run()
                    .with_context(|| {
                        format!("undoing {} in {}", patch.display(), self.src.display())
                    })?;
            }
        }
        let note = edit_note(&self.src);
        if note.exists() {
            std::fs::remove_file(&note).with_context(|| format!("removing {}", note.display()))?;
        }
        Ok(())
    }
}

/// Undoes the edit a stopped campaign noted beside `src`, when `dirty`
/// (`git status --porcelain`) shows exactly that edit; what it did, or
/// None when there is no note or the changes are not (only) the noted edit.
fn undo_noted_edit(sh: &Shell, src: &Path, dirty: &str) -> Result<Option<String>> {
    let path = edit_note(src);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let Ok(note) = serde_json::from_str::<EditNote>(&text) else {
        return Ok(None);
    };
    let changed: Vec<&str> = dirty
        .lines()
        .filter_map(|l| l.get(3..))
        .map(str::trim)
        .collect();
    let what = match &note {
        EditNote::Line { mutant, file } => {
            if changed != [file.as_str()] {
                return Ok(None);
            }
            cmd!(sh, "git checkout -- {file}").quiet().run()?;
            format!("undid mutant {mutant}, left in {file} by a campaign that stopped")
        }
        EditNote::Patch { patch } => {
            if cmd!(sh, "git apply -R --check {patch}")
                .quiet()
                .run()
                .is_err()
            {
                return Ok(None);
            }
            cmd!(sh, "git apply -R {patch}").quiet().run()?;
            format!(
                "undid {}, left applied by a campaign that stopped",
                patch.display()
            )
        }
    };
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(Some(what))
}

impl Drop for Worktree {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!(
                "mutate: could not restore the series tip in {}: {e:#}; `git -C {} checkout -- .` does",
                self.src.display(),
                self.src.display()
            );
        }
    }
}

/// `text` with line `m.id.line` replaced by `m.mutated`, after checking
/// that the line is `m.original` (else the mutant is not of this tree).
pub fn mutate_text(text: &str, m: &Mutant) -> Result<String> {
    let idx = (m.id.line as usize)
        .checked_sub(1)
        .context("line 0 does not exist")?;
    let mut out = String::with_capacity(text.len() + m.mutated.len());
    let mut found = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i == idx {
            let body = line.strip_suffix('\n').unwrap_or(line);
            if body != m.original {
                bail!(
                    "mutant {}: line {} of {} is `{}`, the mutant expects `{}` (generated from another series tip? run `cargo xtask mutate list` again)",
                    m.id,
                    m.id.line,
                    m.id.file,
                    body.trim(),
                    m.original.trim()
                );
            }
            out.push_str(&m.mutated);
            if line.ends_with('\n') {
                out.push('\n');
            }
            found = true;
        } else {
            out.push_str(line);
        }
    }
    if !found {
        bail!(
            "mutant {}: {} has fewer than {} lines",
            m.id,
            m.id.file,
            m.id.line
        );
    }
    Ok(out)
}

/// Writes `text` to a temporary file beside `path` and renames it over.
fn write_beside(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("a file has a directory")?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    let perm = std::fs::metadata(path).map(|m| m.permissions()).ok();
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    if let Some(p) = perm {
        std::fs::set_permissions(path, p).ok();
    }
    Ok(())
}

/// What a judged run says: culprits kill; a hang or panic kills (naming
/// the running case when there was one); a kernel splat outside any case
/// kills too, since the unmutated kernel booted without one (an oops, BUG
/// or general protection fault counts as a panic: the kernel died); a pass
/// survives (for now); a run that failed with nobody and nothing to blame,
/// or never reached the suite, is an error.
pub fn judge_run(r: &RunResult) -> Outcome {
    use crate::results::run::Outcome as Run;
    use protocol::splat::SplatKind;
    let by: Vec<String> = r
        .culprits
        .iter()
        .map(|c| format!("{} ({})", c.case, c.why))
        .collect();
    match &r.outcome {
        Run::Passed => Outcome::Survived,
        Run::Hang(_) => Outcome::Timeout { by },
        Run::Panic(_) => Outcome::Panic { by },
        Run::Failed(_) if !by.is_empty() => Outcome::Killed { by },
        Run::Failed(_) if !r.splats.is_empty() => {
            let by = r
                .splats
                .iter()
                .map(|s| {
                    let when = s.test.as_deref().unwrap_or(&s.phase);
                    format!("{when} (kernel splat: {})", s.title)
                })
                .collect();
            let died = r.splats.iter().any(|s| {
                matches!(
                    s.kind,
                    SplatKind::Oops
                        | SplatKind::Bug
                        | SplatKind::GeneralProtectionFault
                        | SplatKind::Panic
                )
            });
            if died {
                Outcome::Panic { by }
            } else {
                Outcome::Killed { by }
            }
        }
        other => Outcome::Error {
            detail: other.headline(),
        },
    }
}

/// The campaign's fixed parts: where it builds, what it boots with.
struct Bench {
    test: TestArgs,
    plan: BuildPlan,
    series: SeriesTag,
    /// `--fail-fast` for mutants' boots.
    fail_fast: bool,
}

/// A boot's cost split, from its result.
fn boot_split(r: &RunResult) -> (f64, f64) {
    let boot = r.boot_to_first_ktap_s.unwrap_or(r.duration_s);
    (boot, (r.duration_s - boot).max(0.0))
}

/// A job's kernel, copied out of the build directory right after its
/// build, so that the next build (pipelined, while this one boots) cannot
/// change what this job boots. Removed once dropped.
struct Image {
    path: PathBuf,
    release: Option<String>,
    /// The job's apply and build; its boot adds the rest.
    timing: Timing,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A job's verdict with where its time went.
struct Verdict {
    outcome: Outcome,
    run_id: Option<String>,
    timing: Timing,
}

impl Verdict {
    fn without_boot(outcome: Outcome, timing: Timing) -> Verdict {
        Verdict {
            outcome,
            run_id: None,
            timing,
        }
    }
}

impl Bench {
    /// Builds what the worktree holds now and copies the image to
    /// `copy`; a build that fails is the job's verdict.
    fn build_image(&self, label: &str, copy: PathBuf, mut t: Timing) -> Result<Image, Verdict> {
        let start = Instant::now();
        let built = match build::make_bzimage(&self.plan) {
            Ok(b) => b,
            Err(e) => {
                t.build_s = start.elapsed().as_secs_f64();
                let log_tail = format!("{e:#}");
                return Err(Verdict::without_boot(Outcome::BuildFailed { log_tail }, t));
            }
        };
        let copied = std::fs::copy(&built.image, &copy);
        t.build_s = start.elapsed().as_secs_f64();
        if let Err(e) = copied {
            let detail = format!(
                "copying {} to {}: {e}",
                built.image.display(),
                copy.display()
            );
            return Err(Verdict::without_boot(Outcome::Error { detail }, t));
        }
        println!(
            "{label}: built in {:.1}s ({} objects compiled)",
            t.build_s, built.compiled
        );
        Ok(Image {
            path: copy,
            release: built.kernel_release,
            timing: t,
        })
    }

    fn boot(&self, image: &Image, mutant: &str, limits: Option<Limits>) -> Result<RunResult> {
        let mut tag = self.series.clone();
        tag.mutant = (!mutant.is_empty()).then(|| mutant.to_string());
        let mut args = self.test.clone();
        if let Some(l) = limits {
            args.timeout = Some(l.run);
            args.stall_timeout = Some(l.stall);
        }
        // Only a mutant's boot may stop early: the baseline must show that
        // every case passes.
        args.fail_fast = self.fail_fast && !mutant.is_empty();
        test::boot_image(
            &args,
            &image.path,
            image.release.clone(),
            Some(tag),
            &self.plan.fragments,
        )
    }

    /// Boots `image` and judges the run; a pass is rerun once when `rerun`.
    /// `limits` replace the whole-run and stall timeouts of `self.test`.
    fn judge_image(
        &self,
        name: &str,
        image: &Image,
        rerun: bool,
        limits: Option<Limits>,
    ) -> Verdict {
        let mut t = image.timing;
        let label = if name.is_empty() { "baseline" } else { name };
        let first = match self.boot(image, name, limits) {
            Ok(r) => r,
            Err(e) => {
                let detail = format!("{e:#}");
                return Verdict::without_boot(Outcome::Error { detail }, t);
            }
        };
        (t.boot_s, t.suite_s) = boot_split(&first);
        let mut outcome = judge_run(&first);
        let mut first = first;
        if let Outcome::Error { detail } = &outcome {
            // No case ran (the kernel did not come up, or the suite never
            // started): under TCG on a loaded machine that can be the
            // machine's doing. One more boot of the same image tells; a
            // mutant that really stops the boot fails it again.
            println!(
                "{label}: no case ran ({}); booting the same image once more",
                detail.lines().next().unwrap_or("")
            );
            let first_detail = detail.clone();
            if let Ok(r) = self.boot(image, name, limits) {
                t.rerun_s = r.duration_s;
                outcome = match judge_run(&r) {
                    Outcome::Error { detail } => Outcome::Error {
                        detail: format!("twice no case ran: {first_detail}; again: {detail}"),
                    },
                    other => other,
                };
                first = r;
            }
        }
        if outcome != Outcome::Survived || !rerun {
            return Verdict {
                outcome,
                run_id: Some(first.run_id),
                timing: t,
            };
        }
        println!("mutant {name}: every case passed; rerunning once to rule out a flaky pass");
        match self.boot(image, name, limits) {
            Ok(r) => {
                t.rerun_s = r.duration_s;
                let outcome = match judge_run(&r) {
                    Outcome::Survived => Outcome::Survived,
                    Outcome::Killed { by } | Outcome::Timeout { by } | Outcome::Panic { by } => {
                        Outcome::Flaky { by }
                    }
                    other => other,
                };
                Verdict {
                    outcome,
                    run_id: Some(r.run_id),
                    timing: t,
                }
            }
            Err(e) => Verdict {
                outcome: Outcome::Error {
                    detail: format!("the survivor's rerun could not run: {e:#}"),
                },
                run_id: Some(first.run_id),
                timing: t,
            },
        }
    }
}

/// The arguments `cargo xtask mutate run ARGS...` would get, parsed by the
/// real CLI (every field not named has its default).
fn run_args(args: &[&str]) -> Result<RunArgs> {
    use clap::Parser;
    let argv = ["cargo xtask", "mutate", "run"].iter().chain(args);
    match crate::cli::Cli::try_parse_from(argv)?.command {
        crate::cli::Command::Mutate(super::MutateCmd::Run(a)) => Ok(*a),
        _ => unreachable!("parsed a `mutate run` command line"),
    }
}

/// The `cargo xtask test` arguments every boot of a campaign uses.
fn test_args(args: &RunArgs, selftests: Option<&Path>) -> Result<TestArgs> {
    let mut argv = vec![
        "--config".to_string(),
        args.config.clone(),
        "--accel".into(),
        args.accel.name().into(),
        "--timeout".into(),
        args.timeout.unwrap_or(900).to_string(),
    ];
    if let Some(t) = args.case_timeout {
        argv.extend(["--case-timeout".into(), t.to_string()]);
    }
    if let Some(s) = selftests {
        argv.extend(["--selftests".into(), s.display().to_string()]);
    }
    TestArgs::from_cli(&argv)
}

fn default_tree(tree: &Option<PathBuf>) -> Result<PathBuf> {
    match tree {
        Some(t) => Ok(t.clone()),
        None => crate::tree::ensure_default_tree()
            .context("no --tree given and the default tree is not available"),
    }
}

/// A campaign's fixed parts, set up before the baseline: the build and boot
/// bench, the worktree the mutants edit, the equivalence list.
struct Setup {
    bench: Bench,
    wt: Worktree,
    equivalent: super::equivalent::Equivalents,
    /// Holds the campaign's copy of the selftests binary.
    _selftests_copy: tempfile::TempDir,
}

/// Plans the campaign: the series, its checkout at `tip` (or applied
/// afresh), the configured build directory and the selftests binary.
fn setup(args: &RunArgs, tip: Option<&str>) -> Result<Setup> {
    let Some(series) = test::series_tag(None) else {
        bail!("cannot read patches/guest_memfd/series.toml: mutants are edits of that series");
    };
    let equivalent = super::equivalent::load(&super::equivalent::default_path())?;
    let tree = default_tree(&args.tree)?;
    let fragments = kconfig::fragment_list(&args.config)?;
    // Built once and copied: every boot of the campaign runs the same
    // binary, even when the workspace's is rebuilt while it runs.
    let built = test::selftests_binary(&test_args(args, args.selftests.as_deref())?)?;
    // Under the target directory: the guest sees the host's file system,
    // but virtme-ng gives it a /tmp of its own.
    let copy_dir = tempfile::Builder::new()
        .prefix("mutate-selftests-")
        .tempdir_in(crate::util::target_dir())
        .context("creating a directory for the campaign's selftests binary")?;
    let selftests = copy_dir.path().join("gmem-selftests");
    std::fs::copy(&built, &selftests)
        .with_context(|| format!("copying {} to {}", built.display(), selftests.display()))?;
    let test = test_args(args, Some(&selftests))?;
    println!(
        "\n=== baseline: the unmutated series v{} on {} (must pass before any mutant counts)",
        series.version, series.base
    );
    // The generator left the tip on its branch; mutants from a file get
    // the series applied afresh.
    let src = match tip {
        Some(tip) => crate::series::checkout::scratch_worktree(&tree, tip)?,
        None => crate::series::checkout(&tree, &crate::series::Purpose::Baseline)?.worktree,
    };
    let wt = Worktree::new(src)?;
    let mut plan = build::plan(wt.src(), &fragments, args.jobs, true)?;
    if !args.sequential {
        // A boot prints while make runs: no progress bar between its
        // lines. The guest's vCPU threads get the CPU first (TCG boots
        // on both cores, the suite mostly on one) and make the rest.
        plan.progress = false;
        plan.nice = PIPELINED_BUILD_NICE;
    }
    build::configure(&plan)?;
    Ok(Setup {
        bench: Bench {
            test,
            plan,
            series,
            fail_fast: args.fail_fast,
        },
        wt,
        equivalent,
        _selftests_copy: copy_dir,
    })
}

/// make's niceness beside a boot: the guest's vCPU threads (nice 0) get
/// three times its share of a contended core, other helpers' `nice -n
/// 10` builds a third of it.
const PIPELINED_BUILD_NICE: u8 = 5;

/// What a campaign builds and boots, in order: the unmutated series (it
/// must pass before any mutant counts), then each mutant.
enum Job {
    Baseline,
    Mutant(Subject),
}

/// The deadlines of a mutant's boot, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    /// The whole run.
    run: u64,
    /// The suite's silence once it started.
    stall: u64,
}

/// A mutant's deadlines: `--timeout` and `--stall-timeout`, else scaled to
/// what the unmutated series took on this machine now. The whole-run
/// timeout is the backstop; a kernel that hangs under a case is caught by
/// the stall timeout, which only has to outlast the longest case.
fn per_boot_limits(args: &RunArgs, baseline: &Timing) -> Limits {
    Limits {
        run: args.timeout.unwrap_or_else(|| {
            ((3.0 * (baseline.boot_s + baseline.suite_s)).ceil() as u64).max(120)
        }),
        stall: args
            .stall_timeout
            .unwrap_or_else(|| ((1.5 * baseline.suite_s).ceil() as u64).max(30)),
    }
}

fn baseline_of(v: &Verdict) -> Baseline {
    Baseline {
        passed: v.outcome == Outcome::Survived,
        headline: match &v.outcome {
            Outcome::Survived => "PASSED".into(),
            other => format!("{other:?}"),
        },
        run_id: v.run_id.clone(),
        timing: v.timing,
    }
}

/// One mutant's verdict, before it is filed in the campaign.
struct Judged {
    subject: Subject,
    outcome: Outcome,
    equivalent: Option<String>,
    timing: Timing,
    run_id: Option<String>,
}

fn equivalent_reason(list: &super::equivalent::Equivalents, s: &Subject) -> Option<String> {
    match s {
        Subject::Generated(m) => list.reason_for(m),
        Subject::HandWritten { name, .. } => list.reason_for_name(name),
    }
    .map(str::to_string)
}

/// The verdict line: outcome and the wall time of each stage.
fn print_verdict(name: &str, v: &Verdict, equivalent: bool) {
    let t = &v.timing;
    println!(
        "mutant {name}: {} ({:.1}s: apply {:.1}, build {:.1}, boot {:.1}, suite {:.1}{})",
        outcome_text(&v.outcome, equivalent),
        t.total(),
        t.apply_s,
        t.build_s,
        t.boot_s,
        t.suite_s,
        if t.rerun_s > 0.0 {
            format!(", rerun {:.1}", t.rerun_s)
        } else {
            String::new()
        }
    );
}

/// The build stage: it alone edits the worktree and runs make.
struct Builder<'a> {
    bench: &'a Bench,
    wt: &'a mut Worktree,
    equivalent: &'a super::equivalent::Equivalents,
    /// Where each job's image is copied for its boot.
    images: &'a Path,
    mutants: usize,
    wall: Instant,
}

impl Builder<'_> {
    /// Job `i`: a mutant's edit of the worktree (after undoing the
    /// previous one), then the build and the copy of its image. A mutant
    /// that does not apply or build gets its verdict here.
    fn build(&mut self, i: usize, job: &Job) -> Result<Image, Verdict> {
        let copy = self.images.join(format!("{i}.bzImage"));
        let s = match job {
            Job::Baseline => return self.bench.build_image("baseline", copy, Timing::default()),
            Job::Mutant(s) => s,
        };
        let name = s.name();
        println!(
            "\n=== mutant {i}/{}: {name} ({:.0}s into the campaign)",
            self.mutants,
            self.wall.elapsed().as_secs_f64()
        );
        let mut t = Timing::default();
        let start = Instant::now();
        let applied = match s {
            Subject::Generated(m) => {
                println!(
                    "  {}\n  -> {}\n  in {}",
                    m.original.trim(),
                    m.mutated.trim(),
                    m.function.as_deref().unwrap_or("?")
                );
                self.wt.set_line(m)
            }
            Subject::HandWritten { patch, .. } => self.wt.apply_patch(patch),
        };
        t.apply_s = start.elapsed().as_secs_f64();
        let built = match applied {
            Ok(()) => self.bench.build_image(&name, copy, t),
            Err(e) => {
                let detail = format!("{e:#}");
                Err(Verdict::without_boot(Outcome::Error { detail }, t))
            }
        };
        if let Err(v) = &built {
            print_verdict(&name, v, equivalent_reason(self.equivalent, s).is_some());
        }
        built
    }
}

/// Runs the baseline and then `subjects`, pipelined unless `--sequential`;
/// stops starting new mutants when `budget` is spent.
fn campaign(args: &RunArgs, subjects: Vec<Subject>, tip: Option<String>) -> Result<Campaign> {
    let wall = Instant::now();
    let mut setup = setup(args, tip.as_deref())?;
    let schedule = if args.sequential {
        Schedule::Sequential
    } else {
        Schedule::Pipelined
    };
    let jobs_n = setup.bench.plan.jobs;
    println!(
        "mutate: {} (make -j{jobs_n}){}",
        schedule.name(),
        match schedule {
            Schedule::Pipelined => ": each build runs while the job before it boots",
            Schedule::Sequential => "",
        }
    );
    let images = tempfile::Builder::new()
        .prefix("xtask-mutant-images-")
        .tempdir()
        .context("creating a directory for the images the mutants boot")?;
    let total = subjects.len();
    let jobs: Vec<Job> = std::iter::once(Job::Baseline)
        .chain(subjects.into_iter().map(Job::Mutant))
        .collect();
    let per_boot: OnceLock<Limits> = OnceLock::new();
    let baseline_done: OnceLock<Instant> = OnceLock::new();
    let may_start = |i: usize| {
        let Some(b) = args.budget.filter(|b| i > 0 && wall.elapsed() >= *b) else {
            return true;
        };
        println!(
            "\nbudget of {} spent after {} of {total} mutants: {} not started",
            humantime::format_duration(b),
            i - 1,
            total - (i - 1)
        );
        false
    };
    let (bench, equivalent) = (&setup.bench, &setup.equivalent);
    let boot = |_: usize, job: &Job, image: Image| match job {
        Job::Baseline => {
            let v = bench.judge_image("", &image, false, None);
            let limits = per_boot_limits(args, &v.timing);
            per_boot.get_or_init(|| limits);
            baseline_done.get_or_init(Instant::now);
            println!(
                "baseline: {}; per-mutant boot timeout: {}s ({}); stall timeout: {}s ({})",
                outcome_text(&v.outcome, false),
                limits.run,
                if args.timeout.is_some() {
                    "--timeout"
                } else {
                    "3x the baseline's boot + suite, at least 120 s"
                },
                limits.stall,
                if args.stall_timeout.is_some() {
                    "--stall-timeout"
                } else {
                    "1.5x the baseline's suite, at least 30 s"
                }
            );
            v
        }
        Job::Mutant(s) => {
            let name = s.name();
            let v = bench.judge_image(&name, &image, !args.no_rerun, per_boot.get().copied());
            print_verdict(&name, &v, equivalent_reason(equivalent, s).is_some());
            v
        }
    };
    let mut builder = Builder {
        bench,
        wt: &mut setup.wt,
        equivalent,
        images: images.path(),
        mutants: total,
        wall,
    };
    let filed = pipeline::run(
        &jobs,
        schedule,
        may_start,
        |i, job: &Job| builder.build(i, job),
        boot,
        |i, v: &Verdict| i > 0 || v.outcome == Outcome::Survived,
    );
    let mutants_wall_s = baseline_done
        .get()
        .map_or(0.0, |t| t.elapsed().as_secs_f64());
    setup.wt.restore()?;
    let mut filed = filed.into_iter();
    let base = filed.next().context("the baseline always starts")?;
    let mut out = Campaign::new(
        setup.bench.series.clone(),
        &args.seed,
        baseline_of(&base.result),
    );
    out.schedule = schedule;
    out.jobs = jobs_n;
    let mut subjects = jobs.into_iter().filter_map(|j| match j {
        Job::Mutant(s) => Some(s),
        Job::Baseline => None,
    });
    if out.baseline.passed {
        out.mutants_wall_s = mutants_wall_s;
    } else {
        println!(
            "baseline did not pass ({}): no mutant is run",
            out.baseline.headline
        );
    }
    for (f, subject) in filed.zip(&mut subjects) {
        let equivalent = equivalent_reason(&setup.equivalent, &subject);
        out.record(Judged {
            subject,
            outcome: f.result.outcome,
            equivalent,
            timing: Timing {
                overlap_s: f.overlap_s,
                ..f.result.timing
            },
            run_id: f.result.run_id,
        });
    }
    out.not_started = subjects.map(|s| s.name()).collect();
    out.wall_s = wall.elapsed().as_secs_f64();
    Ok(out)
}

impl Campaign {
    /// A campaign with its baseline and nothing run yet.
    fn new(series: SeriesTag, seed: &str, baseline: Baseline) -> Campaign {
        Campaign {
            series,
            seed: seed.to_string(),
            baseline,
            generated: Vec::new(),
            hand_written: Vec::new(),
            timings: Vec::new(),
            not_started: Vec::new(),
            wall_s: 0.0,
            mutants_wall_s: 0.0,
            schedule: Schedule::default(),
            jobs: 0,
        }
    }

    /// Files a mutant's verdict with the generated or the hand-written ones.
    fn record(&mut self, j: Judged) {
        let t = j.timing;
        self.timings.push((j.subject.name(), t));
        match j.subject {
            Subject::Generated(m) => self.generated.push(MutantResult {
                mutant: m,
                outcome: j.outcome,
                equivalent: j.equivalent,
                seconds: t.added(),
                run_id: j.run_id,
            }),
            Subject::HandWritten { name, .. } => self.hand_written.push(HandWrittenResult {
                name,
                outcome: j.outcome,
                equivalent: j.equivalent,
                seconds: t.added(),
                run_id: j.run_id,
            }),
        }
    }
}

pub fn outcome_text(o: &Outcome, equivalent: bool) -> String {
    let by = |v: &Vec<String>| {
        if v.is_empty() {
            "outside any case".to_string()
        } else {
            crate::results::brief(v, 2)
        }
    };
    let text = match o {
        Outcome::Killed { by: v } => format!("KILLED by {}", by(v)),
        Outcome::Timeout { by: v } => format!("KILLED (hang) during {}", by(v)),
        Outcome::Panic { by: v } => format!("KILLED (panic) during {}", by(v)),
        Outcome::Survived if equivalent => "EQUIVALENT (survived; listed)".into(),
        Outcome::Survived => "SURVIVED (twice)".into(),
        Outcome::Flaky { by: v } => format!("FLAKY: passed, then killed by {}", by(v)),
        Outcome::BuildFailed { log_tail } => {
            format!("BUILD-FAILED: {}", log_tail.lines().next().unwrap_or(""))
        }
        Outcome::Error { detail } => format!("ERROR: {}", detail.lines().next().unwrap_or("")),
    };
    if equivalent && o.is_kill() {
        format!("{text} -- listed as equivalent, yet killed: fix the entry")
    } else {
        text
    }
}

fn print_summary(c: &Campaign) {
    println!(
        "\nbaseline (unmutated series): {} (run {}, build {:.1}s, boot {:.1}s, suite {:.1}s)",
        c.baseline.headline,
        c.baseline.run_id.as_deref().unwrap_or("none"),
        c.baseline.timing.build_s,
        c.baseline.timing.boot_s,
        c.baseline.timing.suite_s
    );
    let rows: Vec<(String, &Outcome, bool)> = c
        .hand_written
        .iter()
        .map(|r| (r.name.clone(), &r.outcome, r.equivalent.is_some()))
        .chain(
            c.generated
                .iter()
                .map(|r| (r.mutant.id.to_string(), &r.outcome, r.equivalent.is_some())),
        )
        .collect();
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(6).max(6);
    println!("\n{:<w$}  verdict", "mutant");
    for (name, o, eq) in &rows {
        println!("{name:<w$}  {}", outcome_text(o, *eq));
    }
    let n = c.counts();
    let (k, s) = n.score();
    println!(
        "\nmutation score: {k}/{s} ({:.0}%): {} killed by a case, {} by a hang, {} by a panic, {} survived",
        100.0 * k as f64 / s.max(1) as f64,
        n.killed,
        n.timeout,
        n.panic,
        n.survived
    );
    println!(
        "not scored: {} equivalent, {} flaky, {} build-failed, {} error, {} not started (budget)",
        n.equivalent,
        n.flaky,
        n.build_failed,
        n.error,
        c.not_started.len()
    );
    if n.equivalent_killed > 0 {
        println!(
            "{} mutant(s) listed in equivalent.toml were killed: those entries are wrong",
            n.equivalent_killed
        );
    }
    match c.per_mutant() {
        Some((per, m)) => {
            println!(
                "time: {:.0}s wall for {} mutants + baseline ({}, make -j{}); the mutants {:.0}s wall: {per:.1}s per mutant",
                c.wall_s,
                c.timings.len(),
                c.schedule.name(),
                c.jobs,
                c.mutants_wall_s
            );
            println!(
                "  stages per mutant (wall time each): apply {:.1}, build {:.1}, boot {:.1}, suite {:.1}, survivor reruns {:.1}; sum {:.1}, of which {:.1} built beside another boot (what the pipeline saved)",
                m.apply_s,
                m.build_s,
                m.boot_s,
                m.suite_s,
                m.rerun_s,
                m.total(),
                m.overlap_s
            );
        }
        None => println!("time: {:.0}s wall, no mutant ran", c.wall_s),
    }
}

/// `cargo xtask mutate run`.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    crate::doctor::preflight(&[
        crate::doctor::Stage::Tree,
        crate::doctor::Stage::Build,
        crate::doctor::Stage::Boot,
    ])?;
    let tree = default_tree(&args.tree)?;
    let hand = hand_written()?;
    let source = if args.no_generated && args.only.is_empty() {
        Source {
            mutants: Vec::new(),
            tip: None,
        }
    } else if let Some(f) = &args.from {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--from {}: cannot read it", f.display()))?;
        Source {
            mutants: serde_json::from_str(&text).with_context(|| {
                format!(
                    "--from {}: not a JSON array of mutants (`cargo xtask mutate list --json` writes one)",
                    f.display()
                )
            })?,
            tip: None,
        }
    } else {
        generated(&tree)?
    };
    let all_generated = source.mutants;
    let mut subjects = select(args, all_generated.clone(), hand)?;
    if args.skip_listed {
        let listed = super::equivalent::load(&super::equivalent::default_path())?;
        let known = super::equivalent::load_survivors(&super::equivalent::survivors_path())?;
        let before = subjects.len();
        subjects.retain(|s| match s {
            Subject::Generated(m) => {
                listed.reason_for(m).is_none() && known.reason_for(m).is_none()
            }
            Subject::HandWritten { name, .. } => listed.reason_for_name(name).is_none(),
        });
        println!(
            "mutate: --skip-listed leaves out {} mutant(s) listed in equivalent.toml or survivors.toml",
            before - subjects.len()
        );
    }
    println!(
        "mutate: {} mutants to run (seed `{}`{}{})",
        subjects.len(),
        args.seed,
        args.sample
            .map(|n| format!(", sample {n}"))
            .unwrap_or_default(),
        args.budget
            .map(|b| format!(", budget {}", humantime::format_duration(b)))
            .unwrap_or_default()
    );
    let c = campaign(args, subjects, source.tip)?;
    print_summary(&c);
    let (run_id, dir) = test::new_run_dir("mutate")?;
    let path = dir.join("campaign.json");
    std::fs::write(&path, serde_json::to_string_pretty(&c)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let stale = super::equivalent::load(&super::equivalent::default_path())?
        .stale(&all_generated, &util::patches_dir().join("mutants"));
    for f in super::write_reports(&c, &dir, &run_id, &args.config, all_generated.len(), stale)? {
        println!("files: {}", f.display());
    }
    println!("files: {} (run {run_id})", path.display());
    let n = c.counts();
    let ok = c.baseline.passed
        && n.survived == 0
        && n.flaky == 0
        && n.error == 0
        && n.build_failed == 0
        && n.equivalent_killed == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo xtask mutate list`.
pub fn list(args: &ListArgs) -> Result<ExitCode> {
    let tree = default_tree(&args.tree)?;
    let generated = generated(&tree)?.mutants;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&generated)?);
        return Ok(ExitCode::SUCCESS);
    }
    let w = generated
        .iter()
        .map(|m| m.id.to_string().len())
        .max()
        .unwrap_or(2);
    for m in &generated {
        println!(
            "{:<w$}  {:<28}  {}  ->  {}",
            m.id.to_string(),
            m.function.as_deref().unwrap_or("?"),
            m.original.trim(),
            m.mutated.trim()
        );
    }
    let hand = hand_written()?;
    println!(
        "\n{} generated mutants; {} hand-written in patches/mutants/: {}",
        generated.len(),
        hand.len(),
        hand.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask bench mutate`: the same hand-written mutant the
/// `test --mutant` way (series and patch applied on a new branch, checked
/// out, configured, built, booted) and the campaign's way (the patch
/// applied to the built series tip, built, booted), each after a build of
/// the series tip, in one run; prints both costs and their ratio.
pub fn bench_mutate(name: &str) -> Result<ExitCode> {
    crate::doctor::preflight(&[
        crate::doctor::Stage::Tree,
        crate::doctor::Stage::Build,
        crate::doctor::Stage::Boot,
    ])?;
    let hand = hand_written()?;
    let Some((_, patch)) = hand.iter().find(|(n, _)| n == name) else {
        bail!(
            "--mutant {name}: no patches/mutants/{name}.patch (there are: {})",
            hand.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let Some(series) = test::series_tag(None) else {
        bail!("cannot read patches/guest_memfd/series.toml");
    };
    let tree = default_tree(&None)?;
    let args = run_args(&["--no-rerun"])?;
    let fragments = kconfig::fragment_list(&args.config)?;
    let bin = test::selftests_binary(&test_args(&args, None)?)?;
    let targs = test_args(&args, Some(&bin))?;
    let tip_build = |label: &str| -> Result<(PathBuf, BuildPlan)> {
        println!("\n=== bench mutate: the series tip, built ({label}, not timed)");
        let src = crate::series::checkout(&tree, &crate::series::Purpose::Baseline)?.worktree;
        let plan = build::plan(&src, &fragments, None, true)?;
        build::configure(&plan)?;
        build::make_bzimage(&plan)?;
        Ok((src, plan))
    };
    tip_build("before the `test --mutant` path")?;
    println!("\n=== bench mutate: {name} the `test --mutant` way");
    let t0 = Instant::now();
    let old = test::test_mutant(&targs, &tree, name);
    let old_s = t0.elapsed().as_secs_f64();
    let (src, plan) = tip_build("before the campaign path")?;
    println!("\n=== bench mutate: {name} the `mutate run` way");
    let mut wt = Worktree::new(src)?;
    let bench = Bench {
        test: targs,
        plan,
        series,
        fail_fast: false,
    };
    let images = tempfile::tempdir()?;
    let mut t = Timing::default();
    let t1 = Instant::now();
    let fast = match wt.apply_patch(patch) {
        Ok(()) => {
            t.apply_s = t1.elapsed().as_secs_f64();
            match bench.build_image(name, images.path().join("bzImage"), t) {
                Ok(image) => bench.judge_image(name, &image, false, None),
                Err(v) => v,
            }
        }
        Err(e) => Verdict::without_boot(
            Outcome::Error {
                detail: format!("{e:#}"),
            },
            t,
        ),
    };
    let fast_s = t1.elapsed().as_secs_f64();
    let (fast, t) = (fast.outcome, fast.timing);
    wt.restore()?;
    println!("\nmutant {name}");
    println!(
        "  test --mutant (baseline): {old_s:>6.1}s  {} {}",
        old.verdict.label(),
        crate::results::brief(&old.killed_by, 1)
    );
    println!(
        "  mutate run:               {fast_s:>6.1}s  {} (apply {:.1}, build {:.1}, boot {:.1}, suite {:.1})",
        outcome_text(&fast, false),
        t.apply_s,
        t.build_s,
        t.boot_s,
        t.suite_s
    );
    println!(
        "  ratio (baseline / mutate run): {:.2}; goal: mutate run <= 30 s per mutant",
        old_s / fast_s.max(0.001)
    );
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask bench mutate --generated N`: the same N generated mutants
/// (the first in `seed`'s order that edit a `.c` file: a header's mutant
/// rebuilds every includer and would swamp the rest) run as a sequential
/// campaign, then as a pipelined one, each after its baseline, in one run;
/// prints the seconds per mutant of both, their ratio, and whether the
/// verdicts agree.
pub fn bench_pipeline(n: usize, seed: &str, jobs: Option<usize>) -> Result<ExitCode> {
    crate::doctor::preflight(&[
        crate::doctor::Stage::Tree,
        crate::doctor::Stage::Build,
        crate::doctor::Stage::Boot,
    ])?;
    let tree = default_tree(&None)?;
    let source = generated(&tree)?;
    let picked: Vec<Mutant> = seeded_order(source.mutants, seed)
        .into_iter()
        .filter(|m| m.id.file.ends_with(".c"))
        .take(n)
        .collect();
    if picked.len() < n {
        bail!(
            "--generated {n}: the series has only {} mutants of .c files",
            picked.len()
        );
    }
    // Neither side may reuse the other's compiles. ccache stays in make's
    // command line (taking it out would rebuild every object) but is
    // bypassed.
    std::env::set_var("CCACHE_DISABLE", "1");
    let mut argv: Vec<String> = vec!["--seed".into(), seed.into()];
    for m in &picked {
        argv.extend(["--only".into(), m.id.to_string()]);
    }
    if let Some(j) = jobs {
        argv.extend(["--jobs".into(), j.to_string()]);
    }
    let mut runs = Vec::new();
    for schedule in [Schedule::Sequential, Schedule::Pipelined] {
        let mut a: Vec<&str> = argv.iter().map(String::as_str).collect();
        if schedule == Schedule::Sequential {
            a.push("--sequential");
        }
        let args = run_args(&a)?;
        let load = build::load_average();
        println!(
            "\n=== bench mutate: {n} generated mutants, {} (load average {load})",
            schedule.name()
        );
        let subjects = select(&args, picked.clone(), Vec::new())?;
        let c = campaign(&args, subjects, source.tip.clone())?;
        print_summary(&c);
        if !c.baseline.passed {
            bail!(
                "the {} campaign's baseline did not pass ({}): nothing to compare",
                schedule.name(),
                c.baseline.headline
            );
        }
        runs.push((c, load));
    }
    println!(
        "\nbench mutate: {n} generated mutants of .c files (seed `{seed}`), ccache bypassed, make -j{}",
        runs[0].0.jobs
    );
    println!(
        "{:<12} {:>12} {:>12} {:>14} {:>14}  load before",
        "schedule", "mutants wall", "per mutant", "stages/mutant", "overlapped"
    );
    for (c, load) in &runs {
        let Some((per, mean)) = c.per_mutant() else {
            bail!("the {} campaign ran no mutant", c.schedule.name());
        };
        println!(
            "{:<12} {:>11.1}s {:>11.1}s {:>13.1}s {:>13.1}s  {load}",
            c.schedule.name(),
            c.mutants_wall_s,
            per,
            mean.total(),
            mean.overlap_s
        );
    }
    let per = |c: &Campaign| c.per_mutant().map_or(0.0, |p| p.0);
    let (seq, pipe) = (&runs[0].0, &runs[1].0);
    println!(
        "ratio (sequential / pipelined, seconds per mutant): {:.2}; goal: <= 30 s per mutant",
        per(seq) / per(pipe).max(0.001)
    );
    let differ: Vec<String> = seq
        .generated
        .iter()
        .zip(&pipe.generated)
        .filter(|(a, b)| std::mem::discriminant(&a.outcome) != std::mem::discriminant(&b.outcome))
        .map(|(a, b)| {
            format!(
                "  {}: sequential {}, pipelined {}",
                a.mutant.id,
                outcome_text(&a.outcome, false),
                outcome_text(&b.outcome, false)
            )
        })
        .collect();
    if differ.is_empty() {
        println!("verdicts: the same for all {n} mutants in both runs");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("verdicts differ between the runs:\n{}", differ.join("\n"));
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::model::Operator;

    fn mutant(line: u32, original: &str, mutated: &str) -> Mutant {
        Mutant {
            id: MutantId {
                file: "virt/kvm/guest_memfd.c".into(),
                line,
                op: Operator::NegateCondition,
                nth: 1,
            },
            function: Some("f".into()),
            original: original.into(),
            mutated: mutated.into(),
            diff: String::new(),
        }
    }

    fn failed_run(culprits: &[&str], splats: &[(protocol::splat::SplatKind, &str)]) -> RunResult {
        use crate::results::judge::Culprit;
        use crate::results::Splat;
        RunResult {
            outcome: crate::results::run::Outcome::Failed(vec!["KTAP: no KTAP header".into()]),
            culprits: culprits
                .iter()
                .map(|c| Culprit {
                    case: c.to_string(),
                    why: "FAIL".into(),
                })
                .collect(),
            splats: splats
                .iter()
                .map(|(kind, title)| Splat {
                    kind: *kind,
                    title: title.to_string(),
                    line: 1,
                    test: None,
                    phase: "boot".into(),
                    excerpt: vec![],
                })
                .collect(),
            ..RunResult::default()
        }
    }

    /// A git checkout whose virt/kvm/guest_memfd.c holds `text`, as the
    /// scratch worktree holds the series tip: its directory and that file.
    fn tip_checkout(dir: &Path, text: &str) -> (PathBuf, PathBuf) {
        let src = dir.join("series-src");
        let file = src.join("virt/kvm/guest_memfd.c");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        let sh = Shell::new().unwrap();
        sh.change_dir(&src);
        cmd!(sh, "git init -q").run().unwrap();
        cmd!(sh, "git add -A").run().unwrap();
        cmd!(sh, "git -c user.name=t -c user.email=t@t commit -qm tip")
            .run()
            .unwrap();
        (src, file)
    }

    #[test]
    fn a_stopped_campaigns_edit_is_undone_next_time_and_nothing_else_is() {
        let dir = tempfile::tempdir().unwrap();
        let (src, file) = tip_checkout(dir.path(), "a\nif (x)\nb\n");
        let sh = Shell::new().unwrap();
        sh.change_dir(&src);

        // A campaign stopped mid-mutant: its edit stays, its Drop never ran.
        let mut wt = Worktree::new(src.clone()).unwrap();
        wt.set_line(&mutant(2, "if (x)", "if (!x)")).unwrap();
        std::mem::forget(wt);
        assert!(std::fs::read_to_string(&file).unwrap().contains("!x"));
        assert!(edit_note(&src).exists());

        let wt = Worktree::new(src.clone()).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a\nif (x)\nb\n");
        assert!(!edit_note(&src).exists());
        drop(wt);

        // A change the note does not account for is the user's: refused.
        let mut wt = Worktree::new(src.clone()).unwrap();
        wt.set_line(&mutant(2, "if (x)", "if (!x)")).unwrap();
        std::mem::forget(wt);
        std::fs::write(src.join("other.c"), "mine\n").unwrap();
        cmd!(sh, "git add other.c").run().unwrap();
        let err = Worktree::new(src.clone()).err().expect("refused");
        assert!(format!("{err:#}").contains("has changes on top of the series tip"));
        assert!(
            std::fs::read_to_string(&file).unwrap().contains("!x"),
            "left as found"
        );
    }

    #[test]
    fn pipelined_each_boot_gets_its_own_build_while_the_worktree_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let tip = "a\nif (x)\nb\nif (y)\n";
        let (src, file) = tip_checkout(dir.path(), tip);
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        let jobs = [
            Job::Baseline,
            Job::Mutant(Subject::Generated(mutant(2, "if (x)", "if (!x)"))),
            Job::Mutant(Subject::Generated(mutant(4, "if (y)", "if (!y)"))),
        ];
        let mut wt = Worktree::new(src.clone()).unwrap();
        let filed = pipeline::run(
            &jobs,
            Schedule::Pipelined,
            |_| true,
            |i, job: &Job| {
                if let Job::Mutant(Subject::Generated(m)) = job {
                    wt.set_line(m).unwrap();
                    let note = std::fs::read_to_string(edit_note(&src)).unwrap();
                    assert!(note.contains(&m.id.to_string()), "the note names the edit");
                }
                // The "build": the worktree's file as it is now, copied.
                let path = images.join(format!("{i}.bzImage"));
                std::fs::copy(&file, &path).unwrap();
                Ok::<_, String>(Image {
                    path,
                    release: None,
                    timing: Timing::default(),
                })
            },
            |_, _: &Job, image: Image| {
                // Long enough for the next build to edit the worktree.
                std::thread::sleep(std::time::Duration::from_millis(50));
                std::fs::read_to_string(&image.path).unwrap()
            },
            |_, _: &String| true,
        );
        let booted: Vec<&str> = filed.iter().map(|f| f.result.as_str()).collect();
        assert_eq!(
            booted,
            [tip, "a\nif (!x)\nb\nif (y)\n", "a\nif (x)\nb\nif (!y)\n"],
            "each boot saw its own mutant and nothing else"
        );
        assert_eq!(
            std::fs::read_dir(&images).unwrap().count(),
            0,
            "every image is removed once booted"
        );
        wt.restore().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), tip);
        assert!(!edit_note(&src).exists());
    }

    #[test]
    fn a_splat_with_no_case_to_blame_kills_and_a_bare_failure_is_an_error() {
        use protocol::splat::SplatKind;
        let oops = failed_run(&[], &[(SplatKind::Oops, "Oops: 0000 [#1] SMP")]);
        match judge_run(&oops) {
            Outcome::Panic { by } => assert_eq!(by, ["boot (kernel splat: Oops: 0000 [#1] SMP)"]),
            other => panic!("an oops at boot is a panic kill, got {other:?}"),
        }
        let warn = failed_run(&[], &[(SplatKind::Warning, "WARNING: at kvm_main.c:1376")]);
        assert!(matches!(judge_run(&warn), Outcome::Killed { .. }));
        let blamed = failed_run(&["create.basic@default"], &[(SplatKind::Oops, "Oops")]);
        match judge_run(&blamed) {
            Outcome::Killed { by } => assert_eq!(by, ["create.basic@default (FAIL)"]),
            other => panic!("a failing case is named first, got {other:?}"),
        }
        assert!(matches!(
            judge_run(&failed_run(&[], &[])),
            Outcome::Error { .. }
        ));
    }

    #[test]
    fn a_mutant_changes_exactly_its_line_and_checks_the_original() {
        let text = "a\n\tif (x)\n\t\treturn 0;\n";
        let m = mutant(2, "\tif (x)", "\tif (!(x))");
        assert_eq!(
            mutate_text(text, &m).unwrap(),
            "a\n\tif (!(x))\n\t\treturn 0;\n"
        );
        let stale = mutant(3, "\tif (x)", "\tif (!(x))");
        let e = mutate_text(text, &stale).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("mutate list"), "{e}");
        let past = mutant(9, "\tif (x)", "\tif (!(x))");
        assert!(mutate_text(text, &past)
            .unwrap_err()
            .to_string()
            .contains("fewer than 9"));
    }

    #[test]
    fn the_seeded_order_depends_only_on_the_seed_and_the_set() {
        let ms: Vec<Mutant> = (1..=20).map(|l| mutant(l, "x", "y")).collect();
        let mut reversed = ms.clone();
        reversed.reverse();
        let a = seeded_order(ms.clone(), "abc");
        assert_eq!(a, seeded_order(reversed, "abc"));
        assert_ne!(a, seeded_order(ms.clone(), "abd"));
        let mut sorted = a.clone();
        sorted.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(sorted, ms);
    }

    #[test]
    fn only_takes_hand_written_names_and_ids_and_rejects_the_rest() {
        let gen = vec![mutant(2, "x", "y")];
        let hand = vec![("punch-no-invalidate".to_string(), PathBuf::from("p.patch"))];
        let mut args = run_args(&[]).unwrap();
        args.only = vec![
            "punch-no-invalidate".into(),
            "virt/kvm/guest_memfd.c:2:negate-condition".into(),
        ];
        let s = select(&args, gen.clone(), hand.clone()).unwrap();
        assert_eq!(s.iter().map(Subject::name).collect::<Vec<_>>(), args.only);
        args.only = vec!["virt/kvm/guest_memfd.c:3:negate-condition".into()];
        let e = select(&args, gen.clone(), hand.clone()).unwrap_err();
        assert!(e.to_string().contains("mutate list"), "{e}");
        args.only = vec!["no-such".into()];
        let e = select(&args, gen.clone(), hand.clone()).unwrap_err();
        assert!(
            e.to_string().contains("patches/mutants/no-such.patch"),
            "{e}"
        );
        args.only.clear();
        args.hand_written = true;
        args.sample = Some(0);
        let s = select(&args, gen, hand).unwrap();
        assert_eq!(s.len(), 1, "the hand-written one, no generated");
    }

    #[test]
    fn a_campaign_boots_with_test_defaults_but_what_it_sets() {
        let mut args = run_args(&[
            "--config",
            "gmem,numa",
            "--accel",
            "tcg",
            "--case-timeout",
            "7",
        ])
        .unwrap();
        let got = test_args(&args, Some(Path::new("/bin/true"))).unwrap();
        let mut want = TestArgs::from_cli::<&str>(&[]).unwrap();
        want.config = "gmem,numa".into();
        want.accel = crate::boot::AccelRequest::Tcg;
        want.timeout = Some(900);
        want.case_timeout = Some(7);
        want.selftests = Some(PathBuf::from("/bin/true"));
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        args.timeout = Some(42);
        assert_eq!(test_args(&args, None).unwrap().timeout, Some(42));
    }

    #[test]
    fn deadlines_scale_with_the_baseline_unless_given() {
        let mut args = run_args(&[]).unwrap();
        let quick = Timing {
            boot_s: 5.0,
            suite_s: 10.0,
            ..Timing::default()
        };
        assert_eq!(
            per_boot_limits(&args, &quick),
            Limits {
                run: 120,
                stall: 30
            }
        );
        let slow = Timing {
            boot_s: 20.0,
            suite_s: 60.2,
            ..Timing::default()
        };
        assert_eq!(
            per_boot_limits(&args, &slow),
            Limits {
                run: 241,
                stall: 91
            }
        );
        args.timeout = Some(50);
        args.stall_timeout = Some(7);
        assert_eq!(per_boot_limits(&args, &slow), Limits { run: 50, stall: 7 });
    }

    #[test]
    fn a_judged_mutant_is_filed_with_its_kind_and_its_time() {
        let base = Baseline {
            passed: true,
            headline: "PASSED".into(),
            run_id: None,
            timing: Timing::default(),
        };
        let series = SeriesTag {
            name: "guest_memfd".into(),
            version: 3,
            base: "6.1.177".into(),
            mutant: None,
        };
        let mut c = Campaign::new(series, "seed", base);
        let timing = Timing {
            build_s: 2.0,
            boot_s: 3.0,
            ..Timing::default()
        };
        c.record(Judged {
            subject: Subject::Generated(mutant(2, "x", "y")),
            outcome: Outcome::Survived,
            equivalent: Some("same".into()),
            timing,
            run_id: Some("r1".into()),
        });
        c.record(Judged {
            subject: Subject::HandWritten {
                name: "punch-no-invalidate".into(),
                patch: PathBuf::from("p.patch"),
            },
            outcome: Outcome::Killed { by: vec![] },
            equivalent: None,
            timing,
            run_id: None,
        });
        assert_eq!(c.generated.len(), 1);
        assert_eq!(c.generated[0].seconds, 5.0);
        assert_eq!(c.generated[0].equivalent.as_deref(), Some("same"));
        assert_eq!(c.hand_written[0].name, "punch-no-invalidate");
        let names: Vec<&str> = c.timings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "virt/kvm/guest_memfd.c:2:negate-condition",
                "punch-no-invalidate"
            ]
        );
        assert_eq!((c.counts().killed, c.counts().equivalent), (1, 1));
    }

    #[test]
    fn outcomes_are_scored_as_the_issue_says() {
        let mut c = Counts::default();
        c.add_outcome(&Outcome::Killed { by: vec![] }, false);
        c.add_outcome(&Outcome::Timeout { by: vec![] }, false);
        c.add_outcome(&Outcome::Survived, false);
        c.add_outcome(&Outcome::Survived, true);
        c.add_outcome(&Outcome::Killed { by: vec![] }, true);
        c.add_outcome(&Outcome::Flaky { by: vec![] }, false);
        c.add_outcome(
            &Outcome::BuildFailed {
                log_tail: String::new(),
            },
            false,
        );
        assert_eq!(c.score(), (3, 4));
        assert_eq!((c.equivalent, c.equivalent_killed, c.flaky), (1, 1, 1));
        assert_eq!(c.build_failed, 1);
    }
}
