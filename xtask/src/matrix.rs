//! `cargo xtask matrix`: the same selftests binary on several kernels, cases
//! x kernels, and the divergence rule that makes upstream the oracle.
//!
//! Lanes: 6.1 + series (the default build), the upstream reference
//! (series.toml `[reference]`, built without the series), the host kernel,
//! and any `--kernel IMG[,expect=KIND][,numa=N]`. A lane reuses the results
//! of an earlier run that answers its [`ReuseKey`]: the same kernel image
//! and selftests binary, the same `--config`/`--filter`/`--accel`, NUMA
//! nodes, expectation table and series, unmutated, past the boot.
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
    /// Also run the suite on this bzImage (repeatable); judged on its own,
    /// against the expectation table `expect=KIND` names (e.g.
    /// `upstream-6.18`), in a guest of `numa=N` NUMA nodes when given:
    /// `--kernel IMG,expect=upstream-6.18,numa=2`.
    #[arg(long, value_name = "IMG[,expect=KIND][,numa=N]")]
    pub kernel: Vec<KernelLane>,
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
    /// Whole-run timeout per lane in seconds (default as `cargo xtask
    /// test`). Every lane runs again: no record says what deadline its run
    /// had.
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

/// A `--kernel` lane: a prebuilt image and how to boot and judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLane {
    pub image: PathBuf,
    /// The expectation table to judge it against (`--expect KIND`).
    pub expect: Option<String>,
    /// The guest's NUMA nodes (`--numa N`).
    pub numa: Option<u32>,
}

impl std::str::FromStr for KernelLane {
    type Err = String;

    /// `IMG` then `,key=value` options; the image path cannot hold a comma.
    fn from_str(text: &str) -> Result<KernelLane, String> {
        let mut parts = text.split(',');
        let image = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("`{text}`: give the image first: IMG[,expect=KIND][,numa=N]"))?;
        let mut lane = KernelLane {
            image: image.into(),
            expect: None,
            numa: None,
        };
        for option in parts {
            match option.split_once('=') {
                Some(("expect", kind)) if !kind.is_empty() => lane.expect = Some(kind.into()),
                Some(("numa", n)) => {
                    lane.numa = Some(
                        n.parse()
                            .map_err(|_| format!("`{option}`: numa= takes a number of nodes"))?,
                    )
                }
                _ => {
                    return Err(format!(
                        "`{option}`: a --kernel option is expect=KIND or numa=N"
                    ))
                }
            }
        }
        Ok(lane)
    }
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

/// What a lane asks of an earlier run (the matrix's own or a plain `cargo
/// xtask test`) before taking its answer instead of booting: the same
/// kernel image and selftests binary, asked the same question, judged
/// against the same table. A mutant's run never answers, nor one that
/// never reached the suite.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReuseKey {
    image_sha256: String,
    selftests_sha256: String,
    /// The fragment set's label (`base+gmem`); None (any) for lanes whose
    /// kernel was not built here (the host, `--kernel`).
    config: Option<String>,
    filter: Option<String>,
    /// None when `auto` chooses, and for the host lane (no guest).
    accel: Option<Accel>,
    /// The guest's NUMA nodes (`--numa N`); None: one.
    numa: Option<u32>,
    expect: Option<String>,
    /// The series the run must have been built from (the series lane).
    series: Option<SeriesTag>,
}

impl ReuseKey {
    /// The key of `spec`'s lane for the kernel found for it.
    fn of(spec: &Spec, m: &MatrixArgs, kernel: &LaneKernel, bin_sha: &str) -> Result<ReuseKey> {
        let built = matches!(spec.kind, Kind::Series | Kind::Reference(_));
        Ok(ReuseKey {
            image_sha256: kernel.image_sha256.clone(),
            selftests_sha256: bin_sha.to_string(),
            config: match built {
                true => Some(crate::kconfig::fragment_list(&m.config)?.join("+")),
                false => None,
            },
            filter: m.filter.clone(),
            accel: match spec.kind {
                Kind::Host => None,
                _ => m.accel.fixed(),
            },
            numa: kernel.numa,
            expect: kernel.expect.clone(),
            series: match spec.kind {
                Kind::Series => crate::test::series_tag(None),
                _ => None,
            },
        })
    }

    fn answered_by(&self, r: &RunResult) -> bool {
        r.image_sha256.as_deref() == Some(self.image_sha256.as_str())
            && r.selftests_sha256.as_deref() == Some(self.selftests_sha256.as_str())
            && self.config.as_ref().is_none_or(|c| &r.config == c)
            && r.filter == self.filter
            && self.accel.is_none_or(|a| r.accel == Some(a))
            && r.numa == self.numa
            && r.expect == self.expect
            && r.series.as_ref().and_then(|t| t.mutant.as_ref()).is_none()
            && self.series.as_ref().is_none_or(|want| {
                r.series.as_ref().is_some_and(|t| {
                    t.name == want.name && t.version == want.version && t.base == want.base
                })
            })
            && reached_the_suite(r)
    }
}

/// A run that booted and ran the suite: only such a run answers anything.
fn reached_the_suite(r: &RunResult) -> bool {
    !matches!(
        r.outcome,
        crate::results::Outcome::Error(_) | crate::results::Outcome::NoBoot(_)
    )
}

/// The newest run under `results` (run ids begin with their time) that
/// `key` is answered by.
fn find_earlier_run(results: &Path, key: &ReuseKey) -> Option<(RunResult, PathBuf)> {
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
        key.answered_by(&r).then_some((r, dir))
    })
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
    Kernel(KernelLane),
}

struct Spec {
    id: String,
    label: String,
    kind: Kind,
}

impl Spec {
    /// `divergence` for the two lanes the rule compares, else `own`.
    fn judged(&self) -> String {
        if self.id == SERIES_LANE || self.id == REFERENCE_LANE {
            "divergence".into()
        } else {
            "own".into()
        }
    }
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

/// A lane's kernel: the tree and image (built where the lane builds one),
/// and the `test` arguments that boot that kernel.
struct LaneKernel {
    tree: Option<PathBuf>,
    image: Option<PathBuf>,
    /// Of the image; the host lane's is of the running kernel.
    image_sha256: String,
    /// The expectation table the lane's runs are judged against.
    expect: Option<String>,
    /// The guest's NUMA nodes (`--numa N`).
    numa: Option<u32>,
    /// `cargo xtask test` arguments, the selftests binary's among them.
    test_args: Vec<String>,
}

/// Builds (a no-op when nothing changed) or finds the lane's kernel.
fn lane_kernel(spec: &Spec, m: &MatrixArgs, bin: &Path) -> Result<LaneKernel> {
    let mut args = vec!["--selftests".to_string(), bin.display().to_string()];
    let mut expect = None;
    let mut numa = None;
    // Built lanes boot through `test`'s own build of their tree (a no-op
    // after the build here), so their results carry the same config label
    // as a plain `cargo xtask test` run.
    let (tree, image) = match &spec.kind {
        Kind::Series => {
            let tree =
                crate::series::checkout_default_tree(&crate::series::Purpose::Default)?.worktree;
            let fragments = crate::kconfig::fragment_list(&m.config)?;
            let image = build::build_kernel("series kernel", &tree, &fragments, None)?.image;
            // `test` judges a build of the series against `series` unasked.
            expect = Some("series".into());
            (Some(tree), Some(image))
        }
        Kind::Reference(v) => {
            let r = crate::reference::build(v, &m.config, None)?;
            expect = crate::reference::expect_kind(v)?;
            if let Some(kind) = &expect {
                args.extend(["--expect".into(), kind.clone()]);
            }
            (Some(r.tree), Some(r.built.image))
        }
        Kind::Kernel(lane) => {
            let image = lane
                .image
                .canonicalize()
                .with_context(|| format!("--kernel {} does not exist", lane.image.display()))?;
            args.extend(["--kernel".into(), image.display().to_string()]);
            expect = lane.expect.clone();
            if let Some(kind) = &expect {
                args.extend(["--expect".into(), kind.clone()]);
            }
            numa = lane.numa;
            if let Some(n) = numa {
                args.extend(["--numa".into(), n.to_string()]);
            }
            (None, Some(image))
        }
        Kind::Host => {
            args.push("--host".into());
            (None, None)
        }
    };
    let image_sha256 = match &image {
        Some(i) => util::sha256_file(i)?,
        None => util::host_kernel_key(),
    };
    Ok(LaneKernel {
        tree,
        image,
        image_sha256,
        expect,
        numa,
        test_args: args,
    })
}

/// A lane's run: its record, its directory, whether it was reused.
struct LaneRun {
    result: RunResult,
    dir: PathBuf,
    reused: bool,
}

/// An earlier run that answers the lane, unless `--rerun`. With
/// `--timeout` every lane runs again: a record does not say what deadline
/// its run had.
fn reuse(spec: &Spec, m: &MatrixArgs, key: &ReuseKey) -> Option<LaneRun> {
    if m.rerun || m.timeout.is_some() {
        return None;
    }
    let (result, dir) = find_earlier_run(&util::target_dir().join("results"), key)?;
    println!(
        "matrix: {}: reusing run {} (same kernel image and selftests binary)",
        spec.label, result.run_id
    );
    Some(LaneRun {
        result,
        dir,
        reused: true,
    })
}

/// Boots (or runs on the host) the lane's suite.
fn run_fresh(spec: &Spec, m: &MatrixArgs, kernel: &LaneKernel) -> Result<LaneRun> {
    let args = test_args(&kernel.test_args, m)?;
    let tree = kernel.tree.as_deref();
    let result = match &spec.kind {
        Kind::Host => crate::test::run_host(&args)?,
        Kind::Series => crate::test::run_boot(&args, tree, crate::test::series_tag(None))?,
        Kind::Reference(_) | Kind::Kernel(_) => crate::test::run_boot(&args, tree, None)?,
    };
    let dir = util::target_dir().join("results").join(&result.run_id);
    Ok(LaneRun {
        result,
        dir,
        reused: false,
    })
}

/// The lane's column of the matrix, from its run.
fn lane_of(spec: &Spec, kernel: LaneKernel, bin_sha: &str, run: LaneRun) -> Ran {
    let LaneRun {
        result,
        dir,
        reused,
    } = run;
    let cells = cells_of(&result);
    let log_name = match spec.kind {
        Kind::Host => crate::boot::files::STDOUT_LOG,
        _ => crate::boot::files::GUEST_LOG,
    };
    let log = dir.join(log_name);
    let lane = Lane {
        id: spec.id.clone(),
        label: spec.label.clone(),
        judged: spec.judged(),
        kernel: result.kernel.clone(),
        image: kernel.image,
        image_sha256: Some(kernel.image_sha256),
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
    Ran { lane, cells }
}

/// One lane: its kernel, then an earlier run that answers it or a new one.
fn run_lane(spec: &Spec, m: &MatrixArgs, bin: &Path, bin_sha: &str) -> Result<Ran> {
    let start = Instant::now();
    let kernel = lane_kernel(spec, m, bin)?;
    let key = ReuseKey::of(spec, m, &kernel, bin_sha)?;
    let run = match reuse(spec, m, &key) {
        Some(r) => r,
        None => run_fresh(spec, m, &kernel)?,
    };
    let ran = lane_of(spec, kernel, bin_sha, run);
    let (lane, c) = (&ran.lane, ran.lane.counts);
    println!(
        "matrix: {} done in {} ({} pass, {} fail, {} skip, {} no result): {}",
        spec.label,
        build::fmt_duration(start.elapsed()),
        c.pass,
        c.fail,
        c.skip,
        c.no_result,
        lane.outcome.lines().next().unwrap_or("")
    );
    Ok(ran)
}

fn failed_lane(spec: &Spec, bin_sha: &str, err: &anyhow::Error) -> Ran {
    println!("matrix: {} could not run: {err:#}", spec.label);
    Ran {
        lane: Lane {
            id: spec.id.clone(),
            label: spec.label.clone(),
            judged: spec.judged(),
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
        let name = k
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("kernel {}", i + 1));
        specs.push(Spec {
            id: format!("kernel-{}", i + 1),
            label: match k.numa {
                Some(n) => format!("{name} ({n} NUMA nodes)"),
                None => name,
            },
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
    use clap::Parser;

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
        let ask = ReuseKey {
            image_sha256: "img".into(),
            selftests_sha256: "bin".into(),
            config: Some("base+gmem".into()),
            filter: None,
            accel: None,
            numa: None,
            expect: Some("series".into()),
            series: Some(tag(None)),
        };
        let (found, dir) = find_earlier_run(tmp.path(), &ask).unwrap();
        assert_eq!(found.run_id, "20261201-110000-b");
        assert!(dir.ends_with("20261201-110000-b"));

        let filtered = ReuseKey {
            filter: Some("bind.".into()),
            ..ask
        };
        assert!(find_earlier_run(tmp.path(), &filtered).is_none());
        let other_binary = ReuseKey {
            selftests_sha256: "bin2".into(),
            ..filtered
        };
        assert!(find_earlier_run(tmp.path(), &other_binary).is_none());
    }

    fn args(extra: &[&str]) -> MatrixArgs {
        let argv = ["cargo xtask", "matrix"].iter().chain(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Matrix(m) => m,
            _ => unreachable!("parsed a `matrix` command line"),
        }
    }

    fn kernel(expect: Option<&str>) -> LaneKernel {
        LaneKernel {
            tree: None,
            image: None,
            image_sha256: "img".into(),
            expect: expect.map(Into::into),
            numa: None,
            test_args: Vec::new(),
        }
    }

    fn spec(kind: Kind) -> Spec {
        Spec {
            id: "lane".into(),
            label: "lane".into(),
            kind,
        }
    }

    #[test]
    fn the_reuse_key_asks_each_lane_what_its_own_run_would_have_been_asked() {
        let m = args(&["--accel", "tcg", "--filter", "bind.", "--config", "gmem"]);
        let host = ReuseKey::of(&spec(Kind::Host), &m, &kernel(None), "bin").unwrap();
        assert_eq!(
            host,
            ReuseKey {
                image_sha256: "img".into(),
                selftests_sha256: "bin".into(),
                config: None,
                filter: Some("bind.".into()),
                accel: None,
                numa: None,
                expect: None,
                series: None,
            },
            "the host lane has no guest: --accel does not apply to it"
        );
        let other = ReuseKey::of(
            &spec(Kind::Kernel("k".parse().unwrap())),
            &m,
            &kernel(None),
            "bin",
        );
        assert_eq!(other.unwrap().accel, Some(Accel::Tcg));
        let series = ReuseKey::of(&spec(Kind::Series), &m, &kernel(Some("series")), "bin").unwrap();
        assert_eq!(series.config.as_deref(), Some("base+gmem"));
        assert_eq!(series.expect.as_deref(), Some("series"));
        assert_eq!(series.series, crate::test::series_tag(None));
        assert!(series.series.is_some());
        let reference = ReuseKey::of(
            &spec(Kind::Reference("6.12.74".into())),
            &m,
            &kernel(Some("upstream-6.12")),
            "bin",
        )
        .unwrap();
        assert_eq!(reference.config.as_deref(), Some("base+gmem"));
        assert_eq!(reference.series, None);
        let auto = args(&[]);
        let any = ReuseKey::of(
            &spec(Kind::Kernel("k".parse().unwrap())),
            &auto,
            &kernel(None),
            "bin",
        );
        assert_eq!(
            any.unwrap().accel,
            None,
            "auto takes a run of either accelerator"
        );
    }

    #[test]
    fn a_key_is_answered_only_by_an_unmutated_run_that_reached_the_suite() {
        let mut r = run("20261201-100000-a", "img", None);
        let key = ReuseKey {
            image_sha256: "img".into(),
            selftests_sha256: "bin".into(),
            config: Some("base+gmem".into()),
            filter: None,
            accel: Some(Accel::Tcg),
            numa: None,
            expect: Some("series".into()),
            series: Some(tag(None)),
        };
        assert!(key.answered_by(&r));
        for outcome in [
            crate::results::Outcome::Failed(vec!["a case failed".into()]),
            crate::results::Outcome::Hang("900s".into()),
        ] {
            r.outcome = outcome;
            assert!(key.answered_by(&r), "{:?} is an answer", r.outcome);
        }
        for outcome in [
            crate::results::Outcome::Error("harness".into()),
            crate::results::Outcome::NoBoot("no KTAP".into()),
        ] {
            r.outcome = outcome;
            assert!(!key.answered_by(&r), "{:?} answers nothing", r.outcome);
        }
        r.outcome = crate::results::Outcome::Passed;
        let host = RunResult {
            accel: None,
            ..r.clone()
        };
        assert!(
            !key.answered_by(&host),
            "a tcg lane does not take a host run"
        );
        let kvm = RunResult {
            accel: Some(Accel::Kvm),
            ..r.clone()
        };
        assert!(!key.answered_by(&kvm));
        assert!(ReuseKey {
            accel: None,
            ..key.clone()
        }
        .answered_by(&kvm));
        let mutant = run("20261201-100000-a", "img", Some("m"));
        assert!(!ReuseKey {
            series: None,
            ..key.clone()
        }
        .answered_by(&mutant));
        let other_series = RunResult {
            series: Some(SeriesTag {
                version: 3,
                ..tag(None)
            }),
            ..r.clone()
        };
        assert!(!key.answered_by(&other_series));
        let other_config = RunResult {
            config: "base+gmem+numa".into(),
            ..r.clone()
        };
        assert!(!key.answered_by(&other_config));
        let two_nodes = RunResult { numa: Some(2), ..r };
        assert!(!key.answered_by(&two_nodes), "a one-node lane");
        assert!(ReuseKey {
            numa: Some(2),
            ..key.clone()
        }
        .answered_by(&two_nodes));
    }

    #[test]
    fn a_kernel_lane_takes_its_expectation_table_and_numa_nodes() {
        let m = args(&[
            "--kernel",
            "/img/a",
            "--kernel",
            "/img/b,expect=upstream-6.18,numa=2",
        ]);
        assert_eq!(
            m.kernel,
            vec![
                KernelLane {
                    image: "/img/a".into(),
                    expect: None,
                    numa: None
                },
                KernelLane {
                    image: "/img/b".into(),
                    expect: Some("upstream-6.18".into()),
                    numa: Some(2)
                },
            ]
        );
        for bad in [
            "/img/c,numa=two",
            "/img/c,nodes=2",
            "/img/c,expect=",
            ",numa=2",
        ] {
            let argv = ["cargo xtask", "matrix", "--kernel", bad];
            assert!(crate::cli::Cli::try_parse_from(argv).is_err(), "{bad}");
        }
        // What the lane's `test` run is asked: the table and the nodes.
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("bzImage");
        std::fs::write(&image, b"not a kernel").unwrap();
        let lane: KernelLane = format!("{},expect=upstream-6.18,numa=2", image.display())
            .parse()
            .unwrap();
        let k = lane_kernel(&spec(Kind::Kernel(lane)), &m, Path::new("/bin/t")).unwrap();
        assert_eq!(k.expect.as_deref(), Some("upstream-6.18"));
        assert_eq!(k.numa, Some(2));
        let t = test_args(&k.test_args, &m).unwrap();
        assert_eq!(t.expect.as_deref(), Some("upstream-6.18"));
        assert_eq!(t.numa, Some(2));
        assert_eq!(
            t.kernel.as_deref(),
            Some(image.canonicalize().unwrap().as_path())
        );
        let key = ReuseKey::of(&spec(Kind::Kernel(m.kernel[1].clone())), &m, &k, "bin").unwrap();
        assert_eq!(
            (key.numa, key.expect.as_deref()),
            (Some(2), Some("upstream-6.18"))
        );
    }

    #[test]
    fn rerun_and_timeout_make_every_lane_run_again() {
        let key = ReuseKey {
            image_sha256: "img".into(),
            selftests_sha256: "bin".into(),
            config: None,
            filter: None,
            accel: None,
            numa: None,
            expect: None,
            series: None,
        };
        let s = spec(Kind::Host);
        assert!(reuse(&s, &args(&["--rerun"]), &key).is_none());
        assert!(reuse(&s, &args(&["--timeout", "60"]), &key).is_none());
    }
}
