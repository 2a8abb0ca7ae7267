//! The nested-virt workflow in ci/ must stay in step with the data it
//! names: every config set's fragments exist in kconfigs/, and the mutant
//! matrix is exactly the set of patches/mutants/*.patch that
//! patches/mutants/equivalent.toml does not list (the job passes only when
//! the suite kills its mutant).

use std::collections::BTreeSet;
use std::path::PathBuf;

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
