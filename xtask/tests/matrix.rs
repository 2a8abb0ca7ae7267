//! The cross-kernel matrix: verdict keys, the divergence rule, the
//! divergence file, and the rendered tables (no kernel needed).

use std::collections::BTreeMap;
use std::path::Path;

use xtask::matrix::{cell_of, judge, reason_class, Cell, DivergenceFile, Matrix, Verdict};
use xtask::results::{Case, Status};

fn case(name: &str, status: Status, diags: &[&str]) -> Case {
    Case {
        number: 1,
        name: name.into(),
        status,
        diagnostics: diags.iter().map(|d| d.to_string()).collect(),
        duration_ms: Some(1),
        subtests: Vec::new(),
    }
}

fn cells(list: &[(&str, Status, &[&str])]) -> BTreeMap<String, Cell> {
    list.iter()
        .map(|(n, s, d)| (n.to_string(), cell_of(&case(n, s.clone(), d), &[])))
        .collect()
}

const PAIR: [&str; 2] = ["6.1+series", "6.12"];

fn pair() -> [String; 2] {
    [PAIR[0].to_string(), PAIR[1].to_string()]
}

#[test]
fn reason_classes_ignore_values_but_not_what_is_missing() {
    assert_eq!(
        reason_class("KVM_CAP_GUEST_MEMFD is 0 on a default VM"),
        reason_class("KVM_CAP_GUEST_MEMFD is -1 on a default VM")
    );
    assert_eq!(
        reason_class("KVM_CAP_MEMORY_ATTRIBUTES lacks KVM_MEMORY_ATTRIBUTE_PRIVATE on a sw_protected VM (0x0)"),
        reason_class("KVM_CAP_MEMORY_ATTRIBUTES lacks KVM_MEMORY_ATTRIBUTE_PRIVATE on a sw_protected VM (0x8)")
    );
    assert_ne!(
        reason_class("KVM_CAP_GUEST_MEMFD is 0 on a default VM"),
        reason_class("KVM_CAP_USER_MEMORY2 is 0 on a default VM")
    );
    assert_eq!(reason_class("flags 0x1f and 12"), "flags # and #");
}

#[test]
fn cells_key_pass_fail_skip_and_splats() {
    let pass = cell_of(&case("a", Status::Pass, &[]), &[]);
    assert_eq!(
        (pass.verdict.clone(), pass.key.as_str()),
        (Verdict::Pass, "pass")
    );
    let splat = cell_of(
        &case("a", Status::Pass, &[]),
        &["WARNING at kvm_main.c".into()],
    );
    assert_eq!(
        splat.verdict,
        Verdict::Fail,
        "a splat during a passing case fails it"
    );
    assert!(splat.key.contains("splat"), "{}", splat.key);
    let fail = cell_of(&case("a", Status::Fail, &["expected EINVAL, got 0"]), &[]);
    assert_eq!(fail.key, "fail: expected EINVAL, got #");
    let skip = cell_of(
        &case(
            "a",
            Status::Skip("KVM_CAP_GUEST_MEMFD is 0 on a default VM".into()),
            &[],
        ),
        &[],
    );
    assert_eq!(skip.key, "skip: KVM_CAP_GUEST_MEMFD is # on a default VM");
    assert!(skip.brief().contains("KVM_CAP_GUEST_MEMFD"));
}

#[test]
fn identical_lanes_do_not_diverge() {
    let a = cells(&[
        ("x@default", Status::Pass, &[]),
        (
            "y@default",
            Status::Skip("KVM_CAP_GUEST_MEMFD is 0 on a default VM".into()),
            &[],
        ),
        ("z@default", Status::Fail, &["expected EINVAL, got 0"]),
    ]);
    let (found, stale) = judge(&a, &a.clone(), &DivergenceFile::default(), &pair());
    assert!(found.is_empty(), "{found:?}");
    assert!(stale.is_empty());
}

#[test]
fn every_other_difference_is_a_divergence() {
    let series = cells(&[
        ("pass_fail@sw", Status::Pass, &[]),
        (
            "skip_reason@sw",
            Status::Skip("KVM_CAP_GUEST_MEMFD is 0 on a sw_protected VM".into()),
            &[],
        ),
        ("other_check@sw", Status::Fail, &["expected EINVAL, got 0"]),
        ("only_series@sw", Status::Pass, &[]),
    ]);
    let reference = cells(&[
        ("pass_fail@sw", Status::Fail, &["expected EINVAL, got 0"]),
        (
            "skip_reason@sw",
            Status::Skip("KVM_CAP_USER_MEMORY2 is 0 on a sw_protected VM".into()),
            &[],
        ),
        ("other_check@sw", Status::Fail, &["expected EBADF, got 0"]),
    ]);
    let (found, _) = judge(&series, &reference, &DivergenceFile::default(), &pair());
    let names: Vec<&str> = found.iter().map(|d| d.case.as_str()).collect();
    assert_eq!(
        names,
        [
            "only_series@sw",
            "other_check@sw",
            "pass_fail@sw",
            "skip_reason@sw"
        ]
    );
    let absent = found.iter().find(|d| d.case == "only_series@sw").unwrap();
    assert_eq!(absent.reference.verdict, Verdict::Absent);
    assert!(found.iter().all(|d| d.explained.is_none()));
}

const FILE: &str = r#"
[[divergence]]
case = "pass_fail@sw"
kernels = ["6.1+series", "6.12"]
reason = "6.1 has no X"
upstream = "0123456789ab (\"KVM: change X\")"

[[divergence]]
case = "gone@sw"
kernels = ["6.1+series", "6.12"]
reason = "fixed since"
upstream = "0123456789abcdef"
"#;

#[test]
fn the_file_explains_divergences_and_stale_entries_are_reported() {
    let file = DivergenceFile::parse(FILE, Path::new("divergences.toml")).unwrap();
    let series = cells(&[
        ("pass_fail@sw", Status::Pass, &[]),
        ("gone@sw", Status::Pass, &[]),
    ]);
    let reference = cells(&[
        ("pass_fail@sw", Status::Fail, &["expected EINVAL, got 0"]),
        ("gone@sw", Status::Pass, &[]),
    ]);
    let (found, stale) = judge(&series, &reference, &file, &pair());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].explained.as_ref().unwrap().reason, "6.1 has no X");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].case, "gone@sw");
    // Against another reference series the entry does not apply.
    let other = ["6.1+series".to_string(), "6.18".to_string()];
    let (found, stale) = judge(&series, &reference, &file, &other);
    assert!(found[0].explained.is_none());
    assert_eq!(stale.len(), 2);
}

#[test]
fn a_filtered_out_case_is_not_stale() {
    let file = DivergenceFile::parse(FILE, Path::new("divergences.toml")).unwrap();
    let series = cells(&[("pass_fail@sw", Status::Pass, &[])]);
    let reference = cells(&[("pass_fail@sw", Status::Fail, &["x"])]);
    let (_, stale) = judge(&series, &reference, &file, &pair());
    assert!(stale.is_empty(), "{stale:?}");
}

#[test]
fn bad_entries_are_refused_naming_the_entry() {
    for (bad, want) in [
        (FILE.replace("0123456789ab (", "abc ("), "upstream"),
        (
            FILE.replace("reason = \"6.1 has no X\"", "reason = \" \""),
            "reason",
        ),
        (
            FILE.replacen("[\"6.1+series\", \"6.12\"]", "[\"6.12\"]", 1),
            "kernels",
        ),
        (FILE.replacen("reason =", "why =", 1), "unknown field"),
    ] {
        let err = DivergenceFile::parse(&bad, Path::new("d.toml")).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(want), "{want}: {text}");
        assert!(text.contains("d.toml"), "{text}");
    }
}

#[test]
fn the_projects_divergence_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../patches/divergences.toml");
    DivergenceFile::load(&path).unwrap();
}

fn sample() -> Matrix {
    let json = r#"{
      "generated": "2026-12-01T21:00:00Z",
      "series": {"name": "guest_memfd", "version": 1, "base": "6.1.176"},
      "reference": "6.12.107",
      "compared": ["6.1+series", "6.12"],
      "lanes": [
        {"id": "series", "label": "6.1.176+guest_memfd v1", "judged": "divergence", "kernel": "6.1.176", "image": null,
         "image_sha256": "aa", "selftests_sha256": "bb", "run_id": "r1", "results_dir": null, "log": "logs/series.log",
         "outcome": "PASSED", "passed": true, "reused": false, "counts": {"pass": 1, "fail": 0, "skip": 1, "no_result": 0}},
        {"id": "reference", "label": "6.12.107 (upstream)", "judged": "divergence", "kernel": "6.12.107+", "image": null,
         "image_sha256": "cc", "selftests_sha256": "bb", "run_id": "r2", "results_dir": null, "log": null,
         "outcome": "FAILED: 1 case(s) failed: a@sw", "passed": false, "reused": true, "counts": {"pass": 0, "fail": 1, "skip": 1, "no_result": 0}}
      ],
      "cases": {
        "a@sw": {"series": {"verdict": "pass", "key": "pass"},
                 "reference": {"verdict": "fail", "key": "fail: x", "diagnostics": ["expected <EINVAL>, got 0"]}},
        "b@default": {"series": {"verdict": "skip", "reason": "KVM_CAP_GUEST_MEMFD is 0", "key": "skip: K"},
                      "reference": {"verdict": "skip", "reason": "KVM_CAP_GUEST_MEMFD is 0", "key": "skip: K"}}
      },
      "divergences": [
        {"case": "a@sw", "series": {"verdict": "pass", "key": "pass"},
         "reference": {"verdict": "fail", "key": "fail: x", "diagnostics": ["expected <EINVAL>, got 0"]}}
      ],
      "stale": []
    }"#;
    serde_json::from_str(json).unwrap()
}

#[test]
fn table_markdown_and_html_show_every_case_and_the_divergence() {
    let m = sample();
    assert_eq!(m.unexplained(), 1);
    let table = m.table();
    assert!(
        table.contains("a@sw") && table.contains("DIVERGES"),
        "{table}"
    );
    assert!(table.contains("6.12.107 (upstream)"));
    let md = m.markdown();
    assert!(md.contains("| `b@default` | skip | skip |  |"), "{md}");
    assert!(md.contains("1 unexplained"));
    assert!(
        md.contains("KVM_CAP_GUEST_MEMFD is 0"),
        "skip reasons are listed: {md}"
    );
    let html = m.html();
    assert!(html.contains("class=\"fail\""));
    assert!(html.contains("class=\"div-no\""));
    assert!(html.contains("&lt;EINVAL&gt;"), "diagnostics are escaped");
    assert!(html.contains("href=\"logs/series.log\""));
    assert!(
        !html.contains("<script src") && !html.contains("<link "),
        "self-contained"
    );
}

#[test]
fn digits_inside_names_are_kept() {
    assert_eq!(
        reason_class("KVM_CAP_USER_MEMORY2 is 0 on a default VM"),
        "KVM_CAP_USER_MEMORY2 is # on a default VM"
    );
}

#[test]
fn the_begin_marker_is_not_a_diagnostic() {
    let c = cell_of(
        &case(
            "a@sw",
            Status::Fail,
            &["begin a@sw", "expected EINVAL, got 0"],
        ),
        &[],
    );
    assert_eq!(c.diagnostics, ["expected EINVAL, got 0"]);
    let c = cell_of(&case("a@sw", Status::Fail, &["begin a@sw"]), &[]);
    assert_eq!(c.key, "fail: ");
}

#[test]
fn the_cover_letter_cites_the_reference_lane_of_the_same_series_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("matrix.json");
    std::fs::write(&path, serde_json::to_string(&sample()).unwrap()).unwrap();
    let line = xtask::results::history::matrix_tested_line(&path, "guest_memfd", 1, "6.1.176")
        .expect("a matrix of v1 on 6.1.176");
    assert!(line.contains("upstream reference 6.12.107+"), "{line}");
    assert!(line.contains("0 passed, 1 failed, 1 skipped"), "{line}");
    assert!(line.contains("1 unexplained, 0 explained"), "{line}");
    assert!(
        xtask::results::history::matrix_tested_line(&path, "guest_memfd", 2, "6.1.176").is_none()
    );
    assert!(xtask::results::history::matrix_tested_line(
        &dir.path().join("none.json"),
        "guest_memfd",
        1,
        "6.1.176"
    )
    .is_none());
}
