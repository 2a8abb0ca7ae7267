//! The nested-virt workflow in ci/ must stay in step with the data it
//! names: every config set's fragments exist in kconfigs/, and the mutant
//! matrix is exactly the set of patches/mutants/*.patch that
//! patches/mutants/equivalent.toml does not list (the job passes only when
//! the suite kills its mutant), and every `cargo xtask` command it runs
//! parses.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Parser;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn workflow() -> Yaml {
    let text = std::fs::read_to_string(root().join("ci/nested-virt.yml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn matrix(job: &str, key: &str) -> Vec<String> {
    let doc = workflow();
    let list = &doc["jobs"][job]["strategy"]["matrix"][key];
    let items = list
        .as_vec()
        .unwrap_or_else(|| panic!("jobs.{job}.strategy.matrix.{key} is not a list"));
    items
        .iter()
        .map(|y| y.as_str().expect("matrix entries are strings").to_string())
        .collect()
}

fn stems(dir: &str, ext: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == ext)
                .then(|| p.file_stem()?.to_str().map(str::to_string))
                .flatten()
        })
        .collect()
}

#[test]
fn config_matrix_names_existing_fragments() {
    let fragments = stems("kconfigs", "config");
    let sets = matrix("selftests", "config");
    assert!(!sets.is_empty());
    for set in sets {
        for name in set.split(',') {
            assert!(
                fragments.contains(name),
                "matrix config set {set:?} names {name:?}, not in kconfigs/: {fragments:?}"
            );
        }
    }
}

#[test]
fn mutant_matrix_matches_patches_mutants() {
    let equivalent =
        xtask::mutate::equivalent::load(&root().join("patches/mutants/equivalent.toml")).unwrap();
    let files: BTreeSet<String> = stems("patches/mutants", "patch")
        .into_iter()
        .filter(|name| equivalent.reason_for_name(name).is_none())
        .collect();
    let listed: BTreeSet<String> = matrix("mutants", "mutant").into_iter().collect();
    assert_eq!(
        listed, files,
        "ci/nested-virt.yml mutants matrix vs patches/mutants/*.patch not listed in equivalent.toml"
    );
}

#[test]
fn reference_job_runs_the_matrix_and_uploads_its_files() {
    let doc = workflow();
    let steps = doc["jobs"]["reference"]["steps"]
        .as_vec()
        .expect("jobs.reference.steps is a list");
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(
        runs.iter().any(|r| r.contains("cargo xtask matrix")),
        "the reference job runs `cargo xtask matrix`: {runs:?}"
    );
    let uploads: Vec<&str> = steps
        .iter()
        .filter(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
        })
        .filter_map(|s| s["with"]["path"].as_str())
        .collect();
    for file in ["matrix.md", "matrix.json", "matrix.html", "logs/"] {
        assert!(
            uploads
                .iter()
                .any(|p| p.contains(&format!("target/matrix/{file}"))),
            "the reference job uploads target/matrix/{file}: {uploads:?}"
        );
    }
}

/// The words of a `run:` line after `cargo xtask`, with each `${{ ... }}`
/// expression (quoted or not) as one placeholder word.
fn xtask_words(line: &str) -> Option<Vec<String>> {
    let (_, rest) = line.split_once("cargo xtask ")?;
    let mut text = String::new();
    let mut left = rest;
    while let Some(start) = left.find("${{") {
        text.push_str(&left[..start]);
        let end = left[start..].find("}}").expect("`${{` is closed") + start + 2;
        text.push_str("EXPR");
        left = &left[end..];
    }
    text.push_str(left);
    Some(
        text.split_whitespace()
            .map(|w| w.trim_matches('"').to_string())
            .collect(),
    )
}

#[test]
fn every_xtask_command_the_workflow_runs_parses() {
    let doc = workflow();
    let jobs = doc["jobs"].as_hash().expect("jobs is a map");
    let mut seen = 0;
    for (name, job) in jobs {
        for step in job["steps"].as_vec().into_iter().flatten() {
            for line in step["run"].as_str().unwrap_or("").lines() {
                let Some(words) = xtask_words(line) else {
                    continue;
                };
                seen += 1;
                let argv = std::iter::once("cargo xtask".to_string()).chain(words);
                if let Err(e) = xtask::cli::Cli::try_parse_from(argv) {
                    let job = name.as_str().unwrap_or("?");
                    panic!("job {job}: `{}` does not parse: {e}", line.trim());
                }
            }
        }
    }
    assert!(
        seen >= 4,
        "found {seen} `cargo xtask` lines in ci/nested-virt.yml"
    );
}
