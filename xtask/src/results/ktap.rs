//! KTAP v1 parsing: results, plans, diagnostics, truncation and bail-outs.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use protocol::ktap;
use regex::Regex;
use serde::{Deserialize, Serialize};

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
    /// The suite's `# caps SCOPE KVM_CAP_X=V ...` report: scope (`system` or
    /// a VM type) to capability values; `None` for a VM type reported
    /// `unavailable`.
    #[serde(default)]
    pub caps: BTreeMap<String, Option<BTreeMap<String, i64>>>,
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

fn result_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    crate::util::static_regex(
        &R,
        r"^(not ok|ok)\s+(\d+)(?:\s+-)?(?:\s+([^#]*?))?\s*(?:#\s*(.*))?$",
    )
}

/// A kernel console line (`[   1.234567] ...`), possibly glued to the end
/// of a test output line when both write to the same terminal.
fn kmsg_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    crate::util::static_regex(&R, r"\[\s*\d+\.\d{6}\]")
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
            // last diagnostics after the last result usually say it. Every
            // other absent number is a case that never started.
            let running = block.trailing_diag_name.clone();
            k.running_at_end = running.clone();
            k.cases.push(Case {
                number: have + 1,
                name: running.unwrap_or_else(|| format!("case #{}", have + 1)),
                status: Status::Missing(why.clone()),
                diagnostics: block.trailing_diags.clone(),
                duration_ms: None,
                subtests: Vec::new(),
            });
            for number in have + 2..=plan {
                k.cases.push(Case {
                    number,
                    name: format!("case #{number}"),
                    status: Status::Missing(format!("{why}; not started")),
                    diagnostics: Vec::new(),
                    duration_ms: None,
                    subtests: Vec::new(),
                });
            }
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
    let mut s = BlockState::default();
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
            s.pending_sub = sub.cases;
            continue;
        }
        *pos += 1;
        if t == ktap::VERSION_LINE || t.starts_with("TAP version") {
            continue;
        }
        if let Some(rest) = t.strip_prefix("Bail out!") {
            k.bail_out = Some(rest.trim().to_string());
            continue;
        }
        if let Some(plan) = t.strip_prefix("1..") {
            if let Ok(n) = plan.trim().parse::<usize>() {
                s.plan = Some(n);
                continue;
            }
        }
        if let Some(d) = t.strip_prefix('#') {
            s.diagnostic(d.trim(), indent, k);
            continue;
        }
        if let Some(result) = parse_result(t) {
            s.result(result);
            continue;
        }
        noise.push(line.clone());
    }
    s.finish()
}

/// What [`parse_block`] has gathered so far in one block.
#[derive(Default)]
struct BlockState {
    plan: Option<usize>,
    cases: Vec<Case>,
    /// Diagnostics since the last result line.
    diags: Vec<String>,
    /// Subtests of the nested block just read, for the next result line.
    pending_sub: Vec<Case>,
    /// `# time NAME MS` lines seen: a time printed before its result line
    /// is found here when that line comes.
    durations: Vec<(String, u64)>,
    /// The case a `# begin NAME` marker announced since the last result.
    begun: Option<String>,
}

impl BlockState {
    /// One `# ...` line (without the `#`): a time, the totals, a caps
    /// report (top level only) or a diagnostic for the next result.
    fn diagnostic(&mut self, d: &str, indent: usize, k: &mut Ktap) {
        if let Some(rest) = d.strip_prefix(ktap::TIME) {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(ms)) =
                (it.next(), it.next().and_then(|m| m.parse::<u64>().ok()))
            {
                self.durations.push((name.to_string(), ms));
                if let Some(c) = self.cases.iter_mut().rev().find(|c| c.name == name) {
                    c.duration_ms = Some(ms);
                }
                return;
            }
        }
        if let Some(rest) = d.strip_prefix(ktap::TOTALS) {
            let nums: Vec<usize> = rest
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if nums.len() == 3 && indent == 0 {
                k.totals = Some((nums[0], nums[1], nums[2]));
            }
            return;
        }
        if let Some(rest) = d.strip_prefix(ktap::CAPS) {
            if indent == 0 {
                record_caps(k, rest);
                return;
            }
        }
        if let Some(name) = d.strip_prefix(ktap::BEGIN) {
            self.begun = Some(name.trim().to_string());
        }
        self.diags.push(d.to_string());
    }

    /// A result line closes a case: it takes the diagnostics and subtests
    /// gathered since the previous one.
    fn result(&mut self, result: ResultLine) {
        let duration_ms = self
            .durations
            .iter()
            .rev()
            .find(|(n, _)| *n == result.name)
            .map(|(_, ms)| *ms);
        self.cases.push(Case {
            number: result.number,
            name: result.name,
            status: result.status,
            diagnostics: std::mem::take(&mut self.diags),
            duration_ms,
            subtests: std::mem::take(&mut self.pending_sub),
        });
        self.begun = None;
    }

    fn finish(self) -> Block {
        Block {
            plan: self.plan,
            cases: self.cases,
            trailing_diag_name: self.begun.or_else(|| guess_running(&self.diags)),
            trailing_diags: self.diags,
        }
    }
}

/// An `ok N name # directive` / `not ok N name` line.
struct ResultLine {
    number: usize,
    name: String,
    status: Status,
}

fn parse_result(t: &str) -> Option<ResultLine> {
    let caps = result_re().captures(t)?;
    let ok = &caps[1] == "ok";
    let number = caps[2].parse().unwrap_or(0);
    let name = caps
        .get(3)
        .map(|m| m.as_str().trim().to_string())
        .unwrap_or_default();
    let directive = caps.get(4).map(|m| m.as_str().trim().to_string());
    // `not ok ... # SKIP` is a failure whatever the directive says.
    let status = match directive {
        _ if !ok => Status::Fail,
        Some(d) if d.len() >= 4 && d[..4].eq_ignore_ascii_case("skip") => {
            Status::Skip(d[4..].trim().to_string())
        }
        Some(d) if d.len() >= 4 && d[..4].eq_ignore_ascii_case("todo") => {
            Status::Skip(format!("TODO {}", d[4..].trim()))
        }
        _ => Status::Pass,
    };
    Some(ResultLine {
        number,
        name,
        status,
    })
}

/// One `# caps SCOPE ...` line: `KVM_CAP_X=V` pairs (decimal or 0x hex),
/// or `unavailable ...` for a VM type that could not be created.
fn record_caps(k: &mut Ktap, rest: &str) {
    let mut words = rest.split_whitespace();
    let Some(scope) = words.next() else {
        k.problems.push("`# caps` line without a scope".into());
        return;
    };
    let mut values = BTreeMap::new();
    for w in words {
        if w == ktap::CAPS_UNAVAILABLE {
            k.caps.insert(scope.to_string(), None);
            return;
        }
        let parsed = w.split_once('=').and_then(|(name, v)| {
            let v = match v.strip_prefix("0x") {
                Some(hex) => i64::from_str_radix(hex, 16).ok()?,
                None => v.parse().ok()?,
            };
            Some((name.to_string(), v))
        });
        match parsed {
            Some((name, v)) => {
                values.insert(name, v);
            }
            None => k.problems.push(format!(
                "`# caps {scope}`: cannot read `{w}` (want NAME=VALUE)"
            )),
        }
    }
    k.caps.insert(scope.to_string(), Some(values));
}

/// The selftests print `# <name>: ...` style diagnostics; when a stream
/// ends mid-case, the last such name is the best guess of what was running.
fn guess_running(diags: &[String]) -> Option<String> {
    diags.iter().rev().find_map(|d| {
        let w = d.split_whitespace().next()?.trim_end_matches(':');
        (w.contains('.') && !w.contains('/')).then(|| w.to_string())
    })
}
