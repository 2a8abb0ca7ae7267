//! The guest-log splat scanner and the taint decoder.

use std::sync::OnceLock;

use protocol::kmsg::{self, Edge};
use protocol::taint;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::util::static_regex;

pub use protocol::splat::{classify as classify_splat, SplatKind};

/// `SplatKind` in results files: its snake_case name.
mod kind_name {
    use protocol::splat::SplatKind;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &SplatKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SplatKind, D::Error> {
        let name = String::deserialize(d)?;
        SplatKind::from_name(&name)
            .ok_or_else(|| D::Error::custom(format!("unknown splat kind `{name}`")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splat {
    #[serde(with = "kind_name")]
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
    let r = static_regex(
        &R,
        r"^(?:<\d+>)?(?:\[\s*\d+\.\d+\]\s?)?(?:\[\s*[TC]\d+\]\s?)?",
    );
    let end = r.find(line).map(|m| m.end()).unwrap_or(0);
    &line[end..]
}

/// The selftests' kmsg markers: (begin?, case name).
fn marker(msg: &str) -> Option<(bool, &str)> {
    kmsg::parse_marker(msg).map(|(edge, name)| (edge == Edge::Begin, name))
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

/// Taint flag letters for /proc/sys/kernel/tainted, from the kernel's table.
pub fn decode_taint(value: u64) -> String {
    let v: Vec<String> = taint::bits(value)
        .map(|bit| match taint::flag_of(bit) {
            Some(f) => format!("{} ({}, {})", f.letter, f.meaning, 1u64 << bit),
            None => format!("bit {bit} (unknown, {})", 1u64 << bit),
        })
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
