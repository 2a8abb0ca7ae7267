//! Which lines are mutated, and the mutants of them: the lines the series
//! adds, net (base..tip, so a line added by one patch and changed by a
//! later one is mutated as the tip has it), in the C files it adds code
//! to, inside function bodies, code only (see [`super::operators`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use git2::{DiffOptions, Oid, Repository};
use serde::Serialize;

use super::model::{Mutant, MutantId, Operator};
use super::operators::{self, Line};

/// Lines of context around the changed line in a mutant's diff.
const CONTEXT: usize = 3;

/// The mutants of one series, and where they came from.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// `<series> v<N>`.
    pub series: String,
    pub base: String,
    /// The series tip the diffs apply to.
    pub tip: String,
    /// The branch the tip is on in the tree.
    pub branch: String,
    /// Per file: net added lines, and how many of them were mutated.
    pub files: Vec<FileLines>,
    pub mutants: Vec<Mutant>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileLines {
    pub file: String,
    pub added: usize,
    pub mutated_lines: usize,
    pub mutants: usize,
}

/// C files whose added code is mutated: `.c` and `.h` sources, not
/// Documentation and not the uAPI headers (definitions, no code).
pub fn is_mutable_path(path: &str) -> bool {
    (path.ends_with(".c") || path.ends_with(".h"))
        && !path.starts_with("Documentation/")
        && !path.contains("/uapi/")
        && !path.starts_with("tools/")
}

/// Apply the series on branch `<series>/v<N>-mutate` (replacing that
/// branch, which only this command writes) and generate its mutants.
pub fn generate(tree: &Path) -> Result<Generated> {
    let series = crate::series::load_series(crate::series::DEFAULT_SERIES)?;
    let branch = format!(
        "{}/v{}-mutate",
        crate::series::DEFAULT_SERIES,
        series.toml.version
    );
    let opts = crate::series::apply::ApplyOptions {
        force: true,
        ..Default::default()
    };
    let applied = crate::series::apply::apply_series(&series, tree, &[], Some(&branch), &opts)
        .context("could not apply the series to generate mutants from")?;
    let Some(tip) = applied.commits.iter().rev().find_map(|c| c.commit.clone()) else {
        bail!("applying the series created no commit: every patch is already in the base");
    };
    let repo = crate::series::apply::open_repo(tree)?;
    let (files, mutants) = generate_between(&repo, &applied.base, &tip)?;
    Ok(Generated {
        series: format!("{} v{}", series.name(), series.toml.version),
        base: applied.base,
        tip,
        branch,
        files,
        mutants,
    })
}

/// Net added lines per file from `base` to `tip` (tip line numbers).
pub fn added_lines(
    repo: &Repository,
    base: &str,
    tip: &str,
) -> Result<BTreeMap<String, BTreeSet<u32>>> {
    let tree_of = |id: &str| -> Result<git2::Tree<'_>> {
        let oid = Oid::from_str(id).with_context(|| format!("{id} is not a commit id"))?;
        Ok(repo
            .find_commit(oid)
            .with_context(|| format!("no commit {id} in the tree"))?
            .tree()?)
    };
    let (old, new) = (tree_of(base)?, tree_of(tip)?);
    let mut opts = DiffOptions::new();
    opts.context_lines(0);
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut opts))?;
    let mut out: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    diff.foreach(
        &mut |_, _| true,
        None,
        None,
        Some(&mut |delta, _hunk, line| {
            if line.origin() == '+' {
                if let (Some(path), Some(n)) = (delta.new_file().path(), line.new_lineno()) {
                    out.entry(path.to_string_lossy().into_owned())
                        .or_default()
                        .insert(n);
                }
            }
            true
        }),
    )?;
    Ok(out)
}

fn generate_between(
    repo: &Repository,
    base: &str,
    tip: &str,
) -> Result<(Vec<FileLines>, Vec<Mutant>)> {
    let added = added_lines(repo, base, tip)?;
    let tip_tree = repo.find_commit(Oid::from_str(tip)?)?.tree()?;
    let mut files = Vec::new();
    let mut mutants = Vec::new();
    for (path, lines) in &added {
        if !is_mutable_path(path) {
            continue;
        }
        let entry = tip_tree
            .get_path(Path::new(path))
            .with_context(|| format!("{path} is not in the series tip"))?;
        let blob = repo.find_blob(entry.id())?;
        let Ok(text) = std::str::from_utf8(blob.content()) else {
            continue;
        };
        let found = mutants_for_file(path, text, lines);
        let mutated_lines: BTreeSet<u32> = found.iter().map(|m| m.id.line).collect();
        files.push(FileLines {
            file: path.clone(),
            added: lines.len(),
            mutated_lines: mutated_lines.len(),
            mutants: found.len(),
        });
        mutants.extend(found);
    }
    Ok((files, mutants))
}

/// The mutants of the `added` lines (1-based) of one file, in line order,
/// then operator order, then occurrence.
pub fn mutants_for_file(path: &str, text: &str, added: &BTreeSet<u32>) -> Vec<Mutant> {
    let lines: Vec<&str> = text.split('\n').collect();
    let info = operators::scan(text);
    let mut out = Vec::new();
    let mut prev_last: Option<String> = None;
    for (i, li) in info.iter().enumerate() {
        let no = i as u32 + 1;
        let toks = operators::tokens(&li.code);
        if added.contains(&no) && li.depth > 0 && li.function.is_some() && !li.preprocessor {
            let original = lines[i].strip_suffix('\r').unwrap_or(lines[i]);
            let line = Line::new(original, &li.code, prev_last.clone());
            let mut nth: BTreeMap<Operator, u32> = BTreeMap::new();
            for (op, mutated) in operators::mutate_line(&line) {
                let n = nth.entry(op).or_insert(0);
                *n += 1;
                out.push(Mutant {
                    id: MutantId {
                        file: path.to_string(),
                        line: no,
                        op,
                        nth: *n,
                    },
                    function: li.function.clone(),
                    original: original.to_string(),
                    diff: unified_diff(path, &lines, i, &mutated),
                    mutated,
                });
            }
        }
        if let Some(t) = toks.last() {
            prev_last = Some(li.code[t.start..t.end].to_string());
        }
    }
    out
}

/// A `git apply`-able diff replacing line `at` (0-based) of `lines`.
fn unified_diff(path: &str, lines: &[&str], at: usize, mutated: &str) -> String {
    // `split('\n')` leaves an empty piece after the final newline.
    let real = if lines.last() == Some(&"") {
        lines.len() - 1
    } else {
        lines.len()
    };
    let from = at.saturating_sub(CONTEXT);
    let to = (at + CONTEXT + 1).min(real);
    let n = to - from;
    let mut d = format!(
        "diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -{},{n} +{},{n} @@\n",
        from + 1,
        from + 1
    );
    for (k, l) in lines.iter().enumerate().take(to).skip(from) {
        if k == at {
            d.push_str(&format!("-{l}\n+{mutated}\n"));
        } else {
            d.push_str(&format!(" {l}\n"));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
/* A comment with if (a < b) in it. */
static int bind(struct gmem *g, unsigned long start, unsigned long end)
{
\tunsigned long i;

\tif (start >= end)
\t\treturn -EINVAL;
\tfor (i = start; i < end; i++)
\t\tfilemap_invalidate_lock(g->mapping);
\treturn 0;
}
";

    fn all_lines(text: &str) -> BTreeSet<u32> {
        (1..=text.lines().count() as u32).collect()
    }

    #[test]
    fn mutants_are_ordered_and_their_ids_are_stable() {
        let a = mutants_for_file("virt/kvm/x.c", SRC, &all_lines(SRC));
        let b = mutants_for_file("virt/kvm/x.c", SRC, &all_lines(SRC));
        assert_eq!(a, b);
        let ids: Vec<String> = a.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "virt/kvm/x.c:6:negate-condition",
                "virt/kvm/x.c:6:swap-relational",
                "virt/kvm/x.c:6:off-by-one",
                "virt/kvm/x.c:6:off-by-one#2",
                "virt/kvm/x.c:7:replace-errno",
                "virt/kvm/x.c:7:replace-errno#2",
                "virt/kvm/x.c:8:swap-relational",
                "virt/kvm/x.c:8:off-by-one",
                "virt/kvm/x.c:8:off-by-one#2",
                "virt/kvm/x.c:9:drop-call",
            ]
        );
        assert!(a.iter().all(|m| m.function.as_deref() == Some("bind")));
        // Sorted as the model orders ids (file, line, op, nth).
        let mut sorted = a.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        sorted.sort();
        assert_eq!(sorted, a.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn only_added_lines_are_mutated() {
        let added: BTreeSet<u32> = [7].into();
        let m = mutants_for_file("x.c", SRC, &added);
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.id.line == 7));
    }

    #[test]
    fn a_line_added_above_a_function_shifts_only_the_lines_below_it() {
        let before = mutants_for_file("x.c", SRC, &all_lines(SRC));
        let shifted = SRC.replacen("static int bind", "static int other;\nstatic int bind", 1);
        let after = mutants_for_file("x.c", &shifted, &all_lines(&shifted));
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(a.id.line, b.id.line + 1);
            assert_eq!((a.id.op, a.id.nth), (b.id.op, b.id.nth));
            assert_eq!(a.mutated, b.mutated);
        }
        // Below the first line: nothing above them changed, ids stay.
        let appended = format!("{SRC}static int tail(void)\n{{\n\treturn -ENOMEM;\n}}\n");
        let more = mutants_for_file("x.c", &appended, &all_lines(&appended));
        let key = |m: &Mutant| (m.id.clone(), m.original.clone(), m.mutated.clone());
        let more: Vec<_> = more.iter().map(key).collect();
        let before: Vec<_> = before.iter().map(key).collect();
        assert_eq!(&more[..before.len()], &before[..]);
    }

    #[test]
    fn diffs_apply_with_git_apply() {
        let dir = std::env::temp_dir().join(format!("gmem61-mutate-diff-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("virt/kvm")).unwrap();
        let mutants = mutants_for_file("virt/kvm/x.c", SRC, &all_lines(SRC));
        // First and last lines too (context clipped at the file's ends).
        let edge = "int f(int a)\n{\n\tif (a < 1)\n\t\treturn -EIO;\n}\n";
        std::fs::write(dir.join("virt/kvm/x.c"), SRC).unwrap();
        std::fs::write(dir.join("e.c"), edge).unwrap();
        let edges = mutants_for_file("e.c", edge, &all_lines(edge));
        assert!(!edges.is_empty());
        for m in mutants.iter().chain(&edges) {
            let patch = dir.join("m.diff");
            std::fs::write(&patch, &m.diff).unwrap();
            let out = std::process::Command::new("git")
                .args(["apply", "--check"])
                .arg(&patch)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}\n{}",
                m.id,
                String::from_utf8_lossy(&out.stderr),
                m.diff
            );
            // And libgit2 parses it as one one-line change.
            let d = git2::Diff::from_buffer(m.diff.as_bytes()).unwrap();
            let stats = d.stats().unwrap();
            assert_eq!((stats.insertions(), stats.deletions()), (1, 1), "{}", m.id);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn paths() {
        assert!(is_mutable_path("virt/kvm/guest_memfd.c"));
        assert!(is_mutable_path("include/linux/kvm_host.h"));
        assert!(!is_mutable_path("include/uapi/linux/kvm.h"));
        assert!(!is_mutable_path("Documentation/virt/kvm/api.rst"));
        assert!(!is_mutable_path("virt/kvm/Kconfig"));
    }
}

/// Generate from the kernel tree in $XTASK_KERNEL_DIR (run by hand:
/// `cargo test -p xtask generate_from_the_series -- --ignored --nocapture`).
#[cfg(test)]
#[test]
#[ignore]
fn generate_from_the_series() {
    let tree = crate::tree::ensure_default_tree().unwrap();
    let g = generate(&tree).unwrap();
    for m in &g.mutants {
        println!(
            "{}  {}  {}  ->  {}",
            m.id,
            m.function.as_deref().unwrap_or("?"),
            m.original.trim(),
            m.mutated.trim()
        );
    }
    for f in &g.files {
        println!("{:?}", f);
    }
    println!("{} mutants, tip {}", g.mutants.len(), g.tip);
    let repo = crate::series::apply::open_repo(&tree).unwrap();
    let tip = repo
        .find_commit(Oid::from_str(&g.tip).unwrap())
        .unwrap()
        .tree()
        .unwrap();
    for m in &g.mutants {
        let diff = git2::Diff::from_buffer(m.diff.as_bytes()).unwrap();
        repo.apply_to_tree(&tip, &diff, None)
            .unwrap_or_else(|e| panic!("{}: {e}", m.id));
    }
    println!("every diff applies to the tip's tree (git2)");
}

/// equivalent.toml's generated entries against the series in
/// $XTASK_KERNEL_DIR (run by hand, as above).
#[cfg(test)]
#[test]
#[ignore]
fn equivalent_entries_match_the_series() {
    let tree = crate::tree::ensure_default_tree().unwrap();
    let g = generate(&tree).unwrap();
    let eq = super::equivalent::load(&super::equivalent::default_path()).unwrap();
    let stale = eq.stale(&g.mutants, &crate::util::patches_dir().join("mutants"));
    assert!(stale.is_empty(), "{stale:#?}");
    let known = super::equivalent::load_survivors(&super::equivalent::survivors_path()).unwrap();
    let stale = known.stale(&g.mutants, &crate::util::patches_dir().join("mutants"));
    assert!(stale.is_empty(), "survivors.toml: {stale:#?}");
    for e in &known.entries {
        assert!(
            !eq.entries.iter().any(|q| q.subject == e.subject),
            "{} is in both equivalent.toml and survivors.toml",
            e.subject
        );
    }
    let listed = g
        .mutants
        .iter()
        .filter(|m| eq.reason_for(m).is_some())
        .count();
    println!("{listed} generated mutants listed as equivalent, none stale");
}
