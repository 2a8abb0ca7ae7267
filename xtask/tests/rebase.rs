//! `series rebase` and `series bases` on fixture repositories: an old base
//! tagged v6.1.176 with a three-patch series written by `git format-patch`,
//! and new bases tagged v6.1.177 in repositories of their own (as two
//! `tree fetch` imports are), each changed the way one test needs.

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::series::bases;
use xtask::series::model::Series;
use xtask::series::rebase::{self, Outcome, RebaseJob, RebaseRequest, RebaseResult};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
        .env("GIT_AUTHOR_NAME", "Dev One")
        .env("GIT_AUTHOR_EMAIL", "dev@example.org")
        .env("GIT_AUTHOR_DATE", "2026-11-01T10:00:00+00:00")
        .env("GIT_COMMITTER_NAME", "Dev One")
        .env("GIT_COMMITTER_EMAIL", "dev@example.org")
        .env("GIT_COMMITTER_DATE", "2026-11-01T10:00:00+00:00")
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn numbered(prefix: &str, n: usize) -> String {
    (1..=n).map(|i| format!("{prefix} line {i};\n")).collect()
}

/// The base files: two source files of 40 lines each.
fn base_files() -> Vec<(&'static str, String)> {
    vec![
        ("virt/kvm/kvm_main.c", numbered("kvm_main", 40)),
        ("include/linux/kvm_host.h", numbered("kvm_host", 40)),
    ]
}

fn write_tree(dir: &Path, files: &[(&str, String)], version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "master"]);
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", &format!("Linux {version}")]);
    git(dir, &["tag", &format!("v{version}")]);
}

fn replace_line(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the text");
    text.replacen(from, to, 1)
}

struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    old: PathBuf,
    series_dir: PathBuf,
}

/// Old base, and the series: patch 1 edits kvm_main.c line 10, patch 2
/// edits kvm_main.c line 30, patch 3 edits kvm_host.h line 20.
fn fixture() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let old = root.join("linux-6.1.176");
    write_tree(&old, &base_files(), "6.1.176");
    let work = root.join("author");
    git(
        &root,
        &["clone", "-q", old.to_str().unwrap(), work.to_str().unwrap()],
    );
    let edits = [
        (
            "virt/kvm/kvm_main.c",
            "kvm_main line 10;",
            "kvm_main line 10 patched;",
            "KVM: change ten",
        ),
        (
            "virt/kvm/kvm_main.c",
            "kvm_main line 30;",
            "kvm_main line 30 patched;",
            "KVM: change thirty",
        ),
        (
            "include/linux/kvm_host.h",
            "kvm_host line 20;",
            "kvm_host line 20 patched;",
            "KVM: change the header",
        ),
    ];
    for (path, from, to, subject) in edits {
        let p = work.join(path);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            &p,
            replace_line(&text, &format!("{from}\n"), &format!("{to}\n")),
        )
        .unwrap();
        git(
            &work,
            &[
                "commit",
                "-q",
                "-a",
                "-m",
                &format!("{subject}\n\nWhy: a test.\n\nSigned-off-by: Dev One <dev@example.org>"),
            ],
        );
    }
    let series_dir = root.join("patches").join("guest_memfd");
    std::fs::create_dir_all(&series_dir).unwrap();
    git(
        &work,
        &[
            "format-patch",
            "-q",
            "--abbrev=12",
            "-o",
            series_dir.to_str().unwrap(),
            "v6.1.176..HEAD",
        ],
    );
    let tree = git(&old, &["rev-parse", "v6.1.176^{tree}"]);
    std::fs::write(
        series_dir.join("series.toml"),
        format!(
            "name = \"guest_memfd\"\nversion = 1\nchange-id = \"20261125-guest-memfd-6-1-3f9c2a\"\n\
             # the base the series was written on\n[base]\nversion = \"6.1.176\"\ntrees = {{ debian-orig = \"{tree}\" }}\n\n\
             [[changelog]]\nversion = 1\nchanges = [\"Initial backport.\"]\n"
        ),
    )
    .unwrap();
    Fx {
        _tmp: tmp,
        root,
        old,
        series_dir,
    }
}

impl Fx {
    /// A new base v6.1.177 made from the base files by `change`.
    fn new_base(&self, change: impl FnOnce(&mut Vec<(&'static str, String)>)) -> PathBuf {
        let mut files = base_files();
        change(&mut files);
        let dir = self.root.join("linux-6.1.177");
        write_tree(&dir, &files, "6.1.177");
        dir
    }

    fn request(&self, new: &Path) -> RebaseRequest {
        RebaseRequest {
            job: RebaseJob {
                series_dir: self.series_dir.clone(),
                old_tree: self.old.clone(),
                new_tree: new.to_path_buf(),
                to: "6.1.177".into(),
                out: self.root.join("out").join("guest_memfd"),
                range_diff: self.root.join("out").join("guest_memfd-v2.range-diff"),
            },
            worktree: None,
            progress: false,
        }
    }
}

fn edit(files: &mut [(&'static str, String)], path: &str, f: impl FnOnce(&str) -> String) {
    let entry = files.iter_mut().find(|(p, _)| *p == path).unwrap();
    entry.1 = f(&entry.1);
}

/// Refs, HEAD, index and status of a tree, to show they are unchanged.
fn snapshot(tree: &Path) -> (String, String, Vec<u8>, String) {
    (
        git(tree, &["for-each-ref", "--format=%(refname) %(objectname)"]),
        git(tree, &["rev-parse", "HEAD"]),
        std::fs::read(tree.join(".git/index")).unwrap(),
        git(tree, &["status", "--porcelain"]),
    )
}

fn done(result: RebaseResult) -> rebase::Done {
    match result {
        RebaseResult::Done(d) => d,
        RebaseResult::Stopped(s) => panic!("stopped: {}", rebase::stopped_message(&s)),
    }
}

#[test]
fn rebase_onto_a_base_that_only_shifts_lines_reports_offsets_and_writes_v2() {
    let fx = fixture();
    let new = fx.new_base(|files| {
        edit(files, "virt/kvm/kvm_main.c", |t| {
            format!("added line a;\nadded line b;\nadded line c;\n{t}")
        })
    });
    let before_old = snapshot(&fx.old);
    let series_before = std::fs::read_to_string(fx.series_dir.join("series.toml")).unwrap();
    let d = done(rebase::rebase(&fx.request(&new)).unwrap());
    let outcomes: Vec<Outcome> = d.reports.iter().map(|r| r.outcome.clone()).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Offset {
                hunks: 1,
                max_offset: 3
            },
            Outcome::Offset {
                hunks: 1,
                max_offset: 3
            },
            Outcome::AsIs
        ]
    );
    assert_eq!(d.branch, "guest_memfd/v2");
    assert_eq!(
        git(&new, &["rev-list", "--count", "v6.1.177..guest_memfd/v2"]),
        "3"
    );
    // The written series: v2 on 6.1.177 with the new tree, a changelog, and it applies.
    let out = Series::load(&d.out).unwrap();
    assert_eq!(out.toml.version, 2);
    assert_eq!(out.toml.base.version, "6.1.177");
    assert_eq!(
        out.toml.base.trees["debian-orig"],
        git(&new, &["rev-parse", "v6.1.177^{tree}"])
    );
    assert_eq!(
        out.toml.changes_in(2).unwrap().changes,
        vec!["Rebased onto 6.1.177.".to_string()]
    );
    let toml_text = std::fs::read_to_string(d.out.join("series.toml")).unwrap();
    assert!(
        toml_text.contains("# the base the series was written on"),
        "{toml_text}"
    );
    assert_eq!(out.patches.len(), 3);
    let p1 = std::fs::read_to_string(&out.patches[0]).unwrap();
    assert!(
        p1.contains("@@ -10,7 +10,7 @@"),
        "patch 1 re-exported at the new lines:\n{p1}"
    );
    // The range-diff pairs the three patches as equal or changed.
    let rd = std::fs::read_to_string(&d.range_diff).unwrap();
    assert_eq!(
        rd.lines()
            .filter(|l| l.contains(" = ") || l.contains(" ! "))
            .count(),
        3,
        "{rd}"
    );
    // Nothing of the user's changed: the old tree and the source series.
    assert_eq!(snapshot(&fx.old), before_old);
    assert_eq!(
        std::fs::read_to_string(fx.series_dir.join("series.toml")).unwrap(),
        series_before
    );
}

#[test]
fn rebase_written_over_the_series_directory_itself_replaces_it_whole() {
    // The default of `series rebase`: --out is the series directory, so the
    // previous version's files must be read (for the range-diff) before the
    // rebased ones replace them.
    let fx = fixture();
    let new = fx.new_base(|files| {
        edit(files, "virt/kvm/kvm_main.c", |t| {
            format!("added line a;\nadded line b;\n{t}")
        })
    });
    let mut req = fx.request(&new);
    req.job.out = fx.series_dir.clone();
    let d = done(rebase::rebase(&req).unwrap());
    assert_eq!(d.out, fx.series_dir);
    let out = Series::load(&fx.series_dir).unwrap();
    assert_eq!(out.toml.version, 2);
    assert_eq!(out.toml.base.version, "6.1.177");
    let p1 = std::fs::read_to_string(&out.patches[0]).unwrap();
    assert!(p1.contains("@@ -9,7 +9,7 @@"), "{p1}");
    let rd = std::fs::read_to_string(&d.range_diff).unwrap();
    assert_eq!(
        rd.lines()
            .filter(|l| l.contains(" = ") || l.contains(" ! "))
            .count(),
        3,
        "{rd}"
    );
    assert_eq!(
        git(&new, &["rev-list", "--count", "v6.1.177..guest_memfd/v2"]),
        "3"
    );
    // No staging directory is left beside the series.
    let left: Vec<_> = std::fs::read_dir(fx.series_dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["guest_memfd".to_string()]);
}

#[test]
fn rebase_writes_into_the_new_tree_the_objects_only_the_old_tree_had() {
    // The old tree has the series applied (as `apply` leaves it), so the
    // patched header exists there; the new base changes only kvm_main.c, so
    // patch 3's result is that same blob. The new tree must get its own copy.
    let fx = fixture();
    let author = fx.root.join("author");
    git(
        &fx.old,
        &["fetch", "-q", author.to_str().unwrap(), "master:applied"],
    );
    let new = fx.new_base(|files| {
        edit(files, "virt/kvm/kvm_main.c", |t| {
            format!("added line a;\n{t}")
        })
    });
    let d = done(rebase::rebase(&fx.request(&new)).unwrap());
    assert_eq!(d.reports.len(), 3);
    let missing = git(
        &new,
        &[
            "rev-list",
            "--objects",
            "--missing=print",
            "v6.1.177..guest_memfd/v2",
        ],
    );
    assert!(
        !missing.lines().any(|l| l.starts_with('?')),
        "objects missing from the new tree:\n{missing}"
    );
    git(&new, &["fsck", "--no-dangling", "--connectivity-only"]);
}

#[test]
fn rebase_merges_three_way_when_the_context_changed_but_not_the_lines() {
    let fx = fixture();
    // Line 13 (context of patch 1) changed in the new base.
    let new = fx.new_base(|files| {
        edit(files, "virt/kvm/kvm_main.c", |t| {
            replace_line(t, "kvm_main line 13;", "kvm_main line 13 stable fix;")
        })
    });
    let d = done(rebase::rebase(&fx.request(&new)).unwrap());
    assert_eq!(
        d.reports[0].outcome,
        Outcome::ThreeWay {
            files: vec!["virt/kvm/kvm_main.c".into()]
        }
    );
    let text = git(&new, &["show", "guest_memfd/v2:virt/kvm/kvm_main.c"]);
    assert!(
        text.contains(
            "line 10 patched;\nkvm_main line 11;\nkvm_main line 12;\nkvm_main line 13 stable fix;"
        ),
        "{text}"
    );
    let out = Series::load(&d.out).unwrap();
    let changes = &out.toml.changes_in(2).unwrap().changes;
    assert!(
        changes[1].contains("\"KVM: change ten\": merged three-way"),
        "{changes:?}"
    );
}

#[test]
fn rebase_drops_a_patch_already_in_the_new_base() {
    let fx = fixture();
    let new = fx.new_base(|files| {
        edit(files, "virt/kvm/kvm_main.c", |t| {
            replace_line(t, "kvm_main line 30;", "kvm_main line 30 patched;")
        })
    });
    let d = done(rebase::rebase(&fx.request(&new)).unwrap());
    assert!(
        matches!(d.reports[1].outcome, Outcome::AlreadyApplied { .. }),
        "{:?}",
        d.reports
    );
    assert_eq!(d.reports[1].commit, None);
    assert_eq!(
        git(&new, &["rev-list", "--count", "v6.1.177..guest_memfd/v2"]),
        "2"
    );
    let out = Series::load(&d.out).unwrap();
    assert_eq!(out.patches.len(), 2);
    let changes = &out.toml.changes_in(2).unwrap().changes;
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("Dropped \"KVM: change thirty\"")),
        "{changes:?}"
    );
}

/// New base where line 30 (patch 2's line) was changed differently.
fn conflicting(fx: &Fx) -> PathBuf {
    fx.new_base(|files| {
        edit(files, "virt/kvm/kvm_main.c", |t| {
            replace_line(t, "kvm_main line 30;", "kvm_main line 30 upstream;")
        })
    })
}

fn stopped(result: RebaseResult) -> rebase::State {
    match result {
        RebaseResult::Stopped(s) => *s,
        RebaseResult::Done(d) => panic!("expected a conflict, got {:?}", d.reports),
    }
}

#[test]
fn rebase_conflict_stops_on_a_branch_and_worktree_and_abort_removes_them() {
    let fx = fixture();
    let new = conflicting(&fx);
    let before = snapshot(&new);
    let state = stopped(rebase::rebase(&fx.request(&new)).unwrap());
    assert_eq!(state.stopped_at, 1);
    match &state.reports[1].outcome {
        Outcome::Conflict { file, hunk } => {
            assert_eq!(file, "virt/kvm/kvm_main.c");
            assert!(hunk.starts_with("`@@ -27,7 +27,7 @@"), "{hunk}");
        }
        other => panic!("{other:?}"),
    }
    let msg = rebase::stopped_message(&state);
    assert!(
        msg.contains("--continue")
            && msg.contains("--abort")
            && msg.contains("virt/kvm/kvm_main.c")
            && msg.contains("holds the 1 patch before it;"),
        "{msg}"
    );
    // The user's checkout, index, HEAD unchanged; only the conflict branch is new.
    let after = snapshot(&new);
    assert_eq!(
        (&after.1, &after.2, &after.3),
        (&before.1, &before.2, &before.3)
    );
    assert_eq!(
        after
            .0
            .lines()
            .filter(|l| !before.0.contains(*l))
            .map(|l| l.split(' ').next().unwrap())
            .collect::<Vec<_>>(),
        vec!["refs/heads/guest_memfd/v2-rebase"]
    );
    assert_eq!(
        git(
            &new,
            &["rev-list", "--count", "v6.1.177..guest_memfd/v2-rebase"]
        ),
        "1"
    );
    let wt = &state.worktree;
    assert_eq!(
        git(wt, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "guest_memfd/v2-rebase"
    );
    let text = std::fs::read_to_string(wt.join("virt/kvm/kvm_main.c")).unwrap();
    assert!(text.contains("<<<<<<< 6.1.177\nkvm_main line 30 upstream;\n=======\nkvm_main line 30 patched;\n>>>>>>> KVM: change thirty"), "{text}");
    // A second start is refused while this one is in progress.
    let err = rebase::rebase(&fx.request(&new)).unwrap_err();
    assert!(
        format!("{err:#}").contains("already in progress"),
        "{err:#}"
    );

    let msg = rebase::abort(&new).unwrap();
    assert!(msg.contains("aborted"), "{msg}");
    assert!(!wt.exists());
    assert_eq!(snapshot(&new), before);
    assert_eq!(git(&new, &["worktree", "list"]).lines().count(), 1);
    assert!(
        !fx.root.join("out").exists(),
        "nothing written on a conflict"
    );
}

/// Resolves patch 2's conflict in the worktree (both changes to line 30
/// kept) and commits the fix.
fn fix_line_thirty(wt: &Path) {
    let file = wt.join("virt/kvm/kvm_main.c");
    let text = std::fs::read_to_string(&file).unwrap();
    let start = text.find("<<<<<<<").unwrap();
    let end = text[start..].find(">>>>>>> KVM: change thirty\n").unwrap()
        + start
        + ">>>>>>> KVM: change thirty\n".len();
    let fixed = format!(
        "{}kvm_main line 30 upstream, patched;\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&file, fixed).unwrap();
    git(&wt, &["commit", "-q", "-a", "-m", "fix"]);
}

#[test]
fn rebase_continue_after_a_committed_fix_finishes_the_series() {
    let fx = fixture();
    let new = conflicting(&fx);
    let state = stopped(rebase::rebase(&fx.request(&new)).unwrap());
    let wt = state.worktree.clone();
    // --continue before any fix is refused.
    let err = rebase::resume(&new, false).unwrap_err();
    assert!(
        format!("{err:#}").contains("commit your fix") && format!("{err:#}").contains("kvm_main.c"),
        "{err:#}"
    );
    fix_line_thirty(&wt);
    let d = done(rebase::resume(&new, false).unwrap());
    let outcomes: Vec<&Outcome> = d.reports.iter().map(|r| &r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![&Outcome::AsIs, &Outcome::Resolved, &Outcome::AsIs]
    );
    assert!(
        !wt.exists(),
        "the worktree is removed once the rebase is done"
    );
    assert!(git(&new, &["branch", "--list", "guest_memfd/v2-rebase"]).is_empty());
    // The resolved patch keeps its author and message, not the fix commit's.
    let log = git(
        &new,
        &["log", "--format=%an|%s", "v6.1.177..guest_memfd/v2"],
    );
    assert_eq!(
        log,
        "Dev One|KVM: change the header\nDev One|KVM: change thirty\nDev One|KVM: change ten"
    );
    let out = Series::load(&d.out).unwrap();
    let p2 = std::fs::read_to_string(&out.patches[1]).unwrap();
    assert!(
        p2.contains("-kvm_main line 30 upstream;\n+kvm_main line 30 upstream, patched;"),
        "{p2}"
    );
    assert!(out
        .toml
        .changes_in(2)
        .unwrap()
        .changes
        .iter()
        .any(|c| c.contains("resolved by hand")));
}

#[test]
fn rebase_onto_a_base_whose_tarball_is_missing_says_so_and_changes_nothing() {
    let fx = fixture();
    let missing = fx.root.join("linux-6.1.178.tar.xz");
    let err = rebase::fetch_base(
        &format!("tarball:{}", missing.display()),
        "6.1.178",
        Some(fx.root.join("linux-6.1.178")),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("linux 6.1.178 cannot be downloaded") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(!fx.root.join("linux-6.1.178").exists());
    // In the survey it is a row of its own, not a failure of the series.
    let series = Series::load(&fx.series_dir).unwrap();
    let new = conflicting(&fx);
    let rows = vec![
        bases::row("6.1.176", Ok(fx.old.clone()), &series, &fx.old),
        bases::row("6.1.177", Ok(new), &series, &fx.old),
        bases::row(
            "6.1.178",
            Err("not in the package index".into()),
            &series,
            &fx.old,
        ),
    ];
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, vec!["as-is", "conflict", "unavailable"]);
    assert!(
        rows[1].detail.contains("patch 2 (virt/kvm/kvm_main.c"),
        "{}",
        rows[1].detail
    );
    let table = bases::table(&rows);
    assert!(
        table.contains("cannot be downloaded: not in the package index"),
        "{table}"
    );
}

#[test]
fn bases_range_expands_and_bad_ranges_are_refused() {
    assert_eq!(
        bases::expand_range("6.1.170..6.1.172").unwrap(),
        vec!["6.1.170", "6.1.171", "6.1.172"]
    );
    assert_eq!(bases::expand_range("6.1.177").unwrap(), vec!["6.1.177"]);
    for bad in ["6.1.177..6.1.170", "6.1.170..6.12.1", "x..y"] {
        assert!(bases::expand_range(bad).is_err(), "{bad}");
    }
}

/// The fixture as a project with history: v1 (on 6.1.176) committed, then
/// v2 made by `series rebase` onto a 6.1.177 that only shifts lines, plus a
/// patch 4 that edits a line only 6.1.177 has, committed too. Returns the
/// 6.1.177 tree; the series directory holds v2.
fn project_with_two_versions(fx: &Fx) -> PathBuf {
    git(&fx.root, &["init", "-q", "-b", "main"]);
    git(&fx.root, &["add", "patches"]);
    git(&fx.root, &["commit", "-q", "-m", "series v1"]);
    let new = fx.new_base(|files| {
        edit(files, "virt/kvm/kvm_main.c", |t| {
            format!("added line a;\nadded line b;\nadded line c;\n{t}")
        })
    });
    let mut req = fx.request(&new);
    req.job.out = fx.series_dir.clone();
    done(rebase::rebase(&req).unwrap());
    let work = fx.root.join("author-v2");
    git(
        &fx.root,
        &[
            "clone",
            "-q",
            "-b",
            "guest_memfd/v2",
            new.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let file = work.join("virt/kvm/kvm_main.c");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        replace_line(&text, "added line a;\n", "added line a patched;\n"),
    )
    .unwrap();
    git(
        &work,
        &[
            "commit",
            "-q",
            "-a",
            "-m",
            "KVM: change a line of 6.1.177\n\nWhy: a test.\n\nSigned-off-by: Dev One <dev@example.org>",
        ],
    );
    git(
        &work,
        &[
            "format-patch",
            "-q",
            "--abbrev=12",
            "--start-number=4",
            "-o",
            fx.series_dir.to_str().unwrap(),
            "-1",
            "HEAD",
        ],
    );
    git(&fx.root, &["add", "patches"]);
    git(&fx.root, &["commit", "-q", "-m", "series v2"]);
    new
}

/// All files of a directory, to show it is unchanged.
fn dir_contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn bench_case_reads_earlier_versions_from_history_and_picks_the_newest_clean_pair() {
    use xtask::series::rebase_case;
    let fx = fixture();
    let new = project_with_two_versions(&fx);
    let scratch = tempfile::tempdir().unwrap();
    let series_before = dir_contents(&fx.series_dir);
    let versions =
        rebase_case::versions(&fx.root, &fx.series_dir, &scratch.path().join("series")).unwrap();
    let found: Vec<(u32, &str, bool)> = versions
        .iter()
        .map(|v| (v.version, v.base.as_str(), v.commit.is_some()))
        .collect();
    assert_eq!(found, vec![(2, "6.1.177", false), (1, "6.1.176", true)]);
    assert_eq!(
        versions[1].commit.as_deref().unwrap(),
        git(&fx.root, &["rev-parse", "HEAD~1"])
    );
    // v1 is copied out of the history, as committed, and loads.
    let v1 = Series::load(&versions[1].dir).unwrap();
    assert_eq!((v1.toml.version, v1.patches.len()), (1, 3));
    assert!(versions[1].dir.starts_with(scratch.path()));
    let committed = Command::new("git")
        .arg("-C")
        .arg(&fx.root)
        .args([
            "show",
            "HEAD~1:patches/guest_memfd/0001-KVM-change-ten.patch",
        ])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(std::fs::read(&v1.patches[0]).unwrap(), committed);

    let (old, new_c) = (fx.old.clone(), new.clone());
    let fetch = move |v: &str| -> anyhow::Result<PathBuf> {
        match v {
            "6.1.176" => Ok(old.clone()),
            "6.1.177" => Ok(new_c.clone()),
            _ => anyhow::bail!("linux {v} cannot be downloaded"),
        }
    };
    // v2's patch 4 needs a line 6.1.176 lacks, so v1 onto 6.1.177 is the case.
    let case = rebase_case::pick(&versions, None, &fetch, scratch.path()).unwrap();
    assert_eq!((case.series.version, case.to.as_str()), (1, "6.1.177"));
    assert_eq!(
        (case.old.as_path(), case.new.as_path()),
        (fx.old.as_path(), new.as_path())
    );
    assert_eq!(case.passed_over.len(), 1, "{:?}", case.passed_over);
    assert!(
        case.passed_over[0].starts_with("v2 -> 6.1.176: patch 4 (0004-KVM-change-a-line-of-6.1.177.patch) conflicts in virt/kvm/kvm_main.c, hunk `@@"),
        "{:?}",
        case.passed_over
    );

    // --to a conflicting target: refused, naming the patch and a pair that works.
    let suggest = || rebase_case::pick(&versions, None, &fetch, scratch.path()).ok();
    let err =
        rebase_case::exact(&versions[0], "6.1.176", &fetch, scratch.path(), suggest).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("v2 (on 6.1.177, as in the series directory) does not rebase cleanly onto 6.1.176: patch 4")
            && msg.contains("nothing was timed")
            && msg.contains("v1 (on 6.1.176) -> 6.1.177 (`cargo xtask bench rebase --series-version 1 --to 6.1.177`)"),
        "{msg}"
    );
    let err =
        rebase_case::exact(&versions[1], "6.1.176", &fetch, scratch.path(), || None).unwrap_err();
    assert!(
        format!("{err:#}").contains("based on 6.1.176 already"),
        "{err:#}"
    );
    let err =
        rebase_case::exact(&versions[1], "6.1.178", &fetch, scratch.path(), || None).unwrap_err();
    assert!(
        format!("{err:#}").contains("6.1.178 cannot be downloaded"),
        "{err:#}"
    );
    // Only a version the history has; one with no clean target says why.
    let err = rebase_case::pick(&versions, Some(7), &fetch, scratch.path()).unwrap_err();
    assert!(
        format!("{err:#}").contains("has no version 7 (the project's history has v2, v1)"),
        "{err:#}"
    );
    let err = rebase_case::pick(&versions, Some(2), &fetch, scratch.path()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("version 2 of the series rebases cleanly onto the base of another version, so there is no clean rebase to time (v2 -> 6.1.176: patch 4")
            && msg.contains("pass --to VERSION"),
        "{msg}"
    );
    // Surveys ran in scratch copies: the series and the trees are as they were.
    assert_eq!(dir_contents(&fx.series_dir), series_before);
    assert!(git(&new, &["branch", "--list", "guest_memfd/v3*"]).is_empty());
}

fn have_git_replay() -> bool {
    Command::new("git")
        .args(["replay", "-h"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("usage: git replay"))
}

#[test]
fn bench_measures_both_sides_on_the_chosen_pair_and_leaves_the_series_alone() {
    use xtask::series::{rebase_bench, rebase_case};
    if !have_git_replay() {
        eprintln!("skipped: lacks git-replay (git 2.44 or later): the git side times it");
        return;
    }
    let fx = fixture();
    let new = project_with_two_versions(&fx);
    let scratch = tempfile::tempdir().unwrap();
    let series_before = dir_contents(&fx.series_dir);
    let (old_before, new_before) = (snapshot(&fx.old), snapshot(&new));
    let versions =
        rebase_case::versions(&fx.root, &fx.series_dir, &scratch.path().join("series")).unwrap();
    let case = rebase_case::Case {
        series: versions[1].clone(),
        to: "6.1.177".into(),
        old: fx.old.clone(),
        new: new.clone(),
        passed_over: vec!["v2 -> 6.1.176: a note".into()],
    };
    let report = rebase_bench::measure(&case, 2, scratch.path()).unwrap();
    assert!(report.same_tree, "{report:?}");
    assert_eq!(
        (
            report.series_version,
            report.patches,
            report.from.as_str(),
            report.to.as_str()
        ),
        (1, 3, "6.1.176", "6.1.177")
    );
    assert_eq!(report.series_commit, versions[1].commit);
    assert_eq!(report.passed_over, case.passed_over);
    let firsts: Vec<bool> = report.rounds.iter().map(|r| r.xtask_first).collect();
    assert_eq!(firsts, vec![true, false]);
    // The tree both produced is v1 rebased: patch 1's line moved by the three added lines.
    let ours = scratch.path().join("ours-0");
    let text = git(
        &ours,
        &[
            "cat-file",
            "-p",
            &format!("{}:virt/kvm/kvm_main.c", report.tree),
        ],
    );
    assert!(
        text.starts_with("added line a;\n") && text.contains("kvm_main line 10 patched;"),
        "{text}"
    );
    assert!(report
        .rounds
        .iter()
        .all(|r| r.xtask_rebase_s > 0.0 && r.git_rebase_s > 0.0));
    // Nothing written into the series or the imported trees.
    assert_eq!(dir_contents(&fx.series_dir), series_before);
    assert_eq!(
        (snapshot(&fx.old), snapshot(&new)),
        (old_before, new_before)
    );
}

#[test]
fn rebase_continue_that_stops_again_leaves_the_worktree_at_the_fix() {
    // Patches 2 and 3 both conflict; after the fix of patch 2, --continue
    // stops at patch 3 with the worktree on the rebased patches so far,
    // which only the rebase's memory held until it stopped.
    let fx = fixture();
    let new = fx.new_base(|files| {
        edit(files, "virt/kvm/kvm_main.c", |t| {
            replace_line(t, "kvm_main line 30;", "kvm_main line 30 upstream;")
        });
        edit(files, "include/linux/kvm_host.h", |t| {
            replace_line(t, "kvm_host line 20;", "kvm_host line 20 upstream;")
        });
    });
    let state = stopped(rebase::rebase(&fx.request(&new)).unwrap());
    assert_eq!(state.stopped_at, 1);
    let wt = state.worktree.clone();
    fix_line_thirty(&wt);
    let again = stopped(rebase::resume(&new, false).unwrap());
    assert_eq!(again.stopped_at, 2);
    assert_eq!(git(&wt, &["rev-parse", "HEAD"]), again.stop_tip);
    assert!(std::fs::read_to_string(wt.join("virt/kvm/kvm_main.c"))
        .unwrap()
        .contains("kvm_main line 30 upstream, patched;"));
    let header = std::fs::read_to_string(wt.join("include/linux/kvm_host.h")).unwrap();
    assert!(header.contains("<<<<<<< 6.1.177"), "{header}");
    git(&new, &["fsck", "--no-dangling", "--connectivity-only"]);
    rebase::abort(&new).unwrap();
}

#[test]
fn survey_writes_nothing_into_the_tree_it_replays_on() {
    let fx = fixture();
    let new = fx.new_base(|files| {
        edit(files, "virt/kvm/kvm_main.c", |t| {
            format!("added line a;\n{t}")
        })
    });
    let objects = || git(&new, &["count-objects", "-v"]);
    let before = (objects(), snapshot(&new));
    let series = Series::load(&fx.series_dir).unwrap();
    let reports = rebase::survey(&series, &fx.old, &new, "6.1.177").unwrap();
    assert_eq!(reports.len(), 3);
    assert!(reports.iter().all(|r| r.commit.is_some()), "{reports:?}");
    assert_eq!((objects(), snapshot(&new)), before);
}
