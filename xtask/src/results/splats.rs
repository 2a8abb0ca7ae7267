//! The guest-log splat scanner and the taint decoder.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::ktap::re;

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
