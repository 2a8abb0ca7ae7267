//! `cargo xtask matrix`: the same selftests binary on several kernels, cases
//! x kernels, and the divergence rule that makes upstream the oracle.
//!
//! Lanes: 6.1 + series (the default build), the upstream reference
//! (series.toml `[reference]`, built without the series), the host kernel,
//! and any `--kernel IMG`. A lane whose kernel image and selftests binary
//! hash the same as a finished earlier run (and was asked the same
//! `--filter`/`--config`/`--accel`) reuses that run's results.
//!
//! The rule: for every case, the verdict on 6.1 + series must equal the
//! reference's (the same pass, the same failure, or a skip of the same
//! reason class). Every other difference fails the run unless
//! patches/divergences.toml explains it; an entry that explains
//! no divergence of this run is reported as stale. The host and `--kernel`
//! lanes are shown and judged only on their own results.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::boot::{Accel, AccelRequest};
use crate::build;
use crate::results::{Case, RunResult, SeriesTag, Status};
use crate::test::TestArgs;
use crate::util;

#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// Also run the suite on this bzImage (repeatable); judged on its own.
    #[arg(long)]
    pub kernel: Vec<PathBuf>,
    /// Upstream reference version (default: series.toml's `[reference]`).
    #[arg(long, value_name = "VERSION")]
    pub reference: Option<String>,
    /// Comma-separated fragments for the built lanes (base is always first).
    #[arg(long, default_value = "gmem")]
    pub config: String,
    /// Leave out the host lane.
    #[arg(long)]
    pub no_host: bool,
    /// Run every lane again even when fresh results exist.
    #[arg(long)]
    pub rerun: bool,
    /// Only cases whose name contains PATTERN.
    #[arg(long)]
    pub filter: Option<String>,
    /// Accelerator for the booted lanes (see `cargo xtask test --accel`).
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,
    /// Whole-run timeout per lane in seconds (default as `cargo xtask test`).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Use this selftests binary instead of building the workspace's.
    #[arg(long)]
    pub selftests: Option<PathBuf>,
    /// The file explaining accepted divergences.
    #[arg(long, default_value_os_t = default_divergences())]
    pub divergences: PathBuf,
    /// Where matrix.md, matrix.json, matrix.html and logs/ go.
    #[arg(long, default_value_os_t = util::target_dir().join("matrix"))]
    pub out: PathBuf,
}

/// Beside the series directory, not in it: `series export` rebuilds that
/// directory from commits (series.toml, cover letter, patches only).
fn default_divergences() -> PathBuf {
    util::patches_dir().join("divergences.toml")
}

/// Lane ids the divergence rule compares.
pub const SERIES_LANE: &str = "series";
pub const REFERENCE_LANE: &str = "reference";

// ------------------------------------------------------------------ cells

/// A case's verdict on one lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
    /// The stream ended without the case's result (crash, hang).
    NoResult,
    /// The lane did not list the case at all (older binary, no boot, filter).
    Absent,
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
            Verdict::NoResult => "NO RESULT",
            Verdict::Absent => "-",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub verdict: Verdict,
    /// Skip reason, or why there is no result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the divergence rule compares: `pass`, `fail: <check>`,
    /// `skip: <reason class>`, `no result`, `absent`.
    pub key: String,
    /// The case's `#` diagnostics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// Kernel splats attributed to the case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splats: Vec<String>,
}

impl Cell {
    pub fn absent() -> Cell {
        Cell {
            verdict: Verdict::Absent,
            reason: None,
            key: "absent".into(),
            diagnostics: Vec::new(),
            splats: Vec::new(),
        }
    }

    /// One line for tables and messages.
    pub fn brief(&self) -> String {
        match (&self.verdict, &self.reason) {
            (Verdict::Skip, Some(r)) | (Verdict::NoResult, Some(r)) => {
                format!("{} ({r})", self.verdict.label())
            }
            (Verdict::Fail, _) => match self.failure_line() {
                Some(l) => format!("FAIL ({l})"),
                None => "FAIL".into(),
            },
            (v, _) => v.label().into(),
        }
    }

    fn failure_line(&self) -> Option<String> {
        self.splats
            .first()
            .map(|s| format!("splat: {s}"))
            .or_else(|| {
                self.diagnostics
                    .iter()
                    .rev()
                    .find(|d| !d.is_empty())
                    .cloned()
            })
    }
}

/// The class of a skip reason or failure message: the text with every
/// number (decimal or hex) replaced by `#` and parenthesised values dropped,
/// so `KVM_CAP_GUEST_MEMFD is 0 on a default VM` on one kernel and the same
/// sentence with another value compare equal, while a different missing
/// capability does not.
pub fn reason_class(reason: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let chars: Vec<char> = reason.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let word_start = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let digit_at = |j: usize| chars.get(j).is_some_and(|d| d.is_ascii_digit());
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            // A number (not digits inside a name such as MEMORY2).
            _ if word_start && (c.is_ascii_digit() || (c == '-' && digit_at(i + 1))) => {
                i += 1;
                if c == '0' && chars.get(i) == Some(&'x') {
                    i += 1;
                }
                while chars
                    .get(i)
                    .is_some_and(|d| d.is_ascii_hexdigit() || *d == '.')
                {
                    i += 1;
                }
                out.push('#');
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A case of a run as a cell (splats attributed to the case fail it).
pub fn cell_of(case: &Case, splats: &[String]) -> Cell {
    // The `# begin <case>` marker says nothing about the verdict.
    let begin = format!("begin {}", case.name);
    let diagnostics: Vec<String> = case
        .diagnostics
        .iter()
        .filter(|d| d.trim() != begin)
        .cloned()
        .collect();
    let (verdict, reason) = match &case.status {
        Status::Pass if splats.is_empty() => (Verdict::Pass, None),
        Status::Pass | Status::Fail => (Verdict::Fail, None),
        Status::Skip(r) => (Verdict::Skip, Some(r.clone())),
        Status::Missing(r) => (Verdict::NoResult, Some(r.clone())),
    };
    let mut cell = Cell {
        verdict,
        reason,
        key: String::new(),
        diagnostics,
        splats: splats.to_vec(),
    };
    cell.key = match cell.verdict {
        Verdict::Pass => "pass".into(),
        Verdict::Fail => format!(
            "fail: {}",
            reason_class(&cell.failure_line().unwrap_or_default())
        ),
        Verdict::Skip => format!(
            "skip: {}",
            reason_class(cell.reason.as_deref().unwrap_or(""))
        ),
        Verdict::NoResult => "no result".into(),
        Verdict::Absent => "absent".into(),
    };
    cell
}

/// Every case of a run, by name.
pub fn cells_of(result: &RunResult) -> BTreeMap<String, Cell> {
    result
        .ktap
        .cases
        .iter()
        .map(|c| {
            let splats: Vec<String> = result
                .splats
                .iter()
                .filter(|s| s.test.as_deref() == Some(c.name.as_str()))
                .map(|s| s.title.clone())
                .collect();
            (c.name.clone(), cell_of(c, &splats))
        })
        .collect()
}

// ------------------------------------------------------------ divergences

/// patches/divergences.toml.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DivergenceFile {
    #[serde(default, rename = "divergence")]
    pub entries: Vec<Explained>,
}

/// One accepted difference between 6.1 + series and the reference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Explained {
    /// Full case name, e.g. `memslot.readonly@sw_protected`.
    pub case: String,
    /// The two kernels, as `<MAJOR.MINOR>+series` and `<MAJOR.MINOR>`
    /// (e.g. `["6.1+series", "6.12"]`): the entry applies while the series'
    /// base and the reference are of those versions.
    pub kernels: Vec<String>,
    /// Why the backport behaves differently, and why that is acceptable.
    pub reason: String,
    /// The upstream commit where the behaviour changed: `<12+ hex> ("subject")`.
    pub upstream: String,
}

impl DivergenceFile {
    /// Reads and checks the file; a missing file explains nothing.
    pub fn load(path: &Path) -> Result<DivergenceFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DivergenceFile::default())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        DivergenceFile::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<DivergenceFile> {
        let file: DivergenceFile =
            toml::from_str(text).with_context(|| format!("parsing {}", path.display()))?;
        for (i, e) in file.entries.iter().enumerate() {
            let at = format!("{}: [[divergence]] #{} ({})", path.display(), i + 1, e.case);
            if e.case.trim().is_empty() {
                bail!("{at}: `case` is empty");
            }
            if e.kernels.len() != 2
                || !e.kernels[0].ends_with("+series")
                || e.kernels[1].contains('+')
            {
                bail!(
                    "{at}: `kernels` must be [\"<MAJOR.MINOR>+series\", \"<MAJOR.MINOR>\"] (the series lane, then the reference), e.g. [\"6.1+series\", \"6.12\"]"
                );
            }
            if e.reason.trim().is_empty() {
                bail!("{at}: `reason` is empty: say why the backport differs and why that is acceptable");
            }
            let commit = e.upstream.split_whitespace().next().unwrap_or("");
            if commit.len() < 12 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "{at}: `upstream` must start with the upstream commit id (12+ hex digits) where the behaviour changed, found `{}`",
                    e.upstream
                );
            }
        }
        Ok(file)
    }
}

/// MAJOR.MINOR of a version string.
pub fn series_of(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// A case whose verdicts differ between the series lane and the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub case: String,
    pub series: Cell,
    pub reference: Cell,
    /// The divergences.toml entry that explains it (index, reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explained: Option<Explained>,
}

/// The divergence rule over two lanes' cells. `kernels` is the pair this
/// run compares (`["6.1+series", "6.12"]`); `cases_run` tells a stale
/// entry from one whose case this run filtered out.
pub fn judge(
    series: &BTreeMap<String, Cell>,
    reference: &BTreeMap<String, Cell>,
    file: &DivergenceFile,
    kernels: &[String; 2],
) -> (Vec<Divergence>, Vec<Explained>) {
    let applies = |e: &Explained| e.kernels[0] == kernels[0] && e.kernels[1] == kernels[1];
    let mut names: Vec<&String> = series.keys().chain(reference.keys()).collect();
    names.sort();
    names.dedup();
    let mut found = Vec::new();
    for name in names {
        let s = series.get(name).cloned().unwrap_or_else(Cell::absent);
        let r = reference.get(name).cloned().unwrap_or_else(Cell::absent);
        if s.key == r.key {
            continue;
        }
        let explained = file
            .entries
            .iter()
            .find(|e| &e.case == name && applies(e))
            .cloned();
        found.push(Divergence {
            case: name.clone(),
            series: s,
            reference: r,
            explained,
        });
    }
    let stale = file
        .entries
        .iter()
        .filter(|e| {
            let ran = series.contains_key(&e.case) || reference.contains_key(&e.case);
            !applies(e) || (ran && !found.iter().any(|d| d.case == e.case))
        })
        .cloned()
        .collect();
    (found, stale)
}

// ------------------------------------------------------------------ lanes

/// One column of the matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lane {
    pub id: String,
    pub label: String,
    /// `divergence` (compared with the other side) or `own` (its own results).
    pub judged: String,
    pub kernel: Option<String>,
    pub image: Option<PathBuf>,
    pub image_sha256: Option<String>,
    pub selftests_sha256: String,
    pub run_id: Option<String>,
    pub results_dir: Option<PathBuf>,
    /// The lane's guest (or host) log, relative to the matrix directory.
    pub log: Option<String>,
    pub outcome: String,
    pub passed: bool,
    pub reused: bool,
    pub counts: Counts,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splats: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
    pub no_result: usize,
}

/// What a lane's earlier run is reused on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Fresh {
    image_sha256: String,
    selftests_sha256: String,
    /// `--config`, `--filter`, `--accel` of the run.
    asked: String,
    results_dir: PathBuf,
}

fn fresh_path(lane: &str) -> PathBuf {
    util::target_dir()
        .join("matrix-lanes")
        .join(format!("{lane}.json"))
}

fn load_fresh(lane: &str, want: &Fresh) -> Option<RunResult> {
    let text = std::fs::read_to_string(fresh_path(lane)).ok()?;
    let had: Fresh = serde_json::from_str(&text).ok()?;
    if &had != want {
        return None;
    }
    let text = std::fs::read_to_string(had.results_dir.join("results.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn save_fresh(lane: &str, fresh: &Fresh) -> Result<()> {
    let path = fresh_path(lane);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(&path, serde_json::to_string_pretty(fresh)?.as_bytes())
}

/// What a lane asks of a run it did not make itself (a plain `cargo xtask
/// test`, say): the same kernel image and selftests binary, asked the same
/// question and judged against the same table, unmutated.
struct Asked<'a> {
    image_sha256: &'a str,
    selftests_sha256: &'a str,
    /// The fragment set's label (`base+gmem`) for built lanes.
    config: Option<String>,
    filter: Option<&'a str>,
    /// None when the matrix lets `auto` choose.
    accel: Option<Accel>,
    expect: Option<String>,
    /// The series the run must have been built from (the series lane).
    series: Option<SeriesTag>,
}

impl Asked<'_> {
    fn answered_by(&self, r: &RunResult) -> bool {
        r.image_sha256.as_deref() == Some(self.image_sha256)
            && r.selftests_sha256.as_deref() == Some(self.selftests_sha256)
            && self.config.as_ref().is_none_or(|c| &r.config == c)
            && r.filter.as_deref() == self.filter
            && self.accel.is_none_or(|a| r.accel == Some(a))
            && r.expect == self.expect
            && r.series.as_ref().and_then(|t| t.mutant.as_ref()).is_none()
            && self.series.as_ref().is_none_or(|want| {
                r.series.as_ref().is_some_and(|t| {
                    t.name == want.name && t.version == want.version && t.base == want.base
                })
            })
            && !matches!(
                r.outcome,
                crate::results::Outcome::Error(_) | crate::results::Outcome::NoBoot(_)
            )
    }
}

/// The newest run under `results` (run ids begin with their time) that
/// answers `ask`.
fn find_earlier_run(results: &Path, ask: &Asked) -> Option<(RunResult, PathBuf)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.into_iter().rev().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("results.json")).ok()?;
        let r: RunResult = serde_json::from_str(&text).ok()?;
        ask.answered_by(&r).then_some((r, dir))
    })
}

/// The expectation table a lane's runs are judged against.
fn lane_expect(spec: &Spec) -> Option<Option<String>> {
    match &spec.kind {
        Kind::Series => Some(Some("series".into())),
        Kind::Reference(v) => crate::reference::expect_kind(v).ok(),
        Kind::Host | Kind::Kernel(_) => Some(None),
    }
}

/// Writes beside and renames, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp-{}",
        path.extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `cargo xtask test` arguments for a lane: `extra` and what the matrix
/// passes on to every lane.
fn test_args(extra: &[String], m: &MatrixArgs) -> Result<TestArgs> {
    let mut argv: Vec<String> = extra.to_vec();
    argv.extend(["--config".into(), m.config.clone()]);
    argv.extend(["--accel".into(), m.accel.name().into()]);
    if let Some(f) = &m.filter {
        argv.extend(["--filter".into(), f.clone()]);
    }
    if let Some(t) = m.timeout {
        argv.extend(["--timeout".into(), t.to_string()]);
    }
    TestArgs::from_cli(&argv)
}

enum Kind {
    Series,
    Reference(String),
    Host,
    Kernel(PathBuf),
}

struct Spec {
    id: String,
    label: String,
    kind: Kind,
}

struct Ran {
    lane: Lane,
    cells: BTreeMap<String, Cell>,
}

fn counts(cells: &BTreeMap<String, Cell>) -> Counts {
    let mut c = Counts::default();
    for cell in cells.values() {
        match cell.verdict {
            Verdict::Pass => c.pass += 1,
            Verdict::Fail => c.fail += 1,
            Verdict::Skip => c.skip += 1,
            Verdict::NoResult => c.no_result += 1,
            Verdict::Absent => {}
        }
    }
    c
}

/// Builds (a no-op when nothing changed) or finds the lane's kernel, then
/// reuses or makes its run.
/// The lane's kernel tree and image (built where the lane builds one),
/// with the `test` arguments that pick that kernel added to `extra`.
fn lane_kernel(
    spec: &Spec,
    m: &MatrixArgs,
    extra: &mut Vec<String>,
) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    // Built lanes boot through `test`'s own build of their tree (a no-op
    // after the build here), so their results carry the same config label
    // as a plain `cargo xtask test` run.
    Ok(match &spec.kind {
        Kind::Series => {
            let tree =
                crate::series::checkout_default_tree(&crate::series::Purpose::Default)?.worktree;
            let fragments = crate::kconfig::fragment_list(&m.config)?;
            let image = build::build_kernel("series kernel", &tree, &fragments, None)?.image;
            (Some(tree), Some(image))
        }
        Kind::Reference(v) => {
            let r = crate::reference::build(v, &m.config, None)?;
            if let Some(kind) = crate::reference::expect_kind(v)? {
                extra.extend(["--expect".into(), kind]);
            }
            (Some(r.tree), Some(r.built.image))
        }
        Kind::Kernel(p) => {
            let image = p
                .canonicalize()
                .with_context(|| format!("--kernel {} does not exist", p.display()))?;
            extra.extend(["--kernel".into(), image.display().to_string()]);
            (None, Some(image))
        }
        Kind::Host => {
            extra.push("--host".into());
            (None, None)
        }
    })
}

fn run_lane(spec: &Spec, m: &MatrixArgs, bin: &Path, bin_sha: &str) -> Result<Ran> {
    let start = Instant::now();
    let mut extra = vec!["--selftests".to_string(), bin.display().to_string()];
    let (tree, image) = lane_kernel(spec, m, &mut extra)?;
    let image_sha = match &image {
        Some(i) => util::sha256_file(i)?,
        None => util::host_kernel_key(),
    };
    let asked = format!(
        "config={} filter={} accel={}",
        m.config,
        m.filter.as_deref().unwrap_or(""),
        m.accel.name()
    );
    let want = |dir: PathBuf| Fresh {
        image_sha256: image_sha.clone(),
        selftests_sha256: bin_sha.to_string(),
        asked: asked.clone(),
        results_dir: dir,
    };
    let previous = std::fs::read_to_string(fresh_path(&spec.id))
        .ok()
        .and_then(|t| serde_json::from_str::<Fresh>(&t).ok());
    let reused = match previous {
        Some(p) if !m.rerun => {
            load_fresh(&spec.id, &want(p.results_dir.clone())).map(|r| (r, p.results_dir))
        }
        _ => None,
    };
    let reused = reused.or_else(|| {
        if m.rerun || m.timeout.is_some() {
            return None;
        }
        let ask = Asked {
            image_sha256: &image_sha,
            selftests_sha256: bin_sha,
            config: match spec.kind {
                Kind::Series | Kind::Reference(_) => crate::kconfig::fragment_list(&m.config)
                    .ok()
                    .map(|f| f.join("+")),
                Kind::Host | Kind::Kernel(_) => None,
            },
            filter: m.filter.as_deref(),
            accel: m.accel.fixed(),
            expect: lane_expect(spec)?,
            series: matches!(spec.kind, Kind::Series)
                .then(|| crate::test::series_tag(None))
                .flatten(),
        };
        let found = find_earlier_run(&util::target_dir().join("results"), &ask)?;
        save_fresh(&spec.id, &want(found.1.clone())).ok()?;
        Some(found)
    });
    let (result, dir, reused) = match reused {
        Some((r, dir)) => {
            println!(
                "matrix: {}: reusing run {} (same kernel image and selftests binary)",
                spec.label, r.run_id
            );
            (r, dir, true)
        }
        None => {
            let args = test_args(&extra, m)?;
            let result = match &spec.kind {
                Kind::Host => crate::test::run_host(&args)?,
                Kind::Series => {
                    crate::test::run_boot(&args, tree.as_deref(), crate::test::series_tag(None))?
                }
                _ => crate::test::run_boot(&args, tree.as_deref(), None)?,
            };
            let dir = util::target_dir().join("results").join(&result.run_id);
            if !matches!(
                result.outcome,
                crate::results::Outcome::Error(_) | crate::results::Outcome::NoBoot(_)
            ) {
                save_fresh(&spec.id, &want(dir.clone()))?;
            }
            (result, dir, false)
        }
    };
    let cells = cells_of(&result);
    let log_name = if matches!(spec.kind, Kind::Host) {
        crate::boot::files::STDOUT_LOG
    } else {
        crate::boot::files::GUEST_LOG
    };
    let log = dir.join(log_name);
    let lane = Lane {
        id: spec.id.clone(),
        label: spec.label.clone(),
        judged: if spec.id == SERIES_LANE || spec.id == REFERENCE_LANE {
            "divergence".into()
        } else {
            "own".into()
        },
        kernel: result.kernel.clone(),
        image,
        image_sha256: Some(image_sha),
        selftests_sha256: bin_sha.to_string(),
        run_id: Some(result.run_id.clone()),
        results_dir: Some(dir),
        log: log.is_file().then(|| log.display().to_string()),
        outcome: result.outcome.headline(),
        passed: result.outcome.is_pass(),
        reused,
        counts: counts(&cells),
        splats: result
            .splats
            .iter()
            .map(|s| {
                format!(
                    "{} in {}",
                    s.title,
                    s.test.clone().unwrap_or_else(|| s.phase.clone())
                )
            })
            .collect(),
    };
    println!(
        "matrix: {} done in {} ({} pass, {} fail, {} skip, {} no result): {}",
        spec.label,
        build::fmt_duration(start.elapsed()),
        lane.counts.pass,
        lane.counts.fail,
        lane.counts.skip,
        lane.counts.no_result,
        lane.outcome.lines().next().unwrap_or("")
    );
    Ok(Ran { lane, cells })
}

fn failed_lane(spec: &Spec, bin_sha: &str, err: &anyhow::Error) -> Ran {
    println!("matrix: {} could not run: {err:#}", spec.label);
    Ran {
        lane: Lane {
            id: spec.id.clone(),
            label: spec.label.clone(),
            judged: if spec.id == SERIES_LANE || spec.id == REFERENCE_LANE {
                "divergence".into()
            } else {
                "own".into()
            },
            kernel: None,
            image: None,
            image_sha256: None,
            selftests_sha256: bin_sha.to_string(),
            run_id: None,
            results_dir: None,
            log: None,
            outcome: format!("HARNESS ERROR: {err:#}"),
            passed: false,
            reused: false,
            counts: Counts::default(),
            splats: Vec::new(),
        },
        cells: BTreeMap::new(),
    }
}

// ----------------------------------------------------------------- report

/// matrix.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Matrix {
    pub generated: String,
    /// The series the series lane was built from.
    #[serde(default)]
    pub series: Option<crate::results::SeriesTag>,
    /// The reference lane's upstream version.
    #[serde(default)]
    pub reference: Option<String>,
    /// The pair the divergence rule compared, e.g. ["6.1+series", "6.12"].
    pub compared: Vec<String>,
    pub lanes: Vec<Lane>,
    /// Case name -> lane id -> cell.
    pub cases: BTreeMap<String, BTreeMap<String, Cell>>,
    pub divergences: Vec<Divergence>,
    pub stale: Vec<Explained>,
}

impl Matrix {
    pub fn unexplained(&self) -> usize {
        self.divergences
            .iter()
            .filter(|d| d.explained.is_none())
            .count()
    }

    pub fn explained(&self) -> usize {
        self.divergences.len() - self.unexplained()
    }

    fn cell(&self, case: &str, lane: &str) -> Cell {
        self.cases
            .get(case)
            .and_then(|m| m.get(lane))
            .cloned()
            .unwrap_or_else(Cell::absent)
    }

    /// The case table's rows, in case order, each with its cell in every
    /// lane (lane order): the table, markdown and HTML all render these.
    fn rows(&self) -> impl Iterator<Item = CaseRow<'_>> + '_ {
        self.cases.keys().map(|case| CaseRow {
            case,
            cells: self.lanes.iter().map(|l| self.cell(case, &l.id)).collect(),
            divergence: self.divergences.iter().find(|d| &d.case == case),
        })
    }

    /// The two lanes the divergence rule compared, "?" where unknown.
    fn compared_pair(&self) -> (&str, &str) {
        let name = |i: usize| self.compared.get(i).map(String::as_str).unwrap_or("?");
        (name(0), name(1))
    }

    /// The readable table on stdout.
    pub fn table(&self) -> String {
        let w = self.cases.keys().map(|c| c.len()).max().unwrap_or(4).max(4);
        let widths: Vec<usize> = self.lanes.iter().map(|l| l.label.len().max(9)).collect();
        let mut out = format!("{:<w$}", "case");
        for (l, lw) in self.lanes.iter().zip(&widths) {
            let _ = write!(out, "  {:<lw$}", l.label);
        }
        out.push_str("  divergence\n");
        for row in self.rows() {
            let _ = write!(out, "{:<w$}", row.case);
            for (c, lw) in row.cells.iter().zip(&widths) {
                let _ = write!(out, "  {:<lw$}", c.verdict.label());
            }
            let _ = writeln!(out, "  {}", row.mark());
        }
        out.push('\n');
        for l in &self.lanes {
            let c = l.counts;
            let _ = writeln!(
                out,
                "{:<24} {:>3} pass {:>3} fail {:>3} skip {:>3} no result  {}{}",
                l.label,
                c.pass,
                c.fail,
                c.skip,
                c.no_result,
                if l.passed { "run passed" } else { "run FAILED" },
                if l.reused { " (reused)" } else { "" }
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("### Cross-kernel matrix\n\n");
        let (series, reference) = self.compared_pair();
        let _ = writeln!(
            out,
            "Divergence rule: {series} vs {reference}: {} unexplained, {} explained by divergences.toml, {} stale entries.\n",
            self.unexplained(),
            self.explained(),
            self.stale.len()
        );
        out.push_str("| lane | kernel | pass | fail | skip | no result | run |\n| --- | --- | --- | --- | --- | --- | --- |\n");
        for l in &self.lanes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {}{} |",
                md(&l.label),
                md(l.kernel.as_deref().unwrap_or("?")),
                l.counts.pass,
                l.counts.fail,
                l.counts.skip,
                l.counts.no_result,
                if l.passed { "passed" } else { "**FAILED**" },
                if l.reused { " (reused)" } else { "" }
            );
        }
        out.push_str("\n| case |");
        for l in &self.lanes {
            let _ = write!(out, " {} |", md(&l.label));
        }
        out.push_str(" divergence |\n| --- |");
        for _ in &self.lanes {
            out.push_str(" --- |");
        }
        out.push_str(" --- |\n");
        for row in self.rows() {
            let _ = write!(out, "| `{}` |", row.case);
            for c in &row.cells {
                let _ = write!(out, " {} |", md(c.verdict.label()));
            }
            let _ = writeln!(out, " {} |", row.mark());
        }
        if !self.divergences.is_empty() {
            out.push_str("\n#### Divergences\n\n");
            for d in &self.divergences {
                let _ = writeln!(
                    out,
                    "- `{}`: series {} / reference {}{}",
                    d.case,
                    md(&d.series.brief()),
                    md(&d.reference.brief()),
                    d.explained
                        .as_ref()
                        .map(|e| format!(" — explained: {} ({})", md(&e.reason), md(&e.upstream)))
                        .unwrap_or_else(|| " — **unexplained**".into())
                );
            }
        }
        if !self.stale.is_empty() {
            out.push_str("\n#### Stale divergences.toml entries\n\n");
            for e in &self.stale {
                let _ = writeln!(out, "- `{}` ({})", e.case, e.kernels.join(" vs "));
            }
        }
        let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for lanes in self.cases.values() {
            for (lane, c) in lanes {
                if let (Verdict::Skip, Some(r)) = (&c.verdict, &c.reason) {
                    let label = self
                        .lanes
                        .iter()
                        .find(|l| &l.id == lane)
                        .map(|l| l.label.clone())
                        .unwrap_or_else(|| lane.clone());
                    let entry = reasons.entry(r.clone()).or_default();
                    if !entry.contains(&label) {
                        entry.push(label);
                    }
                }
            }
        }
        if !reasons.is_empty() {
            out.push_str("\n#### Skip reasons\n\n");
            for (r, lanes) in &reasons {
                let _ = writeln!(out, "- {} ({})", md(r), md(&lanes.join(", ")));
            }
        }
        out
    }

    /// A self-contained page: one colour per verdict, the skip reason and
    /// diagnostics on hover (title) and click (details), lane logs linked.
    pub fn html(&self) -> String {
        let mut out = String::from(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>gmem61 cross-kernel matrix</title>\n<style>\n\
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\n\
table{border-collapse:collapse;font-size:13px}\n\
th,td{border:1px solid #bbb;padding:2px 6px;vertical-align:top;text-align:left}\n\
th{background:#eee}\n\
td.pass{background:#c6efce}td.fail{background:#ffc7ce}td.skip{background:#e7e6e6}\n\
td.no_result{background:#ffd8a8}td.absent{background:#fff;color:#999}\n\
td.div-no{background:#ff6b6b;font-weight:bold}td.div-ok{background:#fff2b3}\n\
details summary{cursor:pointer}pre{margin:2px 0;white-space:pre-wrap;max-width:40em;font-size:12px}\n\
.legend span{display:inline-block;padding:1px 8px;margin-right:6px;border:1px solid #bbb}\n\
</style></head><body>\n<h1>Cross-kernel matrix</h1>\n",
        );
        let (series, reference) = self.compared_pair();
        let _ = writeln!(
            out,
            "<p>Generated {}. Divergence rule: <b>{}</b> vs <b>{}</b>: {} unexplained, {} explained, {} stale entries.</p>",
            esc(&self.generated),
            esc(series),
            esc(reference),
            self.unexplained(),
            self.explained(),
            self.stale.len()
        );
        out.push_str("<p class=\"legend\"><span class=\"x\" style=\"background:#c6efce\">pass</span><span style=\"background:#ffc7ce\">fail</span><span style=\"background:#e7e6e6\">skip</span><span style=\"background:#ffd8a8\">no result</span><span>- not listed</span> hover a cell for the reason, click it for the diagnostics.</p>\n");
        out.push_str("<table><tr><th>lane</th><th>kernel</th><th>pass</th><th>fail</th><th>skip</th><th>no result</th><th>run</th><th>judged</th><th>log</th></tr>\n");
        for l in &self.lanes {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td title=\"{}\">{}{}</td><td>{}</td><td>{}</td></tr>",
                esc(&l.label),
                esc(l.kernel.as_deref().unwrap_or("?")),
                l.counts.pass,
                l.counts.fail,
                l.counts.skip,
                l.counts.no_result,
                esc(&l.outcome),
                if l.passed { "passed" } else { "FAILED" },
                if l.reused { " (reused)" } else { "" },
                if l.judged == "own" { "on its own results" } else { "divergence rule" },
                match &l.log {
                    Some(p) => format!("<a href=\"{}\">log</a>", esc(p)),
                    None => "-".into(),
                }
            );
        }
        out.push_str("</table>\n<h2>Cases</h2>\n<table><tr><th>case</th>");
        for l in &self.lanes {
            let _ = write!(out, "<th>{}</th>", esc(&l.label));
        }
        out.push_str("<th>divergence</th></tr>\n");
        for row in self.rows() {
            let _ = write!(out, "<tr><td><code>{}</code></td>", esc(row.case));
            for c in &row.cells {
                out.push_str(&html_cell(c));
            }
            let (class, text) = match row.divergence.map(|d| &d.explained) {
                None => ("", String::new()),
                Some(Some(e)) => (
                    "div-ok",
                    format!(
                        "<details><summary>explained</summary><pre>{}\n{}</pre></details>",
                        esc(&e.reason),
                        esc(&e.upstream)
                    ),
                ),
                Some(None) => ("div-no", "DIVERGES".into()),
            };
            let _ = writeln!(out, "<td class=\"{class}\">{text}</td></tr>");
        }
        out.push_str("</table>\n");
        if !self.stale.is_empty() {
            out.push_str("<h2>Stale divergences.toml entries</h2><ul>\n");
            for e in &self.stale {
                let _ = writeln!(
                    out,
                    "<li><code>{}</code> ({})</li>",
                    esc(&e.case),
                    esc(&e.kernels.join(" vs "))
                );
            }
            out.push_str("</ul>\n");
        }
        out.push_str("</body></html>\n");
        out
    }
}

/// One case across the lanes.
struct CaseRow<'m> {
    case: &'m str,
    cells: Vec<Cell>,
    divergence: Option<&'m Divergence>,
}

impl CaseRow<'_> {
    /// The divergence column of the text and markdown tables.
    fn mark(&self) -> &'static str {
        match self.divergence {
            None => "",
            Some(d) if d.explained.is_some() => "explained",
            Some(_) => "DIVERGES",
        }
    }
}

/// One lane's cell of the HTML case table: coloured by verdict, the reason
/// on hover, the reason, splats and diagnostics behind a click.
fn html_cell(c: &Cell) -> String {
    let class = match c.verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Skip => "skip",
        Verdict::NoResult => "no_result",
        Verdict::Absent => "absent",
    };
    let mut detail: Vec<String> = Vec::new();
    if let Some(r) = &c.reason {
        detail.push(r.clone());
    }
    detail.extend(c.splats.iter().map(|s| format!("splat: {s}")));
    detail.extend(c.diagnostics.iter().map(|d| format!("# {d}")));
    let body = if detail.is_empty() {
        esc(c.verdict.label())
    } else {
        format!(
            "<details><summary>{}</summary><pre>{}</pre></details>",
            esc(c.verdict.label()),
            esc(&detail.join("\n"))
        )
    };
    format!(
        "<td class=\"{class}\" title=\"{}\">{body}</td>",
        esc(c.reason.as_deref().unwrap_or(&c.key))
    )
}

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes matrix.{json,md,html} and copies each lane's log to logs/.
pub fn write(matrix: &mut Matrix, out: &Path) -> Result<()> {
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    for lane in &mut matrix.lanes {
        if let Some(src) = lane.log.take() {
            let name = format!("{}.log", lane.id);
            let dest = logs.join(&name);
            match std::fs::read(&src) {
                Ok(bytes) => {
                    write_atomic(&dest, &bytes)?;
                    lane.log = Some(format!("logs/{name}"));
                }
                Err(_) => lane.log = None,
            }
        }
    }
    write_atomic(
        &out.join("matrix.json"),
        serde_json::to_string_pretty(matrix)?.as_bytes(),
    )?;
    write_atomic(&out.join("matrix.md"), matrix.markdown().as_bytes())?;
    write_atomic(&out.join("matrix.html"), matrix.html().as_bytes())?;
    Ok(())
}

/// The lanes of a run: the series, the reference, the host (unless
/// --no-host) and each --kernel.
fn lane_specs(m: &MatrixArgs, base: &str, reference: &str) -> Vec<Spec> {
    let series_label = match crate::test::series_tag(None) {
        Some(t) => format!("{}+{} v{}", t.base, t.name, t.version),
        None => format!("{base}+series"),
    };
    let mut specs = vec![
        Spec {
            id: SERIES_LANE.into(),
            label: series_label,
            kind: Kind::Series,
        },
        Spec {
            id: REFERENCE_LANE.into(),
            label: format!("{reference} (upstream)"),
            kind: Kind::Reference(reference.to_string()),
        },
    ];
    if !m.no_host {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "running kernel".into());
        specs.push(Spec {
            id: "host".into(),
            label: format!("host {release}"),
            kind: Kind::Host,
        });
    }
    for (i, k) in m.kernel.iter().enumerate() {
        specs.push(Spec {
            id: format!("kernel-{}", i + 1),
            label: k
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("kernel {}", i + 1)),
            kind: Kind::Kernel(k.clone()),
        });
    }
    specs
}

/// Each divergence the rule found (with both sides' splats and
/// diagnostics when unexplained) and each stale divergences.toml entry.
fn print_divergences(matrix: &Matrix) {
    for d in &matrix.divergences {
        match &d.explained {
            Some(e) => println!(
                "explained divergence {}: series {} / reference {}: {} ({})",
                d.case,
                d.series.brief(),
                d.reference.brief(),
                e.reason,
                e.upstream
            ),
            None => {
                println!(
                    "DIVERGENCE {}: 6.1 + series {} / reference {}",
                    d.case,
                    d.series.brief(),
                    d.reference.brief()
                );
                for (side, c) in [("series", &d.series), ("reference", &d.reference)] {
                    for line in c
                        .splats
                        .iter()
                        .map(|s| format!("splat: {s}"))
                        .chain(c.diagnostics.iter().cloned())
                    {
                        println!("    {side}: # {line}");
                    }
                }
            }
        }
    }
    for e in &matrix.stale {
        println!(
            "stale divergences.toml entry: {} ({}): no such divergence in this run; remove it",
            e.case,
            e.kernels.join(" vs ")
        );
    }
}

pub fn run(m: MatrixArgs) -> Result<ExitCode> {
    use crate::doctor::Stage;
    crate::doctor::preflight(&[Stage::Tree, Stage::Build, Stage::Boot])?;
    let divergences = DivergenceFile::load(&m.divergences)?;
    let reference = crate::reference::version(m.reference.as_deref())?;
    let base = crate::tree::default_version()?;
    let kernels = [
        format!("{}+series", series_of(&base)),
        series_of(&reference),
    ];
    let specs = lane_specs(&m, &base, &reference);
    let bin = crate::test::selftests_binary(&test_args(
        &m.selftests
            .iter()
            .flat_map(|s| ["--selftests".to_string(), s.display().to_string()])
            .collect::<Vec<_>>(),
        &m,
    )?)?;
    let bin_sha = util::sha256_file(&bin)?;
    let total = specs.len();
    let mut ran = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        println!("\n=== matrix lane {}/{total}: {}", i + 1, spec.label);
        match run_lane(spec, &m, &bin, &bin_sha) {
            Ok(r) => ran.push(r),
            Err(e) => ran.push(failed_lane(spec, &bin_sha, &e)),
        }
    }
    let empty = BTreeMap::new();
    let cells_for = |id: &str| {
        ran.iter()
            .find(|r| r.lane.id == id)
            .map(|r| &r.cells)
            .unwrap_or(&empty)
    };
    let (found, stale) = judge(
        cells_for(SERIES_LANE),
        cells_for(REFERENCE_LANE),
        &divergences,
        &kernels,
    );
    let mut cases: BTreeMap<String, BTreeMap<String, Cell>> = BTreeMap::new();
    for r in &ran {
        for (name, cell) in &r.cells {
            cases
                .entry(name.clone())
                .or_default()
                .insert(r.lane.id.clone(), cell.clone());
        }
    }
    let generated = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut matrix = Matrix {
        generated,
        series: crate::test::series_tag(None),
        reference: Some(reference.clone()),
        compared: kernels.to_vec(),
        lanes: ran.into_iter().map(|r| r.lane).collect(),
        cases,
        divergences: found,
        stale,
    };
    std::fs::create_dir_all(&m.out).with_context(|| format!("creating {}", m.out.display()))?;
    write(&mut matrix, &m.out)?;
    println!("\n{}", matrix.table());
    print_divergences(&matrix);
    let lane_failures: Vec<&Lane> = matrix.lanes.iter().filter(|l| !l.passed).collect();
    for l in &lane_failures {
        println!("lane {} failed on its own results: {}", l.label, l.outcome);
    }
    println!(
        "divergences: {} unexplained, {} explained ({} vs {}); stale entries: {}",
        matrix.unexplained(),
        matrix.explained(),
        kernels[0],
        kernels[1],
        matrix.stale.len()
    );
    println!(
        "files: {}, {}, {}",
        m.out.join("matrix.md").display(),
        m.out.join("matrix.json").display(),
        m.out.join("matrix.html").display()
    );
    Ok(if matrix.unexplained() == 0 && lane_failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(mutant: Option<&str>) -> SeriesTag {
        SeriesTag {
            name: "guest_memfd".into(),
            version: 2,
            base: "6.1.176".into(),
            mutant: mutant.map(Into::into),
        }
    }

    fn run(id: &str, image: &str, mutant: Option<&str>) -> RunResult {
        RunResult {
            run_id: id.into(),
            config: "base+gmem".into(),
            accel: Some(Accel::Tcg),
            expect: Some("series".into()),
            series: Some(tag(mutant)),
            image_sha256: Some(image.into()),
            selftests_sha256: Some("bin".into()),
            outcome: crate::results::Outcome::Passed,
            ..Default::default()
        }
    }

    #[test]
    fn a_lane_takes_the_newest_unmutated_run_of_the_same_image_and_binary() {
        let tmp = tempfile::tempdir().unwrap();
        for r in [
            run("20261201-100000-a", "img", None),
            run("20261201-110000-b", "img", None),
            run("20261201-120000-c", "img", Some("offset-unaligned")),
            run("20261201-130000-d", "other", None),
        ] {
            let dir = tmp.path().join(&r.run_id);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("results.json"), serde_json::to_string(&r).unwrap()).unwrap();
        }
        let ask = Asked {
            image_sha256: "img",
            selftests_sha256: "bin",
            config: Some("base+gmem".into()),
            filter: None,
            accel: None,
            expect: Some("series".into()),
            series: Some(tag(None)),
        };
        let (found, dir) = find_earlier_run(tmp.path(), &ask).unwrap();
        assert_eq!(found.run_id, "20261201-110000-b");
        assert!(dir.ends_with("20261201-110000-b"));

        let filtered = Asked {
            filter: Some("bind."),
            ..ask
        };
        assert!(find_earlier_run(tmp.path(), &filtered).is_none());
        let other_binary = Asked {
            selftests_sha256: "bin2",
            ..filtered
        };
        assert!(find_earlier_run(tmp.path(), &other_binary).is_none());
    }
}
