//! Tests of `apply`, `series export` and `series format` on a fixture git
//! repository built in a temp dir: a few files shaped like kernel sources,
//! one commit tagged v6.1.176, and a three-patch series written by
//! `git format-patch` in a separate clone (so the tree does not already hold
//! the series' objects).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::series::apply::{apply_series, ApplyOptions};
use xtask::series::export::export;
use xtask::series::format::{format_series, FormatRequest};
use xtask::series::model::{resolve_series_dir, Series};

const MAKEFILE: &str = "# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 176\nEXTRAVERSION =\nNAME = Curry Ramen\n\nobj-y += virt/\n";
const KVM_MAIN: &str = r#"// SPDX-License-Identifier: GPL-2.0-only
/*
 * Kernel-based Virtual Machine driver for Linux
 */

#include <linux/kvm_host.h>
#include <linux/module.h>

static int kvm_usage_count;

static long kvm_vm_ioctl_check_extension_generic(struct kvm *kvm, long arg)
{
	switch (arg) {
	case KVM_CAP_USER_MEMORY:
	case KVM_CAP_DESTROY_MEMORY_REGION_WORKS:
		return 1;
	default:
		break;
	}
	return 0;
}

static int kvm_vm_release(struct inode *inode, struct file *filp)
{
	struct kvm *kvm = filp->private_data;

	kvm_put_kvm(kvm);
	return 0;
}

int kvm_init(unsigned vcpu_size, unsigned vcpu_align, struct module *module)
{
	kvm_usage_count = 0;
	return 0;
}
EXPORT_SYMBOL_GPL(kvm_init);
"#;
const KVM_UAPI: &str = r#"/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
#ifndef __LINUX_KVM_H
#define __LINUX_KVM_H

#include <linux/types.h>

#define KVM_API_VERSION 12

#define KVM_CAP_IRQCHIP	  0
#define KVM_CAP_HLT	  1
#define KVM_CAP_USER_MEMORY 3
#define KVM_CAP_DESTROY_MEMORY_REGION_WORKS 21

#endif /* __LINUX_KVM_H */
"#;
const KVM_HOST: &str = "/* SPDX-License-Identifier: GPL-2.0-only */\n#ifndef __KVM_HOST_H\n#define __KVM_HOST_H\n\nstruct kvm {\n\tint users_count;\n};\n\n#endif\n";
const KCONFIG: &str = "# SPDX-License-Identifier: GPL-2.0\n# KVM common configuration items and defaults\n\nconfig HAVE_KVM\n\tbool\n";

/// `git` with no user/system config and a fixed identity and dates.
fn git(dir: &Path, args: &[&str]) -> String {
    git_env(dir, args, &[])
}

fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C");
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "Upstream Maintainer"),
        ("GIT_AUTHOR_EMAIL", "maint@kernel.example"),
        ("GIT_AUTHOR_DATE", "2026-11-01T10:00:00+00:00"),
        ("GIT_COMMITTER_NAME", "Upstream Maintainer"),
        ("GIT_COMMITTER_EMAIL", "maint@kernel.example"),
        ("GIT_COMMITTER_DATE", "2026-11-01T10:00:00+00:00"),
    ] {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Commit everything in `dir` as `author` at `date` (committer = author).
fn commit_as(dir: &Path, author: (&str, &str), date: &str, message: &str) {
    git(dir, &["add", "-A"]);
    git_env(
        dir,
        &["commit", "-q", "-m", message],
        &[
            ("GIT_AUTHOR_NAME", author.0),
            ("GIT_AUTHOR_EMAIL", author.1),
            ("GIT_AUTHOR_DATE", date),
            ("GIT_COMMITTER_NAME", author.0),
            ("GIT_COMMITTER_EMAIL", author.1),
            ("GIT_COMMITTER_DATE", date),
        ],
    );
}

struct Fixture {
    tmp: tempfile::TempDir,
    /// The kernel tree the series is applied to.
    tree: PathBuf,
    /// Clone where the series was written; its HEAD is the series tip.
    author: PathBuf,
    /// patches/ holding the series directory `guest_memfd`.
    patches: PathBuf,
    series_dir: PathBuf,
    base_tree: String,
}

const SEAN_FROM: &str = "Sean Developer <sean@example.org>";
/// 2026-11-25 12:00:00 UTC, for reproducible Message-IDs.
const MESSAGE_ID_TIME: i64 = 1_795_608_000;
const JOERG: (&str, &str) = ("J\u{f6}rg R\u{f6}del", "joro@example.org");
const SEAN: (&str, &str) = ("Sean Developer", "sean@example.org");

impl Fixture {
    /// A tree at v6.1.176 and a three-patch series against it. With
    /// `upstream_first`, the tag's history already holds the first patch as
    /// an upstream commit (different author and date, same change).
    fn new(upstream_first: bool) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("linux");
        std::fs::create_dir_all(&tree).unwrap();
        git(&tree, &["init", "-q", "-b", "master"]);
        write(&tree.join("Makefile"), MAKEFILE);
        write(&tree.join("virt/kvm/kvm_main.c"), KVM_MAIN);
        write(&tree.join("virt/kvm/Kconfig"), KCONFIG);
        write(&tree.join("include/uapi/linux/kvm.h"), KVM_UAPI);
        write(&tree.join("include/linux/kvm_host.h"), KVM_HOST);
        commit_as(
            &tree,
            ("Upstream Maintainer", "maint@kernel.example"),
            "2026-11-01T10:00:00+00:00",
            "Linux 6.1.176",
        );
        let author = tmp.path().join("author");
        git(
            tmp.path(),
            &["clone", "-q", tree.to_str().unwrap(), "author"],
        );
        let base = git(&author, &["rev-parse", "HEAD"]);

        // 1: uAPI numbers, by an author whose name needs RFC 2047.
        let uapi = KVM_UAPI.replace(
            "#define KVM_CAP_DESTROY_MEMORY_REGION_WORKS 21\n",
            "#define KVM_CAP_DESTROY_MEMORY_REGION_WORKS 21\n#define KVM_CAP_USER_MEMORY2 231\n#define KVM_CAP_GUEST_MEMFD 234\n",
        );
        write(&author.join("include/uapi/linux/kvm.h"), &uapi);
        commit_as(
            &author,
            JOERG,
            "2026-11-20T09:15:00+02:00",
            "KVM: Add the guest_memfd capability numbers\n\nReserve the upstream numbers so userspace built against 6.8 headers\nprobes the same values.\n\nSigned-off-by: J\u{f6}rg R\u{f6}del <joro@example.org>",
        );
        // 2: a change to kvm_main.c.
        let main = KVM_MAIN.replace(
            "\tcase KVM_CAP_DESTROY_MEMORY_REGION_WORKS:\n",
            "\tcase KVM_CAP_DESTROY_MEMORY_REGION_WORKS:\n\tcase KVM_CAP_USER_MEMORY2:\n",
        );
        write(&author.join("virt/kvm/kvm_main.c"), &main);
        commit_as(
            &author,
            SEAN,
            "2026-11-21T11:00:00-08:00",
            "KVM: Report KVM_CAP_USER_MEMORY2\n\nSigned-off-by: Sean Developer <sean@example.org>",
        );
        // 3: a new file plus Kconfig.
        write(&author.join("virt/kvm/guest_memfd.c"), "// SPDX-License-Identifier: GPL-2.0\n#include <linux/kvm_host.h>\n\nint kvm_gmem_create(struct kvm *kvm, unsigned long size)\n{\n\treturn -ENOSYS;\n}\n");
        write(
            &author.join("virt/kvm/Kconfig"),
            &format!("{KCONFIG}\nconfig KVM_PRIVATE_MEM\n\tbool\n"),
        );
        commit_as(
            &author,
            SEAN,
            "2026-11-21T11:30:00-08:00",
            "KVM: Add a guest_memfd stub\n\nSigned-off-by: Sean Developer <sean@example.org>",
        );
        let patches = tmp.path().join("patches");
        let series_dir = patches.join("guest_memfd");
        std::fs::create_dir_all(&series_dir).unwrap();
        git(
            &author,
            &[
                "format-patch",
                "-q",
                "--abbrev=12",
                "-o",
                series_dir.to_str().unwrap(),
                &format!("{base}..HEAD"),
            ],
        );

        if upstream_first {
            // The same change as patch 1 landed upstream before the release tag.
            write(&tree.join("include/uapi/linux/kvm.h"), &uapi);
            commit_as(
                &tree,
                ("Stable Backporter", "stable@kernel.example"),
                "2026-11-23T08:00:00+00:00",
                "KVM: Add the guest_memfd capability numbers\n\nUpstream commit 0123456789ab.",
            );
        }
        git(&tree, &["tag", "v6.1.176"]);
        let base_tree = git(&tree, &["rev-parse", "HEAD^{tree}"]);
        write(
            &series_dir.join("series.toml"),
            &format!(
                "name = \"guest_memfd\"\nversion = 1\nchange-id = \"20261125-guest-memfd-6-1-3f9c2a\"\n\
                 subject-prefix = \"RFC PATCH\"\nto = [\"kvm@vger.kernel.org\"]\ncc = [\"linux-kernel@vger.kernel.org\"]\n\n\
                 [base]\nversion = \"6.1.176\"\ntrees = {{ debian-orig = \"{base_tree}\" }}\n\n\
                 [[changelog]]\nversion = 1\nchanges = [\"Initial backport of guest_memfd\"]\n"
            ),
        );
        Fixture {
            tmp,
            tree,
            author,
            patches,
            series_dir,
            base_tree,
        }
    }

    fn series(&self) -> Series {
        Series::load(&self.series_dir).unwrap()
    }

    fn patch(&self, n: usize) -> PathBuf {
        self.series().patches[n - 1].clone()
    }

    fn apply(&self) -> anyhow::Result<xtask::series::Applied> {
        let series = Series::load(&self.series_dir)?;
        apply_series(&series, &self.tree, &[], None, &ApplyOptions::default())
    }

    /// Error text with the temp dir replaced by [TMP].
    fn redact(&self, text: &str) -> String {
        text.replace(self.tmp.path().to_str().unwrap(), "[TMP]")
    }

    fn err(&self, result: anyhow::Result<impl std::fmt::Debug>) -> String {
        match result {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(err) => self.redact(&format!("{err:#}")),
        }
    }

    /// HEAD, branches, index bytes and every work-tree file: what "the
    /// user's tree is untouched" means.
    fn tree_state(&self) -> TreeState {
        let mut files = BTreeMap::new();
        for entry in walkdir::WalkDir::new(&self.tree)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git")
        {
            let entry = entry.unwrap();
            if entry.file_type().is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(&self.tree)
                    .unwrap()
                    .display()
                    .to_string();
                files.insert(rel, std::fs::read(entry.path()).unwrap());
            }
        }
        TreeState {
            head: git(&self.tree, &["symbolic-ref", "HEAD"]),
            head_commit: git(&self.tree, &["rev-parse", "HEAD"]),
            refs: git(
                &self.tree,
                &["for-each-ref", "--format=%(refname) %(objectname)"],
            ),
            index: std::fs::read(self.tree.join(".git/index")).unwrap(),
            files,
        }
    }

    /// The mails `series format` wrote to `dir` (its `*.patch` files).
    fn mail_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut all = Fixture::dir_bytes(dir);
        all.retain(|name, _| name.ends_with(".patch"));
        all
    }

    fn dir_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                out.insert(
                    format!("{}/", entry.file_name().to_string_lossy()),
                    Vec::new(),
                );
                continue;
            }
            out.insert(
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            );
        }
        out
    }
}

#[derive(Debug, PartialEq, Eq)]
struct TreeState {
    head: String,
    head_commit: String,
    refs: String,
    index: Vec<u8>,
    files: BTreeMap<String, Vec<u8>>,
}

fn log(tree: &Path, range: &str) -> String {
    git(
        tree,
        &[
            "log",
            "--reverse",
            "--format=%an <%ae> | %ad | %cn | %cd%n%B---",
            "--date=raw",
            range,
        ],
    )
}

// ---------------------------------------------------------------- apply

#[test]
fn apply_on_the_right_base_creates_the_branch_and_leaves_the_checkout() {
    let fx = Fixture::new(false);
    let before = fx.tree_state();
    let applied = fx.apply().unwrap();
    assert_eq!(applied.branch, "guest_memfd/v1");
    assert_eq!(applied.base, before.head_commit);
    assert!(applied.commits.iter().all(|c| c.commit.is_some()));
    // The checkout is untouched: same HEAD, index and files; one new branch.
    let after = fx.tree_state();
    assert_eq!(after.head, before.head);
    assert_eq!(after.index, before.index);
    assert_eq!(after.files, before.files);
    assert_ne!(after.refs, before.refs);
    // Same result as git am in the author clone: identical trees.
    assert_eq!(
        git(&fx.tree, &["rev-parse", "guest_memfd/v1^{tree}"]),
        git(&fx.author, &["rev-parse", "HEAD^{tree}"])
    );
    insta::assert_snapshot!(xtask::series::applied_table(&applied));
    insta::assert_snapshot!(log(&fx.tree, "v6.1.176..guest_memfd/v1"));
}

#[test]
fn apply_through_the_public_api_with_an_extra_patch() {
    let fx = Fixture::new(false);
    let mutant = fx.tmp.path().join("mutants/skip_invalidate.patch");
    let diff = "diff --git a/virt/kvm/guest_memfd.c b/virt/kvm/guest_memfd.c\nindex 000000000000..111111111111 100644\n--- a/virt/kvm/guest_memfd.c\n+++ b/virt/kvm/guest_memfd.c\n@@ -4,4 +4,4 @@\n int kvm_gmem_create(struct kvm *kvm, unsigned long size)\n {\n-\treturn -ENOSYS;\n+\treturn 0;\n }\n";
    write(&mutant, diff);
    let series = xtask::series::load_series(&fx.series_dir.display().to_string()).unwrap();
    let applied = xtask::series::apply::apply_series(
        &series,
        &fx.tree,
        &[mutant],
        Some("mutant/skip_invalidate"),
        &xtask::series::apply::ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(applied.branch, "mutant/skip_invalidate");
    assert_eq!(applied.commits.len(), 4);
    assert_eq!(applied.commits[3].subject, "mutant: skip_invalidate");
    let content = git(
        &fx.tree,
        &["show", "mutant/skip_invalidate:virt/kvm/guest_memfd.c"],
    );
    assert!(content.contains("return 0;"), "{content}");
}

#[test]
fn apply_refuses_a_wrong_base_naming_expected_and_found() {
    let fx = Fixture::new(false);
    let toml = std::fs::read_to_string(fx.series_dir.join("series.toml")).unwrap();
    std::fs::write(
        fx.series_dir.join("series.toml"),
        toml.replace(&fx.base_tree, "0123456789abcdef0123456789abcdef01234567"),
    )
    .unwrap();
    let before = fx.tree_state();
    let err = fx.err(fx.apply());
    assert_eq!(fx.tree_state(), before);
    insta::assert_snapshot!(err
        .replace(&fx.base_tree, "[FOUND-TREE]")
        .replace(&before.head_commit[..12], "[BASE]"));
}

#[test]
fn apply_uses_head_when_the_version_tag_is_missing() {
    let fx = Fixture::new(false);
    git(&fx.tree, &["tag", "-d", "v6.1.176"]);
    fx.apply().unwrap();
    // And refuses when HEAD moved away from the base.
    git(&fx.tree, &["branch", "-D", "guest_memfd/v1"]);
    write(&fx.tree.join("Makefile"), &MAKEFILE.replace("176", "177"));
    commit_as(&fx.tree, SEAN, "2026-11-24T10:00:00+00:00", "Linux 6.1.177");
    let err = fx.err(fx.apply());
    assert!(
        err.contains("wrong base") && err.contains("but HEAD (commit"),
        "{err}"
    );
}

#[test]
fn apply_refuses_a_dirty_tree() {
    let fx = Fixture::new(false);
    write(
        &fx.tree.join("virt/kvm/kvm_main.c"),
        &format!("{KVM_MAIN}/* local hack */\n"),
    );
    let before = fx.tree_state();
    let err = fx.err(fx.apply());
    assert_eq!(fx.tree_state(), before);
    insta::assert_snapshot!("dirty_worktree", err);
    // A staged change is dirty too.
    git(&fx.tree, &["add", "virt/kvm/kvm_main.c"]);
    let err = fx.err(fx.apply());
    assert!(
        err.contains("uncommitted changes (virt/kvm/kvm_main.c)"),
        "{err}"
    );
}

#[test]
fn apply_fails_atomically_on_a_conflicting_patch() {
    let fx = Fixture::new(false);
    // The tree moved on in a way that conflicts with patch 2's context.
    let p2 = fx.patch(2);
    let text = std::fs::read_to_string(&p2).unwrap();
    std::fs::write(
        &p2,
        text.replace(
            " \tcase KVM_CAP_USER_MEMORY:\n",
            " \tcase KVM_CAP_USER_MEMORY_RENAMED:\n",
        ),
    )
    .unwrap();
    let before = fx.tree_state();
    let err = fx.err(fx.apply());
    let after = fx.tree_state();
    assert_eq!(after.head, before.head, "HEAD changed");
    assert_eq!(after.refs, before.refs, "a branch or ref was left behind");
    assert_eq!(after.index, before.index, "the index changed");
    assert_eq!(after.files, before.files, "the work tree changed");
    assert!(
        err.contains("0002-KVM-Report-KVM_CAP_USER_MEMORY2.patch"),
        "{err}"
    );
    assert!(err.contains("virt/kvm/kvm_main.c"), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn apply_skips_a_patch_already_in_the_base() {
    let fx = Fixture::new(true);
    let applied = fx.apply().unwrap();
    assert_eq!(
        applied.commits[0].commit, None,
        "patch 1 is upstream already"
    );
    assert!(applied.commits[1].commit.is_some() && applied.commits[2].commit.is_some());
    insta::assert_snapshot!(xtask::series::applied_table(&applied));
}

#[test]
fn apply_refuses_an_existing_branch_unless_forced() {
    let fx = Fixture::new(false);
    fx.apply().unwrap();
    let err = fx.err(fx.apply());
    insta::assert_snapshot!(err);
    let series = fx.series();
    let opts = ApplyOptions {
        force: true,
        ..Default::default()
    };
    apply_series(&series, &fx.tree, &[], None, &opts).unwrap();
}

#[test]
fn apply_with_checkout_switches_to_the_new_branch() {
    let fx = Fixture::new(false);
    let opts = ApplyOptions {
        checkout: true,
        ..Default::default()
    };
    apply_series(&fx.series(), &fx.tree, &[], None, &opts).unwrap();
    assert_eq!(
        git(&fx.tree, &["symbolic-ref", "HEAD"]),
        "refs/heads/guest_memfd/v1"
    );
    assert!(fx.tree.join("virt/kvm/guest_memfd.c").is_file());
    assert_eq!(git(&fx.tree, &["status", "--porcelain"]), "");
}

// ---------------------------------------------------------------- export

#[test]
fn apply_then_export_reproduces_the_files_byte_for_byte() {
    let fx = Fixture::new(false);
    let before = Fixture::dir_bytes(&fx.series_dir);
    fx.apply().unwrap();
    let report = export(&fx.series_dir, &fx.tree, None).unwrap();
    let after = Fixture::dir_bytes(&fx.series_dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &before {
        assert!(after[name] == *bytes, "{name} differs after the round trip");
    }
    insta::assert_snapshot!(fx.redact(&report.to_string()));
    // No temporary directory is left next to the series.
    let leftovers: Vec<_> = std::fs::read_dir(&fx.patches)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("guest_memfd")]);
}

#[test]
fn export_of_a_changed_branch_rewrites_only_what_changed() {
    let fx = Fixture::new(false);
    fx.apply().unwrap();
    // Amend the last commit on the branch: reword it.
    git(&fx.tree, &["switch", "-q", "guest_memfd/v1"]);
    git_env(
        &fx.tree,
        &[
            "commit",
            "-q",
            "--amend",
            "-m",
            "KVM: Add a guest_memfd stub file\n\nSigned-off-by: Sean Developer <sean@example.org>",
        ],
        &[
            ("GIT_AUTHOR_NAME", SEAN.0),
            ("GIT_AUTHOR_EMAIL", SEAN.1),
            ("GIT_AUTHOR_DATE", "2026-11-21T11:30:00-08:00"),
        ],
    );
    let read_dir = |dir: &std::path::Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let before = read_dir(&fx.series_dir);
    let report = export(&fx.series_dir, &fx.tree, Some("v6.1.176..guest_memfd/v1")).unwrap();
    insta::assert_snapshot!(fx.redact(&report.to_string()));
    assert!(
        fx.series_dir.join("series.toml").is_file(),
        "series.toml must survive an export"
    );
    // What the report calls unchanged is byte for byte what was there.
    let after = read_dir(&fx.series_dir);
    for name in [
        "series.toml",
        "0001-KVM-Add-the-guest_memfd-capability-numbers.patch",
        "0002-KVM-Report-KVM_CAP_USER_MEMORY2.patch",
    ] {
        assert_eq!(after.get(name), before.get(name), "{name} was rewritten");
    }
    assert!(!after.contains_key("0003-KVM-Add-a-guest_memfd-stub.patch"));
    let new =
        String::from_utf8(after["0003-KVM-Add-a-guest_memfd-stub-file.patch"].clone()).unwrap();
    assert!(
        new.contains("Subject: [PATCH 3/3] KVM: Add a guest_memfd stub file\n"),
        "{new}"
    );
}

#[test]
fn export_refuses_a_deletion_and_leaves_the_series_untouched() {
    let fx = Fixture::new(false);
    fx.apply().unwrap();
    git(&fx.tree, &["switch", "-q", "guest_memfd/v1"]);
    git(&fx.tree, &["rm", "-q", "include/linux/kvm_host.h"]);
    commit_as(
        &fx.tree,
        SEAN,
        "2026-11-22T10:00:00+00:00",
        "KVM: Drop kvm_host.h",
    );
    let before = Fixture::dir_bytes(&fx.series_dir);
    let err = fx.err(export(
        &fx.series_dir,
        &fx.tree,
        Some("v6.1.176..guest_memfd/v1"),
    ));
    assert_eq!(Fixture::dir_bytes(&fx.series_dir), before);
    let leftovers: Vec<_> = std::fs::read_dir(&fx.patches)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
    insta::assert_snapshot!(err);
}

// ---------------------------------------------------------------- format

/// A stand-in for scripts/checkpatch.pl: one WARNING per added line with
/// "ENOSYS", one ERROR per added line with "TODO", in the --terse format.
const FAKE_CHECKPATCH: &str = r#"#!/usr/bin/perl
my $file = $ARGV[-1];
open(my $fh, '<', $file) or die "cannot open $file";
my $n = 0; my $bad = 0;
while (my $line = <$fh>) {
    $n++;
    if ($line =~ /^\+.*ENOSYS/) { print "virt/kvm/guest_memfd.c:$n: WARNING: ENOSYS means 'invalid syscall nr' and nothing else\n"; $bad = 1; }
    if ($line =~ /^\+.*TODO/) { print "virt/kvm/guest_memfd.c:$n: ERROR: TODO left in\n"; $bad = 1; }
}
exit $bad;
"#;

/// Names people by the files a patch touches, like the real script, and
/// also addresses the mails already carry (in other case) to be skipped.
const FAKE_GET_MAINTAINER: &str = r#"#!/usr/bin/perl
my $file = $ARGV[-1];
open(my $fh, '<', $file) or die "cannot open $file";
my %files;
while (my $line = <$fh>) { $files{$1} = 1 if $line =~ m{^\+\+\+ b/(\S+)}; }
print "Paolo Bonzini <PBONZINI\@example.org>\n";
print "Sean C. Developer <sean.gmem\@example.org>\n" if $files{'virt/kvm/guest_memfd.c'};
print "J\x{c3}\x{b6}rg R\x{c3}\x{b6}del <joro.uapi\@example.org>\n" if grep { m{^include/uapi/} } keys %files;
print "kvm\@vger.kernel.org\n";
print "linux-kernel\@vger.kernel.org\n";
"#;

fn redact_mail(text: &str, fx: &Fixture) -> String {
    let version = git(&fx.tree, &["version"])
        .trim_start_matches("git version ")
        .to_string();
    fx.redact(text)
        .lines()
        .map(|l| if l == version { "[GIT-VERSION]" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fixture series as v2 (patch 2 reworded, a changelog entry, a cover
/// letter template) with v1 applied as a branch, formatted into
/// `outgoing/`; returns the fixture, the output directory and the report.
fn format_v2(auto_cc: bool) -> (Fixture, PathBuf, xtask::series::format::FormatReport) {
    let fx = Fixture::new(false);
    write(&fx.tree.join("scripts/checkpatch.pl"), FAKE_CHECKPATCH);
    write(
        &fx.tree.join("scripts/get_maintainer.pl"),
        FAKE_GET_MAINTAINER,
    );
    commit_as(
        &fx.tree,
        ("Upstream Maintainer", "maint@kernel.example"),
        "2026-11-01T10:00:00+00:00",
        "scripts: checkpatch",
    );
    git(&fx.tree, &["tag", "-f", "v6.1.176"]);
    let base_tree = git(&fx.tree, &["rev-parse", "HEAD^{tree}"]);
    // v1 exists as a branch.
    let toml = std::fs::read_to_string(fx.series_dir.join("series.toml"))
        .unwrap()
        .replace(&fx.base_tree, &base_tree);
    std::fs::write(fx.series_dir.join("series.toml"), &toml).unwrap();
    fx.apply().unwrap();
    // v2: reworded patch 2, a changelog entry and a cover letter template.
    let toml = toml.replace("version = 1\nchange-id", "version = 2\nchange-id")
        + "\n[[changelog]]\nversion = 2\nchanges = [\"Report KVM_CAP_USER_MEMORY2 only where it works\", \"Rebase on 6.1.176\"]\n";
    std::fs::write(fx.series_dir.join("series.toml"), toml).unwrap();
    let p2 = fx.patch(2);
    let text = std::fs::read_to_string(&p2).unwrap();
    std::fs::write(
        &p2,
        text.replace(
            "Subject: [PATCH 2/3] KVM: Report KVM_CAP_USER_MEMORY2\n",
            "Subject: [PATCH 2/3] KVM: Report KVM_CAP_USER_MEMORY2 to userspace\n",
        ),
    )
    .unwrap();
    write(
        &fx.series_dir.join("0000-cover-letter.patch"),
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: Sean Developer <sean@example.org>\nDate: Fri, 21 Nov 2026 11:30:00 -0800\nSubject: [PATCH 0/3] KVM: guest_memfd for 6.1 LTS\n\nThis backports guest_memfd (the 6.8 uAPI) to Linux 6.1 LTS.\n\nSean Developer (2):\n  x\n",
    );
    let out = fx.tmp.path().join("outgoing");
    let req = FormatRequest {
        reroll: None,
        to: vec!["Paolo Bonzini <pbonzini@example.org>".into()],
        cc: vec![],
        out: Some(out.clone()),
        compare_to: None,
        checkpatch: true,
        from: Some("Sean Developer <sean@example.org>".into()),
        signoff: false,
        message_id_time: Some(MESSAGE_ID_TIME),
        results_dir: None,
        auto_cc,
    };
    let report = format_series(&fx.series(), &fx.tree, &req).unwrap();
    (fx, out, report)
}

#[test]
fn format_writes_a_v2_series_with_cover_letter_and_range_diff() {
    let (fx, out, report) = format_v2(false);
    let names: Vec<String> = Fixture::dir_bytes(&out).into_keys().collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(
        names.contains(&".series-format".to_string()) && names.contains(&"series.mbx".to_string())
    );
    let cover =
        String::from_utf8(std::fs::read(out.join("v2-0000-cover-letter.patch")).unwrap()).unwrap();
    assert!(cover.contains("Range-diff against v1:"), "{cover}");
    assert!(cover.contains(&format!(
        "base-commit: {}\nchange-id: 20261125-guest-memfd-6-1-3f9c2a\n",
        git(&fx.tree, &["rev-parse", "v6.1.176"])
    )));
    // Headers and the cover letter up to the range-diff (its exact layout
    // belongs to git); dates are redacted.
    let head: String = cover
        .split("Range-diff against v1:")
        .next()
        .unwrap()
        .to_string();
    let redact_date = |t: &str| {
        t.lines()
            .map(|l| {
                if l.starts_with("Date: ") {
                    "Date: [DATE]"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    insta::assert_snapshot!(
        "format_v2_cover_letter",
        redact_date(&redact_mail(&head, &fx))
    );
    let subjects: Vec<String> = Fixture::mail_bytes(&out)
        .into_iter()
        .map(|(name, bytes)| {
            let text = String::from_utf8(bytes).unwrap();
            let headers: Vec<&str> = text
                .lines()
                .take_while(|l| !l.is_empty())
                .filter(|l| {
                    l.starts_with("Subject:")
                        || l.starts_with("To:")
                        || l.starts_with("Cc:")
                        || l.starts_with(' ')
                })
                .collect();
            format!("{name}\n{}", headers.join("\n"))
        })
        .collect();
    insta::assert_snapshot!("format_v2_subjects", subjects.join("\n\n"));
    insta::assert_snapshot!("format_v2_report", redact_mail(&report.to_string(), &fx));
}

/// The To/Cc headers of every mail in `out`, unfolded one address a line.
fn recipients(out: &Path) -> String {
    Fixture::mail_bytes(out)
        .into_iter()
        .map(|(name, bytes)| {
            let text = String::from_utf8(bytes).unwrap();
            let head = text.split("\n\n").next().unwrap().to_string();
            let mut lines = Vec::new();
            let mut keep = false;
            for line in head.lines() {
                if line.starts_with("To:") || line.starts_with("Cc:") {
                    keep = true;
                } else if !line.starts_with([' ', '\t']) {
                    keep = false;
                }
                if keep {
                    lines.push(line.to_string());
                }
            }
            format!("{name}\n{}", lines.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[test]
fn format_auto_cc_adds_whom_get_maintainer_names_once() {
    let (fx, out, report) = format_v2(true);
    insta::assert_snapshot!("format_v2_auto_cc_recipients", recipients(&out));
    let text = redact_mail(&report.to_string(), &fx);
    let section: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("auto-cc"))
        .take(5)
        .collect();
    insta::assert_snapshot!("format_v2_auto_cc_report", section.join("\n"));
}

#[test]
fn format_auto_cc_without_the_script_is_a_clear_error_and_writes_nothing() {
    let fx = Fixture::new(false);
    let out = fx.tmp.path().join("v1");
    let req = FormatRequest {
        out: Some(out.clone()),
        auto_cc: true,
        from: Some(SEAN_FROM.into()),
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        format_series(&fx.series(), &fx.tree, &req).unwrap_err()
    );
    assert!(
        err.contains("--auto-cc needs") && err.contains("scripts/get_maintainer.pl"),
        "{err}"
    );
    assert!(!out.exists(), "{} was written", out.display());
}

/// What `series format` writes must go through `git send-email` as is.
/// Ignored by default because Debian ships send-email separately
/// (git-email); `.ci/run` runs it:
/// `cargo test -p xtask --test series -- --ignored git_send_email`.
#[test]
#[ignore = "needs git send-email"]
fn formatted_series_passes_git_send_email_dry_run() {
    let (fx, out, _) = format_v2(true);
    let output = Command::new("git")
        .current_dir(&fx.tree)
        .args([
            "send-email",
            "--dry-run",
            "--confirm=never",
            "--from=Sean Developer <sean@example.org>",
            // Never used by --dry-run; set so no local MTA is looked for.
            "--smtp-server=/bin/false",
        ])
        // The mails, as the README says: DIR/*.patch (not series.mbx).
        .args(Fixture::mail_bytes(&out).keys().map(|name| out.join(name)))
        .output()
        .expect("running git send-email");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "git send-email --dry-run failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.matches("Result: OK").count(),
        4,
        "{stdout}\n{stderr}"
    );
    // Threaded: the three patches reply to the cover letter.
    let cover_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("a Message-ID for the cover letter");
    assert_eq!(
        stdout.matches(&format!("In-Reply-To: {cover_id}")).count(),
        3,
        "{stdout}"
    );
    for k in 0..=3 {
        assert!(
            stdout.contains(&format!("Subject: [RFC PATCH v2 {k}/3] ")),
            "no [RFC PATCH v2 {k}/3] subject:\n{stdout}"
        );
    }
    // Every mail goes to the list and to the --to address.
    let to_both = stdout
        .lines()
        .filter(|l| {
            l.starts_with("Sendmail: ")
                && l.contains(" kvm@vger.kernel.org ")
                && l.contains(" pbonzini@example.org ")
        })
        .count();
    assert_eq!(to_both, 4, "{stdout}");
    // The --auto-cc additions are read by send-email too: the cover letter
    // and the patch that touches each path.
    for who in ["sean.gmem@example.org", "joro.uapi@example.org"] {
        let mails = stdout
            .lines()
            .filter(|l| l.starts_with("Sendmail: ") && l.contains(&format!(" {who}")))
            .count();
        assert_eq!(mails, 2, "{who} in Sendmail lines:\n{stdout}");
    }
}

#[test]
fn format_without_checkpatch_script_reports_a_skip() {
    let fx = Fixture::new(false);
    let out = fx.tmp.path().join("v1");
    let req = FormatRequest {
        out: Some(out.clone()),
        checkpatch: true,
        from: Some(SEAN_FROM.into()),
        ..Default::default()
    };
    let report = format_series(&fx.series(), &fx.tree, &req).unwrap();
    let text = report.to_string();
    assert!(
        text.contains("checkpatch: SKIP:") && text.contains("scripts/checkpatch.pl not found"),
        "{text}"
    );
    let names: Vec<String> = Fixture::dir_bytes(&out).into_keys().collect();
    insta::assert_snapshot!(names.join("\n"));
    let patch1 = String::from_utf8(
        std::fs::read(out.join("0001-KVM-Add-the-guest_memfd-capability-numbers.patch")).unwrap(),
    )
    .unwrap();
    assert!(
        patch1.contains("Subject: [RFC PATCH 1/3] KVM: Add the guest_memfd capability numbers\n"),
        "{patch1}"
    );
    // Sent by Sean; Jörg stays the author in an in-body From: line.
    assert!(
        patch1.contains("\nFrom: Sean Developer <sean@example.org>\n"),
        "{patch1}"
    );
    assert!(
        patch1.contains(
            "\n\nFrom: J\u{f6}rg R\u{f6}del <joro@example.org>\n\nReserve the upstream numbers"
        ),
        "{patch1}"
    );
}

// ---------------------------------------------------------------- bad input

/// Apply must fail with the given message and leave the tree untouched.
fn assert_refused(fx: &Fixture) -> String {
    let before = fx.tree_state();
    let err = match Series::load(&fx.series_dir) {
        Ok(series) => fx.err(apply_series(
            &series,
            &fx.tree,
            &[],
            None,
            &ApplyOptions::default(),
        )),
        Err(err) => fx.redact(&format!("{err:#}")),
    };
    assert_eq!(fx.tree_state(), before, "the tree changed after: {err}");
    err
}

#[test]
fn bad_input_non_patch_file_in_the_series_dir() {
    let fx = Fixture::new(false);
    write(&fx.series_dir.join("NOTES.txt"), "remember to rebase\n");
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_gap_in_the_numbering() {
    let fx = Fixture::new(false);
    let p2 = fx.patch(2);
    std::fs::rename(&p2, fx.series_dir.join("0004-moved.patch")).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_truncated_patch() {
    let fx = Fixture::new(false);
    let p2 = fx.patch(2);
    let text = std::fs::read_to_string(&p2).unwrap();
    let cut = text.find("+\tcase KVM_CAP_USER_MEMORY2:").unwrap();
    std::fs::write(&p2, &text[..cut]).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_patch_cut_before_the_diff() {
    let fx = Fixture::new(false);
    let p1 = fx.patch(1);
    let text = std::fs::read_to_string(&p1).unwrap();
    let cut = text.find("diff --git").unwrap();
    std::fs::write(&p1, &text[..cut]).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_crlf_line_endings() {
    let fx = Fixture::new(false);
    let p1 = fx.patch(1);
    let text = std::fs::read_to_string(&p1).unwrap();
    std::fs::write(&p1, text.replace('\n', "\r\n")).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

/// Add a fourth patch made by `git format-patch` from a commit in the author clone.
fn add_patch_from(fx: &Fixture, change: impl FnOnce(&Path), message: &str, extra: &[&str]) {
    change(&fx.author);
    commit_as(&fx.author, SEAN, "2026-11-22T12:00:00+00:00", message);
    let mut args = vec![
        "format-patch",
        "-q",
        "--abbrev=12",
        "--start-number=4",
        "-o",
    ];
    let dir = fx.series_dir.to_str().unwrap().to_string();
    args.push(&dir);
    args.extend_from_slice(extra);
    args.push("-1");
    git(&fx.author, &args);
}

#[test]
fn bad_input_binary_diff() {
    let fx = Fixture::new(false);
    add_patch_from(
        &fx,
        |dir| std::fs::write(dir.join("virt/kvm/firmware.bin"), [0u8, 1, 2, 255, 0, 7]).unwrap(),
        "KVM: Add a firmware blob",
        &["--binary"],
    );
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_rename() {
    let fx = Fixture::new(false);
    add_patch_from(
        &fx,
        |dir| git(dir, &["mv", "virt/kvm/guest_memfd.c", "virt/kvm/gmem.c"]).truncate(0),
        "KVM: Rename guest_memfd.c",
        &["-M"],
    );
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_deletion() {
    let fx = Fixture::new(false);
    add_patch_from(
        &fx,
        |dir| git(dir, &["rm", "-q", "include/linux/kvm_host.h"]).truncate(0),
        "KVM: Remove kvm_host.h",
        &[],
    );
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_missing_series_toml() {
    let fx = Fixture::new(false);
    std::fs::remove_file(fx.series_dir.join("series.toml")).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_malformed_series_toml() {
    let fx = Fixture::new(false);
    let path = fx.series_dir.join("series.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("version = 1\nchange-id", "version = \"one\nchange-id"),
    )
    .unwrap();
    insta::assert_snapshot!("malformed_syntax", assert_refused(&fx));
    std::fs::write(
        &path,
        text.replace("version = 1\nchange-id", "version = 1\nchangeid"),
    )
    .unwrap();
    insta::assert_snapshot!("malformed_unknown_field", assert_refused(&fx));
    std::fs::write(
        &path,
        text.replace("name = \"guest_memfd\"", "name = \"gmem\""),
    )
    .unwrap();
    insta::assert_snapshot!("malformed_name_mismatch", assert_refused(&fx));
}

#[test]
fn bad_input_unknown_series_name_lists_the_known_ones() {
    let fx = Fixture::new(false);
    std::fs::create_dir_all(fx.patches.join("mutants")).unwrap();
    let err = fx.err(resolve_series_dir("guest_memfd_v2", &fx.patches));
    insta::assert_snapshot!(err);
}

#[test]
fn bad_input_tree_is_not_a_git_repository() {
    let fx = Fixture::new(false);
    let plain = fx.tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let err = fx.err(apply_series(
        &fx.series(),
        &plain,
        &[],
        None,
        &ApplyOptions::default(),
    ));
    insta::assert_snapshot!("not_a_repo", err);
    let err = fx.err(apply_series(
        &fx.series(),
        &fx.tmp.path().join("nowhere"),
        &[],
        None,
        &ApplyOptions::default(),
    ));
    insta::assert_snapshot!("missing_tree", err);
}

#[test]
fn bad_input_mail_without_headers() {
    let fx = Fixture::new(false);
    write(
        &fx.series_dir.join("0004-notes.patch"),
        "Just some notes, not a patch.\n",
    );
    insta::assert_snapshot!(assert_refused(&fx));
}

// ------------------------------------------- format: output, identity, threads

const PLACEHOLDER: &str = "Seed maintainers <seed@example.invalid>";
const ANN: &str = "Ann Sender <ann@example.org>";

impl Fixture {
    /// Patch 3 authored and signed off by the placeholder identity that
    /// series.toml declares (as the real series is).
    fn with_placeholder(self) -> Fixture {
        let p3 = self.patch(3);
        let text = std::fs::read_to_string(&p3).unwrap();
        let text = text
            .replace(
                "From: Sean Developer <sean@example.org>",
                &format!("From: {PLACEHOLDER}"),
            )
            .replace(
                "Signed-off-by: Sean Developer <sean@example.org>",
                &format!("Signed-off-by: {PLACEHOLDER}"),
            );
        std::fs::write(&p3, text).unwrap();
        let toml_path = self.series_dir.join("series.toml");
        let toml = std::fs::read_to_string(&toml_path).unwrap().replace(
            "cc = [\"linux-kernel@vger.kernel.org\"]\n",
            &format!(
                "cc = [\"linux-kernel@vger.kernel.org\"]\nplaceholder-author = \"{PLACEHOLDER}\"\n"
            ),
        );
        std::fs::write(&toml_path, toml).unwrap();
        self
    }

    fn format(
        &self,
        out: &Path,
        tweak: impl FnOnce(&mut FormatRequest),
    ) -> anyhow::Result<xtask::series::format::FormatReport> {
        let mut req = FormatRequest {
            out: Some(out.to_path_buf()),
            from: Some(ANN.into()),
            message_id_time: Some(MESSAGE_ID_TIME),
            ..Default::default()
        };
        tweak(&mut req);
        format_series(&self.series(), &self.tree, &req)
    }

    /// Every file below `dir` (relative path -> bytes), `.git` included.
    fn all_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for entry in walkdir::WalkDir::new(dir) {
            let entry = entry.unwrap();
            if entry.file_type().is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .display()
                    .to_string();
                out.insert(rel, std::fs::read(entry.path()).unwrap());
            }
        }
        out
    }
}

/// The headers of a mail, one per line (folded lines joined).
fn mail_header(text: &str, name: &str) -> Option<String> {
    let head = text.split("\n\n").next().unwrap();
    let mut found: Option<String> = None;
    for line in head.lines() {
        if let Some(f) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                f.push_str(line);
                continue;
            }
            break;
        }
        if let Some((key, value)) = line.split_once(": ") {
            if key.eq_ignore_ascii_case(name) {
                found = Some(value.to_string());
            }
        }
    }
    found
}

#[test]
fn format_refuses_an_existing_regular_file_and_leaves_it_in_place() {
    let fx = Fixture::new(false);
    let file = fx.tmp.path().join("mails");
    write(&file, "my notes\n");
    let err = fx.err(fx.format(&file, |_| {}));
    assert!(
        err.contains("is an existing file, not a directory"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "my notes\n");
    let names: Vec<String> = std::fs::read_dir(fx.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "hidden files left behind: {names:?}");
    insta::assert_snapshot!(err);
}

#[test]
fn format_refuses_a_git_work_tree_and_touches_nothing_in_it() {
    let fx = Fixture::new(false);
    // The kernel tree itself, with uncommitted work.
    write(&fx.tree.join("virt/kvm/wip.c"), "/* uncommitted */\n");
    let before = Fixture::all_files(&fx.tree);
    let err = fx.err(fx.format(&fx.tree, |_| {}));
    assert!(err.contains("is a git repository"), "{err}");
    assert_eq!(Fixture::all_files(&fx.tree), before);
    insta::assert_snapshot!(err);
    // A bare repository too.
    let bare = fx.tmp.path().join("bare.git");
    git(
        fx.tmp.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let err = fx.err(fx.format(&bare, |_| {}));
    assert!(err.contains("is a git repository"), "{err}");
}

#[test]
fn format_refuses_a_non_empty_directory_it_did_not_write() {
    let fx = Fixture::new(false);
    let out = fx.tmp.path().join("outgoing");
    write(&out.join("notes.txt"), "keep me\n");
    write(&out.join("sub/keep.c"), "int keep;\n");
    let before = Fixture::all_files(&out);
    let err = fx.err(fx.format(&out, |_| {}));
    assert_eq!(Fixture::all_files(&out), before);
    insta::assert_snapshot!(err);
}

#[test]
fn format_into_its_own_directory_replaces_only_its_own_files() {
    let fx = Fixture::new(false);
    let out = fx.tmp.path().join("outgoing");
    // An empty directory is fine.
    std::fs::create_dir_all(&out).unwrap();
    fx.format(&out, |_| {}).unwrap();
    let first: Vec<String> = Fixture::mail_bytes(&out).into_keys().collect();
    assert_eq!(first.len(), 4, "{first:?}");
    let marker = std::fs::read_to_string(out.join(".series-format")).unwrap();
    for name in first.iter().chain([&"series.mbx".to_string()]) {
        assert!(
            marker.lines().any(|l| l == name),
            "{name} not in the marker:\n{marker}"
        );
    }
    // The user adds files of their own; a v2 run replaces the v1 mails.
    write(&out.join("notes.txt"), "keep me\n");
    write(&out.join("sub/keep.c"), "int keep;\n");
    fx.format(&out, |r| r.reroll = Some(2)).unwrap();
    let names: Vec<String> = Fixture::dir_bytes(&out).into_keys().collect();
    insta::assert_snapshot!(names.join("\n"));
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "keep me\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("sub/keep.c")).unwrap(),
        "int keep;\n"
    );
    // No staging directory is left, in the output or next to it.
    let hidden: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .chain(std::fs::read_dir(fx.tmp.path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".series-format")
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    // A file of the user's that has the name of a mail is never replaced.
    std::fs::remove_file(out.join("v2-0001-KVM-Add-the-guest_memfd-capability-numbers.patch"))
        .unwrap();
    write(
        &out.join("0001-KVM-Add-the-guest_memfd-capability-numbers.patch"),
        "mine\n",
    );
    let before = Fixture::all_files(&out);
    let err = fx.err(fx.format(&out, |_| {}));
    assert!(
        err.contains("did not write it") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(Fixture::all_files(&out), before);
}

#[test]
fn format_out_dot_writes_into_the_current_directory() {
    let fx = Fixture::new(false);
    let cwd = fx.tmp.path().join("here");
    std::fs::create_dir_all(&cwd).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(&cwd)
            .args(["series", "format", "--no-checkpatch", "--series"])
            .arg(&fx.series_dir)
            .arg("--tree")
            .arg(&fx.tree)
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&["--out", ".", "--from", ANN]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(Fixture::mail_bytes(&cwd).len(), 4);
    assert!(cwd.join("series.mbx").is_file());
    // And again: the directory is its own now.
    let output = run(&["--out", ".", "--from", ANN]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn format_without_a_sender_identity_refuses_before_writing() {
    let fx = Fixture::new(false).with_placeholder();
    let out = fx.tmp.path().join("outgoing");
    let err = fx.err(fx.format(&out, |r| r.from = None));
    assert!(err.contains("pass --from"), "{err}");
    let err = fx.err(fx.format(&out, |r| r.from = Some(PLACEHOLDER.into())));
    assert!(err.contains("is the placeholder identity"), "{err}");
    assert!(!out.exists());
    // Through the CLI, with no git identity anywhere.
    let home = fx.tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["series", "format", "--no-checkpatch", "--series"])
        .arg(&fx.series_dir)
        .arg("--tree")
        .arg(&fx.tree)
        .arg("--out")
        .arg(&out)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", &home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    insta::assert_snapshot!("no_sender_identity", stderr.trim());
    assert!(!out.exists());
    // git config of the tree names the sender.
    git(&fx.tree, &["config", "user.name", "Tree Owner"]);
    git(&fx.tree, &["config", "user.email", "owner@example.org"]);
    let found = xtask::series::identity::from_git_config(&[&fx.tree]).unwrap();
    assert_eq!(found.to_string(), "Tree Owner <owner@example.org>");
}

#[test]
fn format_makes_the_sender_the_author_of_placeholder_patches() {
    let fx = Fixture::new(false).with_placeholder();
    let out = fx.tmp.path().join("outgoing");
    fx.format(&out, |_| {}).unwrap();
    let mails = Fixture::mail_bytes(&out);
    let text = |prefix: &str| {
        let (_, bytes) = mails.iter().find(|(n, _)| n.starts_with(prefix)).unwrap();
        String::from_utf8(bytes.clone()).unwrap()
    };
    // Every mail is from the sender.
    for (name, bytes) in &mails {
        let mail = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(mail_header(&mail, "From").as_deref(), Some(ANN), "{name}");
    }
    // The placeholder's patch: the sender is its author and signs it off.
    let p3 = text("0003-");
    let body = p3.split("\n\n").nth(1).unwrap();
    assert!(!body.starts_with("From: "), "an in-body From: in\n{p3}");
    assert!(
        p3.contains(&format!("\nSigned-off-by: {ANN}\n---\n")),
        "{p3}"
    );
    // Real authors stay, in an in-body From: line.
    let p2 = text("0002-");
    assert!(
        p2.contains("\n\nFrom: Sean Developer <sean@example.org>\n\n"),
        "{p2}"
    );
    assert!(
        p2.contains("\nSigned-off-by: Sean Developer <sean@example.org>\n---\n"),
        "{p2}"
    );
    // The shortlog names the sender for patch 3.
    let cover = text("0000-");
    assert!(cover.contains("Ann Sender (1):"), "{cover}");
    for (name, bytes) in Fixture::dir_bytes(&out) {
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(
            !text.contains("seed@example.invalid") && !text.contains("seed maintainers"),
            "{name} names the placeholder"
        );
    }
    // git am of the mails: patch 3 is the sender's, 2 is Sean's.
    let check = fx.tmp.path().join("check");
    git(
        fx.tmp.path(),
        &["clone", "-q", fx.tree.to_str().unwrap(), "check"],
    );
    let patches: Vec<String> = mails
        .keys()
        .filter(|n| !n.starts_with("0000-"))
        .map(|n| out.join(n).display().to_string())
        .collect();
    let mut args = vec!["am", "-q"];
    args.extend(patches.iter().map(String::as_str));
    git(&check, &args);
    insta::assert_snapshot!(git(
        &check,
        &[
            "log",
            "--reverse",
            "--format=%an <%ae>%n%b--",
            "origin/master..HEAD"
        ]
    ));
}

#[test]
fn format_signoff_adds_the_senders_signoff_to_every_patch() {
    let fx = Fixture::new(false).with_placeholder();
    let out = fx.tmp.path().join("outgoing");
    fx.format(&out, |r| r.signoff = true).unwrap();
    for (name, bytes) in Fixture::mail_bytes(&out) {
        if name.starts_with("0000-") {
            continue;
        }
        let text = String::from_utf8(bytes).unwrap();
        let message = text.split("\n---\n").next().unwrap();
        assert_eq!(
            message.matches(&format!("Signed-off-by: {ANN}")).count(),
            1,
            "{name}:\n{message}"
        );
        assert!(
            message.ends_with(&format!("Signed-off-by: {ANN}")),
            "{name}:\n{message}"
        );
    }
}

#[test]
fn format_refuses_a_mail_that_would_still_name_the_placeholder() {
    let fx = Fixture::new(false).with_placeholder();
    let p2 = fx.patch(2);
    let text = std::fs::read_to_string(&p2).unwrap().replace(
        "Signed-off-by: Sean Developer <sean@example.org>",
        &format!("Reviewed-by: {PLACEHOLDER}\nSigned-off-by: Sean Developer <sean@example.org>"),
    );
    std::fs::write(&p2, text).unwrap();
    let out = fx.tmp.path().join("outgoing");
    let err = fx.err(fx.format(&out, |_| {}));
    assert!(!out.exists(), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn format_threads_the_patches_to_the_cover_letter() {
    let fx = Fixture::new(false);
    let v1 = fx.tmp.path().join("v1");
    let v2 = fx.tmp.path().join("v2");
    let r1 = fx.format(&v1, |_| {}).unwrap();
    let r2 = fx.format(&v2, |r| r.reroll = Some(2)).unwrap();
    let ids = |out: &Path| -> Vec<(String, Option<String>, Option<String>)> {
        Fixture::mail_bytes(out)
            .into_values()
            .map(|b| {
                let text = String::from_utf8(b).unwrap();
                (
                    mail_header(&text, "Message-ID").unwrap(),
                    mail_header(&text, "In-Reply-To"),
                    mail_header(&text, "References"),
                )
            })
            .collect()
    };
    let t1 = ids(&v1);
    let cover = &t1[0].0;
    assert_eq!(t1[0].1, None);
    for (id, reply, refs) in &t1[1..] {
        assert_ne!(id, cover);
        assert_eq!(reply.as_ref(), Some(cover));
        assert_eq!(refs.as_ref(), Some(cover));
    }
    let mut all: Vec<&String> = t1.iter().map(|t| &t.0).collect();
    let t2 = ids(&v2);
    all.extend(t2.iter().map(|t| &t.0));
    let distinct: std::collections::BTreeSet<&&String> = all.iter().collect();
    assert_eq!(distinct.len(), 8, "ids repeat across versions: {all:?}");
    assert_eq!(
        r1.message_ids
            .iter()
            .map(|i| format!("<{i}>"))
            .collect::<Vec<_>>(),
        t1.iter().map(|t| t.0.clone()).collect::<Vec<_>>()
    );
    insta::assert_snapshot!(r2.message_ids.join("\n"));
    // series.mbx holds every mail, in order, and nothing else.
    let mbx = std::fs::read_to_string(v2.join("series.mbx")).unwrap();
    let mails: Vec<String> = Fixture::mail_bytes(&v2)
        .into_values()
        .map(|b| String::from_utf8(b).unwrap())
        .collect();
    let mut joined = String::new();
    for m in &mails {
        joined.push_str(m);
        if !joined.ends_with("\n\n") {
            joined.push('\n');
        }
    }
    assert_eq!(mbx, joined);
}

// ------------------------------------------------------------------ b4

/// `b4` with no user config, offline, its cache in `cache`.
fn b4(dir: &Path, cache: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("b4")
        .current_dir(dir)
        .arg("--offline-mode")
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("XDG_CACHE_HOME", cache)
        .env("XDG_DATA_HOME", cache)
        .env("GIT_COMMITTER_NAME", "b4 Check")
        .env("GIT_COMMITTER_EMAIL", "check@example.org")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run b4 ({err}); install it: python3 -m pip install --break-system-packages b4")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// What a b4 round trip checks a formatted series against.
struct Expected<'a> {
    /// How b4 prints the subject prefix, up to the ` k/M]`: `[PATCH v2`,
    /// `[PATCH RFC v2` (b4 moves RFC after PATCH).
    prefix: &'a str,
    subjects: Vec<String>,
    version: u32,
    base: String,
    tip_tree: String,
}

/// `b4 am -m`, `git am` of its output, `b4 shazam -m` and `b4 shazam -H -m`
/// of `out/series.mbx` in `repo`, a clean checkout of the base (left on a
/// branch per step). Returns what b4 printed.
fn b4_round_trip(repo: &Path, out: &Path, want: &Expected<'_>) -> String {
    let mbx = out.join("series.mbx");
    let mbx = mbx.to_str().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let amdir = scratch.path().join("am");
    let cache = scratch.path().join("cache");
    let run_git = |args: &[&str]| git_env(repo, args, &[("GIT_COMMITTER_NAME", "b4 Check")]);
    let mut printed = String::new();

    let (ok, text) = b4(
        repo,
        &cache,
        &["am", "-m", mbx, "-o", amdir.to_str().unwrap()],
    );
    printed.push_str(&format!("$ b4 am -m series.mbx\n{text}\n"));
    assert!(ok, "b4 am failed:\n{text}");
    let total = want.subjects.len();
    assert!(text.contains(&format!("Total patches: {total}")), "{text}");
    for (k, subject) in want.subjects.iter().enumerate() {
        let line = format!("{} {}/{total}] {subject}", want.prefix, k + 1);
        assert!(
            text.contains(&line),
            "b4 am does not list {line:?}:\n{text}"
        );
    }
    let am_mbx: Vec<PathBuf> = std::fs::read_dir(&amdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mbx"))
        .collect();
    assert_eq!(am_mbx.len(), 1, "{am_mbx:?}");
    let am_name = am_mbx[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    if want.version > 1 {
        assert!(
            am_name.starts_with(&format!("v{}_", want.version)),
            "{am_name}"
        );
    } else {
        assert!(!am_name.starts_with('v'), "{am_name}");
    }
    let cover = std::fs::read_to_string(am_mbx[0].with_extension("cover")).unwrap();
    assert!(
        cover.contains(&format!("base-commit: {}", want.base)),
        "{cover}"
    );

    // git am of b4's output on a clean checkout of the base.
    run_git(&["checkout", "-q", "-b", "check-b4-am", &want.base]);
    run_git(&["am", "-q", am_mbx[0].to_str().unwrap()]);
    assert_eq!(
        run_git(&["rev-parse", "HEAD^{tree}"]),
        want.tip_tree,
        "git am of b4 am's output"
    );
    assert_eq!(
        run_git(&["rev-list", "--count", &format!("{}..HEAD", want.base)]),
        total.to_string()
    );

    // b4 shazam: applied to the current HEAD (the base).
    run_git(&["checkout", "-q", "-b", "check-b4-shazam", &want.base]);
    let (ok, text) = b4(repo, &cache, &["shazam", "-m", mbx]);
    printed.push_str(&format!("$ b4 shazam -m series.mbx\n{text}\n"));
    assert!(ok, "b4 shazam failed:\n{text}");
    assert_eq!(
        run_git(&["rev-parse", "HEAD^{tree}"]),
        want.tip_tree,
        "b4 shazam"
    );

    // b4 shazam -H: b4 finds the base itself (base-commit:) and applies
    // the series there, into FETCH_HEAD.
    let (ok, text) = b4(repo, &cache, &["shazam", "-H", "-m", mbx]);
    printed.push_str(&format!("$ b4 shazam -H -m series.mbx\n{text}\n"));
    assert!(ok, "b4 shazam -H failed:\n{text}");
    assert!(
        text.contains(&format!("Base: {}", want.base)),
        "b4 did not use the base-commit:\n{text}"
    );
    assert_eq!(
        run_git(&["rev-parse", "FETCH_HEAD^{tree}"]),
        want.tip_tree,
        "b4 shazam -H"
    );
    printed
}

/// The formatted fixture series, `--reroll 2`, through b4. Ignored by
/// default (needs b4 from PyPI); `.ci/run` installs b4 and runs it:
/// `cargo test -p xtask --test series -- --ignored b4_round_trip`.
#[test]
#[ignore = "needs b4"]
fn b4_round_trip_of_the_formatted_fixture_series() {
    let fx = Fixture::new(false).with_placeholder();
    let expected = apply_series(
        &fx.series(),
        &fx.tree,
        &[],
        Some("expected"),
        &ApplyOptions::default(),
    )
    .unwrap();
    let out = fx.tmp.path().join("outgoing");
    fx.format(&out, |r| r.reroll = Some(2)).unwrap();
    let want = Expected {
        prefix: "[PATCH RFC v2",
        subjects: expected.commits.iter().map(|c| c.subject.clone()).collect(),
        version: 2,
        base: expected.base.clone(),
        tip_tree: git(&fx.tree, &["rev-parse", "expected^{tree}"]),
    };
    let printed = b4_round_trip(&fx.tree, &out, &want);
    println!("{printed}");
}

/// The real series on the fetched tree of its pinned base, `--reroll 2`, with the
/// tree's checkpatch, through b4. Ignored by default: it needs b4 and the
/// tree under $XTASK_KERNEL_DIR/kernel (`cargo xtask tree fetch`), and
/// `.ci/run` runs it after the main job has fetched the tree. The tree is
/// only read: the work happens in a `git clone --shared` of it.
#[test]
#[ignore = "needs b4 and the fetched tree of the pinned base"]
fn b4_round_trip_of_the_formatted_real_series() {
    let series = Series::load(&xtask::util::patches_dir().join("guest_memfd")).unwrap();
    let fetched = xtask::util::kernel_work_dir()
        .join("kernel")
        .join(format!("linux-{}", series.toml.base.version));
    assert!(
        fetched.join(".git").exists(),
        "no fetched tree at {} (run `cargo xtask tree fetch`)",
        fetched.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("linux");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--shared",
            "--no-checkout",
            fetched.to_str().unwrap(),
            "linux",
        ],
    );
    let tag = format!("v{}", series.toml.base.version);
    git(&clone, &["checkout", "-q", "-B", "base", &tag]);
    let expected = apply_series(
        &series,
        &clone,
        &[],
        Some("expected"),
        &ApplyOptions::default(),
    )
    .unwrap();
    let out = tmp.path().join("outgoing");
    let req = FormatRequest {
        reroll: Some(2),
        out: Some(out.clone()),
        checkpatch: true,
        from: Some(ANN.into()),
        ..Default::default()
    };
    let report = format_series(&series, &clone, &req).unwrap();
    println!("{report}");
    match &report.checkpatch {
        Some(xtask::series::checkpatch::Checkpatch::Ran(rows)) => {
            assert_eq!(
                rows.len(),
                series.patches.len() + 1,
                "cover letter + patches"
            );
            assert!(rows[0].patch.ends_with("0000-cover-letter.patch"));
        }
        other => panic!("checkpatch did not run: {other:?}"),
    }
    if let Some(p) = &series.toml.placeholder_author {
        let email = p
            .split('<')
            .nth(1)
            .unwrap()
            .trim_end_matches('>')
            .to_lowercase();
        for (name, bytes) in Fixture::dir_bytes(&out) {
            assert!(
                !String::from_utf8_lossy(&bytes)
                    .to_lowercase()
                    .contains(&email),
                "{name} names the placeholder"
            );
        }
    }
    let want = Expected {
        prefix: &format!(
            "[PATCH{} v2",
            if series.toml.subject_prefix.contains("RFC") {
                " RFC"
            } else {
                ""
            }
        ),
        subjects: expected.commits.iter().map(|c| c.subject.clone()).collect(),
        version: 2,
        base: expected.base.clone(),
        tip_tree: git(&clone, &["rev-parse", "expected^{tree}"]),
    };
    let printed = b4_round_trip(&clone, &out, &want);
    println!("{printed}");
}

// ------------------------------------------------ apply: the user's repository

impl Fixture {
    fn apply_with(&self, opts: ApplyOptions) -> anyhow::Result<xtask::series::Applied> {
        apply_series(&self.series(), &self.tree, &[], None, &opts)
    }

    /// HEAD (detached or not), refs and the git dir's operation state files.
    fn repo_state(&self) -> String {
        let git_dir = self.tree.join(".git");
        let ops: Vec<&str> = [
            "rebase-merge",
            "rebase-apply",
            "MERGE_HEAD",
            "CHERRY_PICK_HEAD",
            "REVERT_HEAD",
            "BISECT_START",
        ]
        .into_iter()
        .filter(|f| git_dir.join(f).exists())
        .collect();
        format!(
            "HEAD {}\n{}\nops {ops:?}",
            std::fs::read_to_string(git_dir.join("HEAD"))
                .unwrap()
                .trim(),
            git(
                &self.tree,
                &["for-each-ref", "--format=%(refname) %(objectname)"]
            )
        )
    }

    /// Branches `one` and `two` off the base, changing the same line.
    fn two_conflicting_branches(&self) {
        for (branch, name) in [("one", "One"), ("two", "Two")] {
            git(&self.tree, &["switch", "-q", "-c", branch, "master"]);
            write(
                &self.tree.join("Makefile"),
                &MAKEFILE.replace("Curry Ramen", name),
            );
            commit_as(
                &self.tree,
                SEAN,
                "2026-11-24T10:00:00+00:00",
                &format!("Name {name}"),
            );
        }
        git(&self.tree, &["switch", "-q", "one"]);
    }
}

/// `git` that may fail (a conflict is the point).
fn git_may_fail(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.org");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap();
}

#[test]
fn apply_refuses_a_repository_in_the_middle_of_an_operation() {
    let fx = Fixture::new(false);
    fx.two_conflicting_branches();
    let checkout = || ApplyOptions {
        checkout: true,
        ..Default::default()
    };
    let mut messages = Vec::new();
    let mut refuse = |what: &str, abort: &[&str]| {
        let before = fx.repo_state();
        assert!(
            before.contains("ops [\""),
            "{what}: no operation in progress: {before}"
        );
        let err = fx.err(fx.apply_with(checkout()));
        assert_eq!(fx.repo_state(), before, "{what}: the repository changed");
        messages.push(format!("{what}: {err}"));
        git(&fx.tree, abort);
        git(&fx.tree, &["switch", "-q", "one"]);
    };
    // A rebase stopped at `edit`, as in `git rebase -i`.
    git_may_fail(
        &fx.tree,
        &["rebase", "-q", "-i", "master"],
        &[("GIT_SEQUENCE_EDITOR", "sed -i 1s/^pick/edit/")],
    );
    refuse("rebase", &["rebase", "--abort"]);
    git_may_fail(&fx.tree, &["merge", "-q", "two"], &[]);
    refuse("merge", &["merge", "--abort"]);
    git_may_fail(&fx.tree, &["cherry-pick", "two"], &[]);
    refuse("cherry-pick", &["cherry-pick", "--abort"]);
    let patch = git(
        &fx.tree,
        &[
            "format-patch",
            "-1",
            "two",
            "-o",
            fx.tmp.path().to_str().unwrap(),
        ],
    );
    git_may_fail(&fx.tree, &["am", &patch], &[]);
    refuse("am", &["am", "--abort"]);
    write(
        &fx.tree.join("Makefile"),
        &MAKEFILE.replace("Curry Ramen", "Three"),
    );
    commit_as(&fx.tree, SEAN, "2026-11-24T11:00:00+00:00", "Name Three");
    git_may_fail(&fx.tree, &["revert", "--no-edit", "one~1"], &[]);
    git_may_fail(&fx.tree, &["revert", "--no-edit", "HEAD~1"], &[]);
    refuse("revert", &["revert", "--abort"]);
    git(&fx.tree, &["bisect", "start", "one", "master"]);
    refuse("bisect", &["bisect", "reset"]);
    // Afterwards, it applies.
    fx.apply_with(checkout()).unwrap();
    insta::assert_snapshot!(messages.join("\n"));
}

#[test]
fn apply_force_never_replaces_a_branch_checked_out_in_any_worktree() {
    let fx = Fixture::new(false);
    fx.apply().unwrap();
    let force = || ApplyOptions {
        force: true,
        ..Default::default()
    };
    // In a linked worktree.
    let wt = fx.tmp.path().join("wt");
    git(
        &fx.tree,
        &[
            "worktree",
            "add",
            "-q",
            wt.to_str().unwrap(),
            "guest_memfd/v1",
        ],
    );
    let before = fx.repo_state();
    let err = fx.err(fx.apply_with(force()));
    assert_eq!(fx.repo_state(), before);
    assert_eq!(git(&wt, &["status", "--porcelain"]), "");
    insta::assert_snapshot!("branch_in_a_linked_worktree", err);
    // From the linked worktree, the branch of the main one.
    git(&fx.tree, &["worktree", "remove", wt.to_str().unwrap()]);
    git(&fx.tree, &["switch", "-q", "guest_memfd/v1"]);
    git(
        &fx.tree,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            wt.to_str().unwrap(),
            "master",
        ],
    );
    let err = fx.err(apply_series(&fx.series(), &wt, &[], None, &force()));
    assert!(
        err.contains("is checked out in") && err.contains("[TMP]/linux"),
        "{err}"
    );
    // Being rebased in a worktree counts too.
    git(&fx.tree, &["switch", "-q", "master"]);
    git(&wt, &["switch", "-q", "guest_memfd/v1"]);
    git_may_fail(
        &wt,
        &["rebase", "-q", "-i", "master"],
        &[("GIT_SEQUENCE_EDITOR", "sed -i 1s/^pick/edit/")],
    );
    let err = fx.err(fx.apply_with(force()));
    assert!(err.contains("is being rebased in [TMP]/wt"), "{err}");
}

#[test]
fn apply_to_a_bare_repository_refuses_checkout_before_anything() {
    let fx = Fixture::new(false);
    let bare = fx.tmp.path().join("bare.git");
    git(
        fx.tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            fx.tree.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let refs = || {
        git(
            &bare,
            &["for-each-ref", "--format=%(refname) %(objectname)"],
        )
    };
    let before = refs();
    let opts = ApplyOptions {
        checkout: true,
        ..Default::default()
    };
    let err = fx.err(apply_series(&fx.series(), &bare, &[], None, &opts));
    assert_eq!(refs(), before);
    insta::assert_snapshot!(err);
    // Without --checkout: the branch, and no `git switch` hint.
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["apply", "--series"])
        .arg(&fx.series_dir)
        .arg("--tree")
        .arg(&bare)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("a bare repository: no checkout") && !stdout.contains("switch"),
        "{stdout}"
    );
    assert_ne!(refs(), before);
}

#[test]
fn apply_checkout_names_the_untracked_file_in_the_way() {
    let fx = Fixture::new(false);
    // Patch 3 creates virt/kvm/guest_memfd.c.
    write(
        &fx.tree.join("virt/kvm/guest_memfd.c"),
        "/* my own draft */\n",
    );
    let before = fx.tree_state();
    let err = fx.err(fx.apply_with(ApplyOptions {
        checkout: true,
        ..Default::default()
    }));
    assert_eq!(fx.tree_state(), before, "a branch or file changed");
    insta::assert_snapshot!(err);
}

// ------------------------------------------------------- patches git am takes

#[test]
fn paths_with_spaces_and_quoted_paths_apply_and_export_back() {
    let fx = Fixture::new(false);
    add_patch_from(
        &fx,
        |dir| {
            write(&dir.join("virt/kvm/my file.c"), "int spaced;\n");
            write(&dir.join("virt/kvm/na\u{ef}ve.c"), "int naive;\n");
            write(&dir.join("virt/kvm/tab\there.c"), "int tab;\n");
            // And a change to an existing file whose name needs no quoting.
            write(
                &dir.join("virt/kvm/Kconfig"),
                &format!("{KCONFIG}\nconfig KVM_PRIVATE_MEM\n\tbool\n\nconfig X\n\tbool\n"),
            );
        },
        "KVM: Add files with awkward names",
        &[],
    );
    // The whole series again, numbered [PATCH k/4] as one run writes it.
    for p in fx.series().patches {
        std::fs::remove_file(p).unwrap();
    }
    git(
        &fx.author,
        &[
            "format-patch",
            "-q",
            "--abbrev=12",
            "-o",
            fx.series_dir.to_str().unwrap(),
            "origin/master..HEAD",
        ],
    );
    let p4 = std::fs::read_to_string(fx.patch(4)).unwrap();
    assert!(
        p4.contains("diff --git a/virt/kvm/my file.c b/virt/kvm/my file.c"),
        "{p4}"
    );
    assert!(p4.contains("\"a/virt/kvm/na\\303\\257ve.c\""), "{p4}");
    let before = Fixture::dir_bytes(&fx.series_dir);
    fx.apply().unwrap();
    assert_eq!(
        git(&fx.tree, &["rev-parse", "guest_memfd/v1^{tree}"]),
        git(&fx.author, &["rev-parse", "HEAD^{tree}"])
    );
    let report = export(&fx.series_dir, &fx.tree, None).unwrap();
    assert_eq!(Fixture::dir_bytes(&fx.series_dir), before, "{report}");
}

/// A copy of patch `n` with `edit` applied to its text.
fn edit_patch(fx: &Fixture, n: usize, edit: impl FnOnce(String) -> String) {
    let p = fx.patch(n);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, edit(text)).unwrap();
}

#[test]
fn in_body_from_in_rfc2047_is_decoded() {
    let fx = Fixture::new(false);
    edit_patch(&fx, 2, |t| {
        t.replacen(
            "\n\nSigned-off-by: Sean",
            "\n\nFrom: =?iso-8859-1?q?J=F6rg_M=FCller?= <jm@example.org>\n\nSigned-off-by: Sean",
            1,
        )
    });
    // The in-body From: must open the body: move it there.
    edit_patch(&fx, 2, |t| {
        let (head, body) = t.split_once("\n\n").unwrap();
        let body = body.replacen(
            "From: =?iso-8859-1?q?J=F6rg_M=FCller?= <jm@example.org>\n\n",
            "",
            1,
        );
        format!("{head}\n\nFrom: =?iso-8859-1?q?J=F6rg_M=FCller?= <jm@example.org>\n\n{body}")
    });
    fx.apply().unwrap();
    assert_eq!(
        git(
            &fx.tree,
            &["log", "-1", "--format=%an <%ae>", "guest_memfd/v1~1"]
        ),
        "J\u{f6}rg M\u{fc}ller <jm@example.org>"
    );
}

#[test]
fn a_latin1_author_header_applies_and_export_says_why_it_changed() {
    let fx = Fixture::new(false);
    // As some mailers write it: ISO-8859-1 encoded word.
    edit_patch(&fx, 1, |t| {
        t.replace(
            "From: =?UTF-8?q?J=C3=B6rg=20R=C3=B6del?= <joro@example.org>",
            "From: =?ISO-8859-1?Q?J=F6rg_R=F6del?= <joro@example.org>",
        )
    });
    fx.apply().unwrap();
    assert_eq!(
        git(&fx.tree, &["log", "-1", "--format=%an", "guest_memfd/v1~2"]),
        "J\u{f6}rg R\u{f6}del"
    );
    let report = export(&fx.series_dir, &fx.tree, None).unwrap();
    insta::assert_snapshot!(fx.redact(&report.to_string()));
}

#[test]
fn a_latin1_body_is_converted_as_git_am_does() {
    let fx = Fixture::new(false);
    let p2 = fx.patch(2);
    let text = std::fs::read_to_string(&p2).unwrap();
    let text = text
        .replacen(
            "Subject: [PATCH 2/3] KVM: Report KVM_CAP_USER_MEMORY2\n",
            "Subject: [PATCH 2/3] KVM: Report KVM_CAP_USER_MEMORY2\nMIME-Version: 1.0\nContent-Type: text/plain; charset=ISO-8859-1\nContent-Transfer-Encoding: 8bit\n",
            1,
        )
        .replacen("\n\nSigned-off-by: Sean", "\n\nTested on a caf\u{e9} laptop.\n\nSigned-off-by: Sean", 1);
    // To ISO-8859-1 bytes.
    let bytes: Vec<u8> = text
        .chars()
        .map(|c| u8::try_from(c as u32).unwrap())
        .collect();
    std::fs::write(&p2, bytes).unwrap();
    fx.apply().unwrap();
    let body = git(&fx.tree, &["log", "-1", "--format=%B", "guest_memfd/v1~1"]);
    assert!(body.contains("Tested on a caf\u{e9} laptop."), "{body}");
}

#[test]
fn bad_input_patch_cut_at_a_file_boundary() {
    let fx = Fixture::new(false);
    // Patch 3 touches two files; drop the second one and the signature.
    edit_patch(&fx, 3, |t| {
        let second = t.rfind("\ndiff --git ").unwrap();
        t[..second + 1].to_string()
    });
    let text = std::fs::read_to_string(fx.patch(3)).unwrap();
    assert!(text.contains(" 2 files changed"), "{text}");
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_series_dot_and_export_check_the_name() {
    let fx = Fixture::new(false);
    let toml_path = fx.series_dir.join("series.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(
        &toml_path,
        toml.replace("name = \"guest_memfd\"", "name = \"gmem\""),
    )
    .unwrap();
    // `--series .` from inside the series directory.
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(&fx.series_dir)
        .args(["apply", "--series", ".", "--tree"])
        .arg(&fx.tree)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not match the directory name \"guest_memfd\""),
        "{stderr}"
    );
    let err = fx.err(export(&fx.series_dir, &fx.tree, Some("v6.1.176..master")));
    insta::assert_snapshot!(err);
}
