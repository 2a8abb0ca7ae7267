//! The tree's `scripts/checkpatch.pl --strict --terse` on each patch, as a
//! table of errors, warnings and checks per patch.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchReport {
    /// File name of the patch.
    pub patch: String,
    pub errors: usize,
    pub warnings: usize,
    pub checks: usize,
    /// `file:line: TYPE: message` lines as checkpatch printed them.
    pub messages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpatch {
    /// checkpatch could not run; the reason says why (a SKIP, not a pass).
    Skipped(String),
    Ran(Vec<PatchReport>),
}

/// Message types not checked on a cover letter: its `change-id:` line is
/// b4's series trailer, which checkpatch takes for a Gerrit Change-Id.
pub const COVER_IGNORE: &str = "GERRIT_CHANGE_ID";

/// Run checkpatch from `tree` on the cover letter (if any) and each patch.
pub fn run(tree: &Path, cover: Option<&Path>, patches: &[PathBuf]) -> Result<Checkpatch> {
    let script = tree.join("scripts/checkpatch.pl");
    if !script.is_file() {
        return Ok(Checkpatch::Skipped(format!(
            "{} not found (is --tree a kernel tree?)",
            script.display()
        )));
    }
    let sh = xshell::Shell::new()?;
    if xshell::cmd!(sh, "perl -e 1")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        return Ok(Checkpatch::Skipped(
            "perl is not installed (apt-get install perl)".into(),
        ));
    }
    sh.change_dir(tree);
    let line_re = Regex::new(r"^(.*?):(\d+): (ERROR|WARNING|CHECK): (.*)$").expect("static regex");
    let mut reports = Vec::new();
    let files = cover
        .map(|c| (c.to_path_buf(), true))
        .into_iter()
        .chain(patches.iter().map(|p| (p.clone(), false)));
    for (patch, is_cover) in files {
        let patch = &patch;
        let ignore: Vec<&str> = if is_cover {
            vec!["--ignore", COVER_IGNORE]
        } else {
            Vec::new()
        };
        let name = patch
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let abs =
            std::path::absolute(patch).with_context(|| format!("resolving {}", patch.display()))?;
        let output = xshell::cmd!(
            sh,
            "perl {script} --strict --terse --no-summary --showfile {ignore...} {abs}"
        )
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running checkpatch on {name}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut report = PatchReport {
            patch: name.clone(),
            errors: 0,
            warnings: 0,
            checks: 0,
            messages: Vec::new(),
        };
        for line in stdout.lines() {
            if let Some(caps) = line_re.captures(line) {
                match &caps[3] {
                    "ERROR" => report.errors += 1,
                    "WARNING" => report.warnings += 1,
                    _ => report.checks += 1,
                }
                report.messages.push(line.to_string());
            }
        }
        let code = output.status.code();
        let counted = report.errors + report.warnings + report.checks;
        if code != Some(0) && counted == 0 {
            let stderr = String::from_utf8_lossy(&output.stderr);
            anyhow::bail!(
                "checkpatch failed on {name} (exit {code:?}) without reporting anything: {}",
                stderr.trim()
            );
        }
        reports.push(report);
    }
    Ok(Checkpatch::Ran(reports))
}

/// The per-patch table followed by every message.
pub fn table(result: &Checkpatch) -> String {
    match result {
        Checkpatch::Skipped(reason) => format!("checkpatch: SKIP: {reason}"),
        Checkpatch::Ran(reports) => {
            let width = reports
                .iter()
                .map(|r| r.patch.len())
                .max()
                .unwrap_or(5)
                .max(5);
            let mut out = format!(
                "{:<width$}  {:>6}  {:>8}  {:>6}\n",
                "patch", "errors", "warnings", "checks"
            );
            let (mut e, mut w, mut c) = (0, 0, 0);
            for r in reports {
                out.push_str(&format!(
                    "{:<width$}  {:>6}  {:>8}  {:>6}\n",
                    r.patch, r.errors, r.warnings, r.checks
                ));
                e += r.errors;
                w += r.warnings;
                c += r.checks;
            }
            out.push_str(&format!("{:<width$}  {e:>6}  {w:>8}  {c:>6}\n", "total"));
            for r in reports {
                for m in &r.messages {
                    out.push_str(&format!("{}: {m}\n", r.patch));
                }
            }
            out.trim_end().to_string()
        }
    }
}
