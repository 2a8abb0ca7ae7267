//! `cargo xtask series bases A..B`: for each point release in the range,
//! whether the series applies (as is, with offsets, three-way) or where it
//! first conflicts; a release that cannot be downloaded is shown as such.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::model::{self, Series};
use super::rebase::{self, Outcome, PatchReport};

#[derive(Debug, clap::Args)]
pub struct BasesArgs {
    /// Point releases, e.g. 6.1.170..6.1.177 (both ends included) or one version.
    pub range: String,
    /// Series name or path to a series directory.
    #[arg(long, default_value = super::DEFAULT_SERIES)]
    pub series: String,
    /// JSON output (default: target/series/<series>-bases.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One row: a point release and where the series stands on it.
#[derive(Debug, Clone, Serialize)]
pub struct BaseRow {
    pub version: String,
    /// "as-is", "offset", "three-way", "conflict", "unavailable", "error".
    pub status: String,
    pub detail: String,
    pub patches: Vec<PatchReport>,
}

/// Versions MAJOR.MINOR.a ..= MAJOR.MINOR.b.
pub fn expand_range(range: &str) -> Result<Vec<String>> {
    let (a, b) = range.split_once("..").unwrap_or((range, range));
    crate::tree::validate_version(a)?;
    crate::tree::validate_version(b)?;
    let split = |v: &str| -> Result<(String, u32)> {
        let (prefix, n) = v.rsplit_once('.').context("need MAJOR.MINOR.PATCH")?;
        Ok((prefix.to_string(), n.parse()?))
    };
    let ((pa, na), (pb, nb)) = (split(a)?, split(b)?);
    if pa != pb || na > nb || prefix_parts(&pa) != 2 {
        bail!("bad range {range:?}: give two point releases of one stable line, lower first, e.g. 6.1.170..6.1.177");
    }
    Ok((na..=nb).map(|n| format!("{pa}.{n}")).collect())
}

fn prefix_parts(p: &str) -> usize {
    p.split('.').count()
}

/// A row from a survey of the series on one tree.
pub fn row(
    version: &str,
    tree: std::result::Result<PathBuf, String>,
    series: &Series,
    old_tree: &Path,
) -> BaseRow {
    let tree = match tree {
        Ok(t) => t,
        Err(why) => {
            return BaseRow {
                version: version.into(),
                status: "unavailable".into(),
                detail: format!("cannot be downloaded: {why}"),
                patches: vec![],
            }
        }
    };
    let reports = match rebase::survey(series, old_tree, &tree, version) {
        Ok(r) => r,
        Err(e) => {
            return BaseRow {
                version: version.into(),
                status: "error".into(),
                detail: format!("{e:#}"),
                patches: vec![],
            }
        }
    };
    let (status, detail) = summarize(&reports);
    BaseRow {
        version: version.into(),
        status,
        detail,
        patches: reports,
    }
}

fn summarize(reports: &[PatchReport]) -> (String, String) {
    if let Some(r) = reports
        .iter()
        .find(|r| matches!(r.outcome, Outcome::Conflict { .. }))
    {
        if let Outcome::Conflict { file, hunk } = &r.outcome {
            return (
                "conflict".into(),
                format!("first conflict at patch {} ({file}, hunk {hunk})", r.number),
            );
        }
    }
    let dropped: Vec<String> = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::AlreadyApplied { .. }))
        .map(|r| r.number.to_string())
        .collect();
    let dropped = if dropped.is_empty() {
        String::new()
    } else {
        format!("; patch {} already in it", dropped.join(", "))
    };
    let three: Vec<String> = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::ThreeWay { .. }))
        .map(|r| r.number.to_string())
        .collect();
    if !three.is_empty() {
        return (
            "three-way".into(),
            format!("patch {} merged three-way{dropped}", three.join(", ")),
        );
    }
    let moved: Vec<String> = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Offset { .. }))
        .map(|r| r.number.to_string())
        .collect();
    let max = reports
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Offset { max_offset, .. } => Some(max_offset),
            _ => None,
        })
        .max_by_key(|o| o.abs());
    match max {
        Some(m) => (
            "offset".into(),
            format!(
                "applies with offsets (patch {}, up to {m} lines){dropped}",
                moved.join(", ")
            ),
        ),
        None => ("as-is".into(), format!("applies as is{dropped}")),
    }
}

pub fn table(rows: &[BaseRow]) -> String {
    let mut out = format!("{:<10}  {:<11}  detail\n", "version", "status");
    for r in rows {
        out.push_str(&format!(
            "{:<10}  {:<11}  {}\n",
            r.version, r.status, r.detail
        ));
    }
    out.trim_end().to_string()
}

pub fn run(args: BasesArgs) -> Result<ExitCode> {
    let versions = expand_range(&args.range)?;
    let dir = model::resolve_series_dir(&args.series, &crate::util::patches_dir())?;
    let series = Series::load(&dir)?;
    let old_tree = rebase::fetch_base("debian", &series.toml.base.version, None)?;
    let mut rows = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        eprintln!("[{}/{}] linux {v}", i + 1, versions.len());
        let tree = if *v == series.toml.base.version {
            Ok(old_tree.clone())
        } else {
            rebase::fetch_base("debian", v, None).map_err(|e| {
                let why = e.root_cause().to_string();
                // The list of what Debian does offer is long; the row needs only the reason.
                why.split(" (it offers").next().unwrap_or(&why).to_string()
            })
        };
        rows.push(row(v, tree, &series, &old_tree));
    }
    println!("{}", table(&rows));
    let json = args.json.unwrap_or_else(|| {
        crate::util::target_dir()
            .join("series")
            .join(format!("{}-bases.json", series.name()))
    });
    crate::tree::dest_parent(&json)?;
    std::fs::write(&json, serde_json::to_string_pretty(&rows)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("written {}", json.display());
    Ok(ExitCode::SUCCESS)
}
