//! What comes back from a run: KTAP parsing, the guest-log splat scanner,
//! results.json and junit.xml, the summary table. (Issue #3.)

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

pub mod history;
pub use history::{brief, MutantRow, MutantsReport, SeriesTag};

// ---------------------------------------------------------------- KTAP

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip(String),
    /// No result line: the stream ended (crash, hang, bail out) while the
    /// case was running or before it started.
    Missing(String),
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip(_) => "SKIP",
            Status::Missing(_) => "NO RESULT",
        }
    }
    pub fn is_failure(&self) -> bool {
        matches!(self, Status::Fail | Status::Missing(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub number: usize,
    pub name: String,
    #[serde(flatten)]
    pub status: Status,
    /// `# ...` diagnostic lines printed before the result line.
    pub diagnostics: Vec<String>,
    pub duration_ms: Option<u64>,
    pub subtests: Vec<Case>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ktap {
    pub version_seen: bool,
    pub plan: Option<usize>,
    pub cases: Vec<Case>,
    pub bail_out: Option<String>,
    /// Violations of the format: missing plan, truncation, numbering.
    pub problems: Vec<String>,
    /// Lines that were not KTAP (kernel messages on the same stream, ...).
    pub noise: Vec<String>,
    /// `# totals: pass P fail F skip S` when printed.
    pub totals: Option<(usize, usize, usize)>,
    /// Name of the case announced by `# begin`/kmsg markers or by the
    /// last diagnostics when the stream ended without its result.
    pub running_at_end: Option<String>,
}

impl Ktap {
    pub fn count(&self) -> (usize, usize, usize, usize) {
        let (mut p, mut f, mut s, mut m) = (0, 0, 0, 0);
        for c in &self.cases {
            match c.status {
                Status::Pass => p += 1,
                Status::Fail => f += 1,
                Status::Skip(_) => s += 1,
                Status::Missing(_) => m += 1,
            }
        }
        (p, f, s, m)
    }
}

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pat).expect("static regex"))
}

fn result_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"^(not ok|ok)\s+(\d+)(?:\s+-)?(?:\s+([^#]*?))?\s*(?:#\s*(.*))?$",
    )
}

/// A kernel console line (`[   1.234567] ...`), possibly glued to the end
/// of a test output line when both write to the same terminal.
fn kmsg_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"\[\s*\d+\.\d{6}\]")
}

/// Split stream lines into KTAP text and interleaved kernel messages.
fn clean_lines(text: &str) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut noise = Vec::new();
    for raw in text.lines() {
        let raw = raw.trim_end_matches('\r');
        match kmsg_re().find(raw) {
            Some(m) if m.start() == 0 || raw[..m.start()].trim().is_empty() => {
                noise.push(raw.to_string())
            }
            Some(m) => {
                out.push(raw[..m.start()].trim_end().to_string());
                noise.push(raw[m.start()..].to_string());
            }
            None => out.push(raw.to_string()),
        }
    }
    (out, noise)
}

/// Parse a KTAP v1 stream (with nested subtests). Never fails: whatever is
/// malformed is recorded in `problems`.
pub fn parse_ktap(text: &str) -> Ktap {
    let (lines, mut noise) = clean_lines(text);
    let mut k = Ktap::default();
    let mut pos = 0;
    // Skip anything before the header.
    while pos < lines.len()
        && lines[pos].trim() != "KTAP version 1"
        && lines[pos].trim() != "TAP version 13"
        && lines[pos].trim() != "TAP version 14"
    {
        if !lines[pos].trim().is_empty() {
            noise.push(lines[pos].clone());
        }
        pos += 1;
    }
    if pos == lines.len() {
        k.problems
            .push("no KTAP header (`KTAP version 1`) in the output".into());
        k.noise = noise;
        return k;
    }
    k.version_seen = true;
    pos += 1;
    let block = parse_block(&lines, &mut pos, 0, &mut noise, &mut k);
    k.cases = block.cases;
    k.plan = block.plan;
    k.noise = noise;
    if k.plan.is_none() && k.bail_out.is_none() {
        k.problems
            .push("no test plan (`1..N`) in the output".into());
    }
    if let Some(plan) = k.plan {
        let have = k.cases.len();
        if have < plan {
            let why = match &k.bail_out {
                Some(r) => format!("bailed out: {r}"),
                None => "stream truncated".to_string(),
            };
            if k.bail_out.is_none() {
                k.problems
                    .push(format!("truncated: {have} of {plan} results"));
            }
            // Name the case that was running when the stream ended: the
            // last diagnostics after the last result usually say it.
            let running = block.trailing_diag_name.clone();
            k.running_at_end = running.clone();
            k.cases.push(Case {
                number: have + 1,
                name: running.unwrap_or_else(|| format!("case #{}", have + 1)),
                status: Status::Missing(why),
                diagnostics: block.trailing_diags.clone(),
                duration_ms: None,
                subtests: Vec::new(),
            });
        } else if have > plan {
            k.problems
                .push(format!("{have} results but the plan said 1..{plan}"));
        }
    }
    for (i, c) in k.cases.iter().enumerate() {
        if c.number != i + 1 && !matches!(c.status, Status::Missing(_)) {
            k.problems
                .push(format!("result {} is numbered {}", i + 1, c.number));
            break;
        }
    }
    k
}

struct Block {
    plan: Option<usize>,
    cases: Vec<Case>,
    trailing_diags: Vec<String>,
    trailing_diag_name: Option<String>,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn parse_block(
    lines: &[String],
    pos: &mut usize,
    indent: usize,
    noise: &mut Vec<String>,
    k: &mut Ktap,
) -> Block {
    let mut b = Block {
        plan: None,
        cases: Vec::new(),
        trailing_diags: Vec::new(),
        trailing_diag_name: None,
    };
    let mut diags: Vec<String> = Vec::new();
    let mut pending_sub: Vec<Case> = Vec::new();
    let mut durations: Vec<(String, u64)> = Vec::new();
    let mut begun: Option<String> = None;
    while *pos < lines.len() {
        let line = &lines[*pos];
        let t = line.trim();
        if t.is_empty() {
            *pos += 1;
            continue;
        }
        let ind = indent_of(line);
        if ind < indent {
            break; // end of this subtest block
        }
        if ind > indent {
            // A nested block: `KTAP version 1` / `# Subtest:` / plan / results.
            let sub = parse_block(lines, pos, ind, noise, k);
            pending_sub = sub.cases;
            continue;
        }
        *pos += 1;
        if t == "KTAP version 1" || t.starts_with("TAP version") {
            continue;
        }
        if let Some(rest) = t.strip_prefix("Bail out!") {
            k.bail_out = Some(rest.trim().to_string());
            continue;
        }
        if let Some(plan) = t.strip_prefix("1..") {
            if let Ok(n) = plan.trim().parse::<usize>() {
                b.plan = Some(n);
                continue;
            }
        }
        if let Some(d) = t.strip_prefix('#') {
            let d = d.trim();
            if let Some(rest) = d.strip_prefix("time ") {
                let mut it = rest.split_whitespace();
                if let (Some(name), Some(ms)) =
                    (it.next(), it.next().and_then(|m| m.parse::<u64>().ok()))
                {
                    durations.push((name.to_string(), ms));
                    if let Some(c) = b.cases.iter_mut().rev().find(|c| c.name == name) {
                        c.duration_ms = Some(ms);
                    }
                    continue;
                }
            }
            if let Some(rest) = d.strip_prefix("totals:") {
                let nums: Vec<usize> = rest
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                if nums.len() == 3 && indent == 0 {
                    k.totals = Some((nums[0], nums[1], nums[2]));
                }
                continue;
            }
            if let Some(name) = d.strip_prefix("begin ") {
                begun = Some(name.trim().to_string());
            }
            diags.push(d.to_string());
            continue;
        }
        if let Some(caps) = result_re().captures(t) {
            let ok = &caps[1] == "ok";
            let number = caps[2].parse().unwrap_or(0);
            let name = caps
                .get(3)
                .map(|m| m.as_str().trim().to_string())
                .unwrap_or_default();
            let directive = caps.get(4).map(|m| m.as_str().trim().to_string());
            let status = match directive {
                Some(d) if d.len() >= 4 && d[..4].eq_ignore_ascii_case("skip") => {
                    Status::Skip(d[4..].trim().to_string())
                }
                Some(d) if d.len() >= 4 && d[..4].eq_ignore_ascii_case("todo") => {
                    Status::Skip(format!("TODO {}", d[4..].trim()))
                }
                _ if ok => Status::Pass,
                _ => Status::Fail,
            };
            let duration_ms = durations
                .iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, ms)| *ms);
            b.cases.push(Case {
                number,
                name,
                status,
                diagnostics: std::mem::take(&mut diags),
                duration_ms,
                subtests: std::mem::take(&mut pending_sub),
            });
            begun = None;
            continue;
        }
        noise.push(line.clone());
    }
    b.trailing_diag_name = begun.or_else(|| guess_running(&diags));
    b.trailing_diags = diags;
    b
}

/// The selftests print `# <name>: ...` style diagnostics; when a stream
/// ends mid-case, the last such name is the best guess of what was running.
fn guess_running(diags: &[String]) -> Option<String> {
    diags.iter().rev().find_map(|d| {
        let w = d.split_whitespace().next()?.trim_end_matches(':');
        (w.contains('.') && !w.contains('/')).then(|| w.to_string())
    })
}

// ---------------------------------------------------------------- splats

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplatKind {
    Warning,
    Bug,
    Kasan,
    Ubsan,
    Lockdep,
    GeneralProtectionFault,
    Oops,
    RcuStall,
    HungTask,
    SoftLockup,
    Panic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splat {
    pub kind: SplatKind,
    /// The headline (timestamp stripped).
    pub title: String,
    /// 1-based line in the scanned log.
    pub line: usize,
    /// Test running when it appeared (from the kmsg markers), or None when
    /// it happened outside any test (boot, between tests, teardown).
    pub test: Option<String>,
    /// Where it happened when not in a test: "boot", "between tests", ...
    pub phase: String,
    /// The report, up to its end marker or 60 lines.
    pub excerpt: Vec<String>,
}

/// Strip `[    1.234567] ` and `<4>` prefixes from a kernel log line.
pub fn strip_kmsg_prefix(line: &str) -> &str {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = re(
        &R,
        r"^(?:<\d+>)?(?:\[\s*\d+\.\d+\]\s?)?(?:\[\s*[TC]\d+\]\s?)?",
    );
    let end = r.find(line).map(|m| m.end()).unwrap_or(0);
    &line[end..]
}

/// Decide whether a (prefix-stripped) kernel log line starts a splat.
///
/// Anchored at the start of the message on purpose: reports begin with
/// their keyword (`WARNING: CPU: 0 PID: 1 at ...`, `BUG: KASAN: ...`),
/// while benign lines carry the word after a subsystem prefix (`Spectre V2 :
/// WARNING: Unprivileged eBPF is enabled ...`). A bare `WARNING:` line
/// counts only in the shapes __warn() and lockdep print; others (e.g. the
/// deprecation notice `WARNING: The mand mount option ...`) are not splats.
pub fn classify_splat(msg: &str) -> Option<SplatKind> {
    static WARN: OnceLock<Regex> = OnceLock::new();
    static LOCKDEP: OnceLock<Regex> = OnceLock::new();
    static BUG: OnceLock<Regex> = OnceLock::new();
    static RCU: OnceLock<Regex> = OnceLock::new();
    let warn = re(&WARN, r"^WARNING: (?:CPU: \d+ PID: \d+ at |at )");
    let lockdep = re(
        &LOCKDEP,
        r"^WARNING: (?:possible (?:circular|recursive|irq lock inversion) |inconsistent lock state|bad unlock balance|suspicious RCU usage|held lock freed|lock held (?:when|at)|\S+ lock order detected|bad contention detected|Nested lock was not taken|\S+/\d+ still has locks held|.*-safe -> .*-unsafe lock order detected|possible deadlock)",
    );
    let bug = re(&BUG, r"^(?:[\w./-]+: )?BUG: ");
    let rcu = re(&RCU, r"^(?:rcu: )?INFO: rcu_\w+ (?:self-)?detected stalls?");
    let msg = msg.trim_end();
    if lockdep.is_match(msg) {
        return Some(SplatKind::Lockdep);
    }
    if warn.is_match(msg) {
        return Some(SplatKind::Warning);
    }
    if bug.is_match(msg) {
        if msg.contains("BUG: KASAN:") {
            return Some(SplatKind::Kasan);
        }
        if msg.contains("soft lockup") {
            return Some(SplatKind::SoftLockup);
        }
        return Some(SplatKind::Bug);
    }
    if msg.starts_with("kernel BUG at ") {
        return Some(SplatKind::Bug);
    }
    if msg.starts_with("KASAN: ") {
        return Some(SplatKind::Kasan);
    }
    if msg.starts_with("UBSAN: ") {
        return Some(SplatKind::Ubsan);
    }
    if msg.starts_with("general protection fault") {
        return Some(SplatKind::GeneralProtectionFault);
    }
    if msg.starts_with("Oops: ") || msg.starts_with("Oops#") {
        return Some(SplatKind::Oops);
    }
    if rcu.is_match(msg) {
        return Some(SplatKind::RcuStall);
    }
    if msg.starts_with("INFO: task ") && msg.contains(" blocked for more than ") {
        return Some(SplatKind::HungTask);
    }
    if msg.starts_with("Watchdog detected hard LOCKUP")
        || msg.starts_with("NMI watchdog: Watchdog detected hard LOCKUP")
    {
        return Some(SplatKind::SoftLockup);
    }
    if msg.starts_with("Kernel panic - not syncing") {
        return Some(SplatKind::Panic);
    }
    None
}

/// The selftests' kmsg markers.
fn marker(msg: &str) -> Option<(bool, &str)> {
    let rest = msg.strip_prefix("gmem-selftests: ")?;
    if let Some(n) = rest.strip_prefix("begin ") {
        return Some((true, n.trim()));
    }
    rest.strip_prefix("end ").map(|n| (false, n.trim()))
}

/// Scan a kernel log for splats, attributing each to the test running
/// when it started.
pub fn scan_splats(log: &str) -> Vec<Splat> {
    let lines: Vec<&str> = log.lines().collect();
    let mut splats: Vec<Splat> = Vec::new();
    let mut running: Option<String> = None;
    let mut phase = "boot".to_string();
    let mut i = 0;
    while i < lines.len() {
        let msg = strip_kmsg_prefix(lines[i]);
        if let Some((begin, name)) = marker(msg) {
            if begin {
                running = Some(name.to_string());
            } else {
                running = None;
                phase = format!("after {name}");
            }
            i += 1;
            continue;
        }
        if msg.starts_with("gmem-harness: tests done") {
            phase = "after the tests".into();
        }
        if let Some(kind) = classify_splat(msg) {
            // A line that continues the previous report (the KASAN line
            // under a GPF headline)
            // belongs to it.
            if let Some(last) = splats.last() {
                let continues = matches!(
                    (last.kind, kind),
                    (SplatKind::GeneralProtectionFault, SplatKind::Kasan)
                );
                if continues && i < last.line - 1 + 4 {
                    i += 1;
                    continue;
                }
            }
            let mut excerpt = vec![msg.to_string()];
            let mut j = i + 1;
            while j < lines.len() && excerpt.len() < 60 {
                let m = strip_kmsg_prefix(lines[j]);
                if marker(m).is_some()
                    || classify_splat(m).is_some_and(|k| {
                        !matches!(
                            (kind, k),
                            (SplatKind::GeneralProtectionFault, SplatKind::Kasan)
                        )
                    })
                {
                    break;
                }
                excerpt.push(m.to_string());
                j += 1;
                if m.starts_with("---[ end trace")
                    || m.starts_with("---[ end Kernel panic")
                    || m.starts_with("=========") && excerpt.len() > 2
                {
                    break;
                }
            }
            splats.push(Splat {
                kind,
                title: msg.to_string(),
                line: i + 1,
                test: running.clone(),
                phase: if running.is_some() {
                    "test".into()
                } else {
                    phase.clone()
                },
                excerpt,
            });
        }
        i += 1;
    }
    splats
}

/// Taint flag letters for /proc/sys/kernel/tainted (kernel/panic.c order).
pub fn decode_taint(value: u64) -> String {
    const FLAGS: [(char, &str); 19] = [
        ('P', "proprietary module"),
        ('F', "forced module load"),
        ('S', "unsafe SMP"),
        ('R', "forced module unload"),
        ('M', "machine check"),
        ('B', "bad page"),
        ('U', "user request"),
        ('D', "kernel died (oops/BUG)"),
        ('A', "ACPI table override"),
        ('W', "warning (WARN)"),
        ('C', "staging driver"),
        ('I', "firmware workaround"),
        ('O', "out-of-tree module"),
        ('E', "unsigned module"),
        ('L', "soft lockup"),
        ('K', "live patched"),
        ('X', "auxiliary"),
        ('T', "randstruct"),
        ('N', "test"),
    ];
    let mut v = Vec::new();
    for (bit, (c, what)) in FLAGS.iter().enumerate() {
        if value & (1 << bit) != 0 {
            v.push(format!("{c} ({what}, {})", 1u64 << bit));
        }
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

// ---------------------------------------------------------------- run results

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// The kernel booted and every case passed (or was skipped).
    Passed,
    /// No KTAP header within the boot timeout.
    NoBoot(String),
    /// The kernel panicked (vng exits 255 under panic=-1).
    Panic(String),
    /// The whole-run timeout expired and QEMU was killed.
    Hang(String),
    /// KTAP failures, missing results, splats or taint changes.
    Failed(Vec<String>),
    /// The harness itself could not run the suite.
    Error(String),
}

impl Outcome {
    pub fn is_pass(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
    pub fn headline(&self) -> String {
        match self {
            Outcome::Passed => "PASSED".into(),
            Outcome::NoBoot(d) => format!("KERNEL DID NOT BOOT: {d}"),
            Outcome::Panic(d) => format!("KERNEL PANIC: {d}"),
            Outcome::Hang(d) => format!("GUEST HANG: {d}"),
            Outcome::Failed(r) => format!("FAILED: {}", r.join("; ")),
            Outcome::Error(d) => format!("HARNESS ERROR: {d}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub run_id: String,
    pub mode: String,
    pub kernel: Option<String>,
    pub kernel_image: Option<PathBuf>,
    pub config: String,
    pub accel: String,
    pub accel_reason: String,
    pub command: Vec<String>,
    pub guest_exit: Option<i32>,
    pub boot_to_first_ktap_s: Option<f64>,
    pub duration_s: f64,
    pub taint_before: Option<u64>,
    pub taint_after: Option<u64>,
    pub ktap: Ktap,
    pub splats: Vec<Splat>,
    pub outcome: Outcome,
    /// Which series (and mutant) the kernel was built from, when known:
    /// the cover letter's Tested: section picks runs by it.
    #[serde(default)]
    pub series: Option<SeriesTag>,
}

/// Work out the verdict from everything collected. Any failure, missing
/// result, splat or taint change fails the run; a problem in the KTAP stream
/// (truncated, no plan, bail out) fails it too.
pub fn verdict(
    ktap: &Ktap,
    splats: &[Splat],
    taint_before: Option<u64>,
    taint_after: Option<u64>,
    guest_exit: Option<i32>,
) -> Outcome {
    let mut reasons = Vec::new();
    let failed: Vec<&str> = ktap
        .cases
        .iter()
        .filter(|c| c.status.is_failure())
        .map(|c| c.name.as_str())
        .collect();
    if !failed.is_empty() {
        reasons.push(format!(
            "{} case(s) failed: {}",
            failed.len(),
            failed.join(", ")
        ));
    }
    if let Some(b) = &ktap.bail_out {
        reasons.push(format!("Bail out! {b}"));
    }
    for p in &ktap.problems {
        reasons.push(format!("KTAP: {p}"));
    }
    if !splats.is_empty() {
        let names: Vec<String> = splats
            .iter()
            .map(|s| {
                format!(
                    "{} in {}",
                    s.title,
                    s.test.clone().unwrap_or_else(|| s.phase.clone())
                )
            })
            .collect();
        reasons.push(format!(
            "{} kernel splat(s): {}",
            splats.len(),
            names.join(" | ")
        ));
    }
    if let (Some(b), Some(a)) = (taint_before, taint_after) {
        if a != b {
            reasons.push(format!(
                "kernel taint changed {b} -> {a}: {}",
                decode_taint(a & !b)
            ));
        }
    }
    if let Some(code) = guest_exit {
        if code != 0 && failed.is_empty() && reasons.is_empty() {
            reasons.push(format!(
                "selftests exited with status {code} without a failing case"
            ));
        }
    }
    if reasons.is_empty() {
        Outcome::Passed
    } else {
        Outcome::Failed(reasons)
    }
}

impl RunResult {
    pub fn write_json(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("results.json");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub fn junit(&self) -> quick_junit::Report {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("gmem-selftests");
        let mut suite = TestSuite::new(format!(
            "gmem-selftests ({}, {}, {})",
            self.kernel.as_deref().unwrap_or("?"),
            self.config,
            self.accel
        ));
        for c in &self.ktap.cases {
            let status = match &c.status {
                Status::Pass => TestCaseStatus::success(),
                Status::Skip(r) => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(r.clone());
                    s
                }
                Status::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message("not ok");
                    s.set_description(c.diagnostics.join("\n"));
                    s
                }
                Status::Missing(why) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(format!("no result: {why}"));
                    s.set_description(c.diagnostics.join("\n"));
                    s
                }
            };
            // A splat during a passing case turns it into a failure.
            let splats: Vec<&Splat> = self
                .splats
                .iter()
                .filter(|s| s.test.as_deref() == Some(c.name.as_str()))
                .collect();
            let status = if !splats.is_empty() && !c.status.is_failure() {
                splat_failure("kernel splat", &splats)
            } else {
                status
            };
            let mut tc = TestCase::new(c.name.clone(), status);
            if let Some(ms) = c.duration_ms {
                tc.set_time(std::time::Duration::from_millis(ms));
            }
            suite.add_test_case(tc);
        }
        let outside: Vec<&Splat> = self
            .splats
            .iter()
            .filter(|s| {
                s.test.is_none()
                    || !self
                        .ktap
                        .cases
                        .iter()
                        .any(|c| Some(&c.name) == s.test.as_ref())
            })
            .collect();
        if !outside.is_empty() {
            let s = splat_failure("kernel splat outside a test", &outside);
            suite.add_test_case(TestCase::new("kernel-log", s));
        }
        match &self.outcome {
            Outcome::NoBoot(d) | Outcome::Panic(d) | Outcome::Hang(d) | Outcome::Error(d) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(self.outcome.headline());
                s.set_description(d.clone());
                suite.add_test_case(TestCase::new("boot", s));
            }
            _ => {}
        }
        report.add_test_suite(suite);
        report
    }

    pub fn write_junit(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("junit.xml");
        let xml = self.junit().to_string().context("serialising junit.xml")?;
        std::fs::write(&path, xml).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("run        {}\n", self.run_id));
        out.push_str(&format!(
            "kernel     {}\n",
            self.kernel.as_deref().unwrap_or("(unknown)")
        ));
        out.push_str(&format!("config     {}\n", self.config));
        out.push_str(&format!(
            "accel      {} ({})\n",
            self.accel, self.accel_reason
        ));
        if let Some(b) = self.boot_to_first_ktap_s {
            out.push_str(&format!("boot       first KTAP line after {b:.1}s\n"));
        }
        out.push_str(&format!("duration   {:.1}s\n", self.duration_s));
        if let (Some(b), Some(a)) = (self.taint_before, self.taint_after) {
            out.push_str(&format!(
                "taint      before {b}, after {a} ({})\n",
                decode_taint(a)
            ));
        }
        if !self.ktap.cases.is_empty() {
            let w = self
                .ktap
                .cases
                .iter()
                .map(|c| c.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            out.push_str(&format!(
                "\n{:<w$}  {:<9}  {:>8}  detail\n",
                "case", "status", "ms"
            ));
            for c in &self.ktap.cases {
                let splat = self
                    .splats
                    .iter()
                    .find(|s| s.test.as_deref() == Some(c.name.as_str()));
                let (label, detail) = match (&c.status, splat) {
                    (st, Some(s)) if !st.is_failure() => ("SPLAT", s.title.clone()),
                    (Status::Skip(r), _) => ("SKIP", r.clone()),
                    (Status::Missing(r), _) => ("NO RESULT", r.clone()),
                    (Status::Fail, s) => (
                        "FAIL",
                        s.map(|s| s.title.clone())
                            .or_else(|| c.diagnostics.last().cloned())
                            .unwrap_or_default(),
                    ),
                    (Status::Pass, _) => ("PASS", String::new()),
                };
                let ms = c
                    .duration_ms
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into());
                out.push_str(&format!("{:<w$}  {label:<9}  {ms:>8}  {detail}\n", c.name));
            }
            let (p, f, s, m) = self.ktap.count();
            out.push_str(&format!(
                "\n{p} passed, {f} failed, {s} skipped, {m} without result\n"
            ));
        }
        for s in &self.splats {
            out.push_str(&format!(
                "splat ({:?}) in {}: {} [log line {}]\n",
                s.kind,
                s.test.clone().unwrap_or_else(|| s.phase.clone()),
                s.title,
                s.line
            ));
        }
        out.push_str(&format!("\nresult: {}\n", self.outcome.headline()));
        out
    }
}

/// A JUnit failure for `splats` (at least one): the first one's title as
/// the message, every excerpt as the description.
fn splat_failure(what: &str, splats: &[&Splat]) -> quick_junit::TestCaseStatus {
    let mut s = quick_junit::TestCaseStatus::non_success(quick_junit::NonSuccessKind::Failure);
    s.set_message(format!("{what}: {}", splats[0].title));
    s.set_description(
        splats
            .iter()
            .flat_map(|s| s.excerpt.clone())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    s
}
