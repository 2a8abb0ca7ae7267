//! `cargo xtask build-kernel`: out-of-tree kernel builds from fragments.
//!
//! Every (tree, fragment set) pair gets its own `O=` directory under
//! `target/kbuild/<tree-name>-<hash of its path>/<base+gmem+...>/`, so
//! switching configs never rebuilds the world and a rebuild with nothing
//! changed is a few seconds of make walking the tree. The config is
//! regenerated into a side file and only copied over `.config` when it
//! differs, so an unchanged config does not touch a single object.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::kconfig;
use crate::util;

mod bench;

pub use bench::{bench_build, load_average};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Kernel tree (default: the fetched tree with the series applied).
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// Comma-separated fragment names from kconfigs/ (base is always first).
    #[arg(long, default_value = "gmem")]
    pub config: String,
    /// Build after every patch of the series and report the first that breaks.
    #[arg(long)]
    pub each_patch: bool,
    /// With --each-patch: build these commits (`BASE..TIP`, oldest first)
    /// instead of applying the series (for trees where the series is already
    /// committed, or for any other stack of patches).
    #[arg(long, requires = "each_patch")]
    pub range: Option<String>,
    /// Parallel jobs for make (default: number of CPUs).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Do not use ccache even when it is installed.
    #[arg(long)]
    pub no_ccache: bool,
    /// Generate the config and run the survivor check, build nothing.
    #[arg(long, conflicts_with = "each_patch")]
    pub configure_only: bool,
}

/// A prepared build: where it happens and what it was asked for.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub tree: PathBuf,
    pub fragments: Vec<String>,
    pub dir: PathBuf,
    pub jobs: usize,
    pub ccache: bool,
    /// `--each-patch`: a requested option whose symbol the tree does not
    /// define yet (an earlier patch than the one adding it) is noted, not
    /// fatal. Options the tree defines must still survive.
    pub allow_undefined: bool,
    /// Draw make's progress bar on a terminal (off while another thread
    /// prints, as a pipelined mutation campaign's boots do).
    pub progress: bool,
    /// Run make at this niceness (0: as xtask runs), so that it yields
    /// the CPU to a guest booting beside it.
    pub nice: u8,
}

/// The result of a successful build.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: PathBuf,
    pub dir: PathBuf,
    pub duration: Duration,
    /// CPU time (user + system) of make and everything it ran.
    pub cpu: Duration,
    /// Objects compiled in this run (CC lines of make's output).
    pub compiled: usize,
    pub log: PathBuf,
    pub kernel_release: Option<String>,
}

pub fn run(args: BuildArgs) -> Result<ExitCode> {
    crate::doctor::preflight(&[crate::doctor::Stage::Build])?;
    let fragments = kconfig::fragment_list(&args.config)?;
    if args.each_patch {
        let tree = match &args.tree {
            Some(t) => t.clone(),
            None => crate::tree::ensure_default_tree().context(
                "no --tree given and the default tree is not available; pass --tree /path/to/linux",
            )?,
        };
        return each_patch(&args, &tree, &fragments);
    }
    let tree = match &args.tree {
        Some(t) => t.clone(),
        None => crate::series::checkout_default_tree(&crate::series::Purpose::Default)?.worktree,
    };
    let plan = plan(&tree, &fragments, args.jobs, !args.no_ccache)?;
    configure(&plan)?;
    if args.configure_only {
        println!("config only: {}", plan.dir.join(".config").display());
        return Ok(ExitCode::SUCCESS);
    }
    let built = make_bzimage(&plan)?;
    println!(
        "kernel {} built in {}: {}",
        built
            .kernel_release
            .as_deref()
            .unwrap_or("(unknown release)"),
        fmt_duration(built.duration),
        built.image.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Plan, configure and build `tree`'s bzImage with `fragments` (ccache on
/// when installed): what `test`, the reference lane and the matrix build.
/// `what` names the kernel in the line printed afterwards.
pub fn build_kernel(
    what: &str,
    tree: &Path,
    fragments: &[String],
    jobs: Option<usize>,
) -> Result<Built> {
    let plan = plan(tree, fragments, jobs, true)?;
    configure(&plan)?;
    let built = make_bzimage(&plan)?;
    println!(
        "{what}: {} ({} objects compiled, {})",
        built.image.display(),
        built.compiled,
        fmt_duration(built.duration)
    );
    Ok(built)
}

/// Check the tree and pick the build directory.
pub fn plan(
    tree: &Path,
    fragments: &[String],
    jobs: Option<usize>,
    want_ccache: bool,
) -> Result<BuildPlan> {
    let tree = check_tree(tree)?;
    let dir = build_dir(&tree, fragments);
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let ccache = want_ccache && util::which("ccache").is_some();
    Ok(BuildPlan {
        tree,
        fragments: fragments.to_vec(),
        dir,
        jobs,
        ccache,
        allow_undefined: false,
        progress: true,
        nice: 0,
    })
}

fn check_tree(tree: &Path) -> Result<PathBuf> {
    let tree = tree
        .canonicalize()
        .with_context(|| format!("kernel tree {} does not exist", tree.display()))?;
    for needed in ["Makefile", "Kconfig", "arch/x86/Kconfig", "scripts/kconfig"] {
        if !tree.join(needed).exists() {
            bail!(
                "{} does not look like a Linux source tree ({} is missing); pass --tree with the top of a kernel tree",
                tree.display(),
                needed
            );
        }
    }
    if tree.join(".config").exists() {
        bail!(
            "{} has a .config in the source directory; out-of-tree builds refuse such trees (move it away or run `make mrproper` there)",
            tree.display()
        );
    }
    Ok(tree)
}

/// `target/kbuild/<tree-name>-<8 hex of sha256(path)>/<frag+frag>`.
fn build_dir(tree: &Path, fragments: &[String]) -> PathBuf {
    tree_build_root(tree).join(fragments.join("+"))
}

/// `kbuild/<tree-id>/`: the build directories of one tree, and the scratch
/// worktree the series is checked out in.
pub fn tree_build_root(tree: &Path) -> PathBuf {
    util::kernel_work_dir().join("kbuild").join(tree_id(tree))
}

fn tree_id(tree: &Path) -> String {
    let digest = Sha256::digest(tree.as_os_str().as_encoded_bytes());
    let name = tree
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tree".into());
    format!("{name}-{}", &hex::encode(digest)[..8])
}

fn make_vars(plan: &BuildPlan) -> Vec<String> {
    let mut v = vec![format!("O={}", plan.dir.display())];
    if plan.ccache {
        v.push("CC=ccache gcc".into());
    }
    v.extend(skip_empty_commands(&plan.tree));
    v
}

/// Kbuild's `cmd` as 6.1 defines it: a shell even when `cmd_X` is empty.
const KBUILD_CMD_ALWAYS_SHELL: &str =
    "cmd = @set -e; $(echo-cmd) $($(quiet)redirect) $(delete-on-interrupt) $(cmd_$(1))";

/// The same `cmd`, with no shell when `cmd_X` is empty (as 6.12's
/// Kbuild.include has it): every command that runs is unchanged.
const KBUILD_CMD_SKIP_EMPTY: &str =
    "cmd=@$(if $(cmd_$(1)),set -e; $(echo-cmd) $($(quiet)redirect) $(delete-on-interrupt) $(cmd_$(1)),:)";

/// A tree whose Kbuild.include defines `cmd` to start a shell even for an
/// empty command runs about 1,100 shells that do nothing in every build
/// (`$(call cmd,force_checksrc)` for each object, empty without
/// `C=2`): a fifth of a no-op build's CPU time here. The override goes
/// on make's command line (and so to every sub-make) only when the tree's
/// definition is exactly that one.
fn skip_empty_commands(tree: &Path) -> Option<String> {
    let text = std::fs::read_to_string(tree.join("scripts/Kbuild.include")).ok()?;
    text.lines()
        .any(|l| l == KBUILD_CMD_ALWAYS_SHELL)
        .then(|| KBUILD_CMD_SKIP_EMPTY.to_string())
}

/// Merge the fragments, generate the config, replace `.config` only when it
/// changed, then check that every requested option survived.
pub fn configure(plan: &BuildPlan) -> Result<()> {
    std::fs::create_dir_all(&plan.dir)
        .with_context(|| format!("creating {}", plan.dir.display()))?;
    let (merged, merged_path) = merge_fragments(plan)?;
    let config = generate_config(plan, &merged_path)?;
    check_requested(plan, &merged, &config)
}

/// The plan's fragments (with the tree version's `since/` additions)
/// merged into `<dir>/xtask-merged.config`.
fn merge_fragments(plan: &BuildPlan) -> Result<(kconfig::Merged, PathBuf)> {
    let version = crate::tree::version_from_makefile(&plan.tree).ok();
    let frags =
        kconfig::load_fragments_for(&util::kconfigs_dir(), &plan.fragments, version.as_deref())?;
    for f in frags
        .iter()
        .filter(|f| f.name.starts_with(kconfig::SINCE_DIR))
    {
        println!(
            "config: {}.config applies to linux {}",
            f.name,
            version.as_deref().unwrap_or("?")
        );
    }
    let merged = kconfig::merge(&frags);
    for (old, new) in &merged.overrides {
        println!(
            "config: {} {}={} overrides {}={} from {}.config",
            new.source, new.option, new.value, old.option, old.value, old.source
        );
    }
    let merged_path = plan.dir.join("xtask-merged.config");
    std::fs::write(&merged_path, merged.render())
        .with_context(|| format!("writing {}", merged_path.display()))?;
    Ok((merged, merged_path))
}

/// allnoconfig with the merged fragments, then olddefconfig, into a new
/// file that replaces `.config` only when an option changed (so that make
/// rebuilds nothing for a config it already has). Returns the new text.
fn generate_config(plan: &BuildPlan, merged_path: &Path) -> Result<String> {
    let sh = Shell::new()?;
    sh.change_dir(&plan.tree);
    let vars = make_vars(plan);
    let new_name = ".config.xtask-new";
    let allconfig = format!("KCONFIG_ALLCONFIG={}", merged_path.display());
    let kconfig_config = format!("KCONFIG_CONFIG={new_name}");
    let log = plan.dir.join("config.log");
    let vars2 = vars.clone();
    let out = cmd!(
        sh,
        "make {vars2...} {kconfig_config} {allconfig} allnoconfig"
    )
    .quiet()
    .ignore_status()
    .output()?;
    let out2 = if out.status.success() {
        Some(
            cmd!(sh, "make {vars...} {kconfig_config} olddefconfig")
                .quiet()
                .ignore_status()
                .output()?,
        )
    } else {
        None
    };
    let mut text = Vec::new();
    for o in [Some(&out), out2.as_ref()].into_iter().flatten() {
        text.extend_from_slice(&o.stdout);
        text.extend_from_slice(&o.stderr);
    }
    std::fs::write(&log, &text).ok();
    if !out.status.success() || !out2.as_ref().is_some_and(|o| o.status.success()) {
        bail!(
            "generating the kernel config failed (see {}):\n{}",
            log.display(),
            util::tail_lines(&String::from_utf8_lossy(&text), 15)
        );
    }
    let new_path = plan.dir.join(new_name);
    let new_text = std::fs::read_to_string(&new_path)
        .with_context(|| format!("reading {}", new_path.display()))?;
    let cur_path = plan.dir.join(".config");
    let old_text = std::fs::read_to_string(&cur_path).unwrap_or_default();
    if strip_header(&old_text) != strip_header(&new_text) {
        std::fs::rename(&new_path, &cur_path)
            .with_context(|| format!("replacing {}", cur_path.display()))?;
        println!(
            "config: {} written ({} fragments: {})",
            cur_path.display(),
            plan.fragments.len(),
            plan.fragments.join(", ")
        );
    } else {
        std::fs::remove_file(&new_path).ok();
        println!(
            "config: {} unchanged ({})",
            cur_path.display(),
            plan.fragments.join(", ")
        );
    }
    Ok(new_text)
}

/// Every option the fragments request must have its value in `config`;
/// with `allow_undefined`, options the tree does not define yet are noted.
fn check_requested(plan: &BuildPlan, merged: &kconfig::Merged, config: &str) -> Result<()> {
    let dot = kconfig::parse_dotconfig(config);
    let mut dropped = kconfig::check_survivors(merged, &dot);
    if !dropped.is_empty() {
        kconfig::explain_dropped(&plan.tree, &mut dropped, &dot)?;
    }
    let mut deferred = 0;
    if plan.allow_undefined {
        let (later, rest): (Vec<_>, Vec<_>) =
            dropped.into_iter().partition(|d| d.undefined_in_tree);
        deferred = later.len();
        for d in &later {
            println!(
                "config: {}={} not defined at this commit yet (noted, not fatal with --each-patch)",
                d.request.option, d.request.value
            );
        }
        dropped = rest;
    }
    if !dropped.is_empty() {
        let mut msg = format!(
            "{} of {} requested options did not survive olddefconfig in {}:\n",
            dropped.len(),
            merged.requests.len(),
            plan.tree.display()
        );
        for d in &dropped {
            msg.push_str(&format!("  {d}\n"));
        }
        msg.push_str("fix the fragment (or the tree) and run again; nothing was built");
        bail!(msg);
    }
    if deferred == 0 {
        println!(
            "config: all {} requested options survived",
            merged.requests.len()
        );
    } else {
        println!(
            "config: all {} requested options this commit defines survived ({deferred} not defined yet)",
            merged.requests.len() - deferred
        );
    }
    Ok(())
}

/// The auto-generated header of a .config carries no option; compare the rest.
fn strip_header(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("# Linux/") && !l.starts_with("# Compiler:"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{}m{:04.1}s", (s / 60.0) as u64, s % 60.0)
    } else {
        format!("{s:.1}s")
    }
}

/// Which make output lines are steps of the build (` CC  foo.o`).
fn classify_make_line(line: &str) -> Option<(&str, &str)> {
    let t = line.trim_start();
    if !line.starts_with("  ") {
        return None;
    }
    let mut it = t.splitn(2, char::is_whitespace);
    let verb = it.next()?;
    let what = it.next()?.trim();
    if verb.is_empty()
        || what.is_empty()
        || !verb
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return None;
    }
    Some((verb, what))
}

/// `make bzImage` with a progress bar fed from make's output; the full
/// output goes to `<dir>/build.log`.
pub fn make_bzimage(plan: &BuildPlan) -> Result<Built> {
    let target = "bzImage";
    let log_path = plan.dir.join("build.log");
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let sh = Shell::new()?;
    sh.change_dir(&plan.tree);
    let vars = make_vars(plan);
    let jobs = format!("-j{}", plan.jobs);
    let nice = format!("{}", plan.nice);
    let mut command: Command = if plan.nice > 0 {
        cmd!(sh, "nice -n {nice} make {vars...} {jobs} {target}").into()
    } else {
        cmd!(sh, "make {vars...} {jobs} {target}").into()
    };
    let expected = std::fs::read_to_string(plan.dir.join("xtask-objects"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let pb = match expected {
        _ if !plan.progress => ProgressBar::hidden(),
        Some(n) if n > 0 => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/~{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        _ => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} objects {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    pb.enable_steady_tick(Duration::from_millis(250));
    pb.set_message(format!("make {target} ({})", plan.dir.display()));
    let start = Instant::now();
    let cpu_before = util::children_cpu_time();
    let spawned = util::spawn_lines(&mut command).context("starting make (is it installed?)")?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut compiled = 0usize;
    let mut problems: Vec<String> = Vec::new();
    for (stream, line) in spawned.lines.iter() {
        let _ = writeln!(log, "{line}");
        if let Some((verb, what)) = classify_make_line(&line) {
            if verb == "CC" || verb == "AS" {
                compiled += 1;
                pb.inc(1);
                // No terminal (CI logs): a plain line every 200 objects.
                if !tty && compiled.is_multiple_of(200) {
                    let of = expected.map(|n| format!("/~{n}")).unwrap_or_default();
                    println!(
                        "  make {target}: {compiled}{of} objects compiled, {}",
                        fmt_duration(start.elapsed())
                    );
                }
            }
            let short = what
                .strip_prefix(&format!("{}/", plan.dir.display()))
                .unwrap_or(what);
            pb.set_message(format!("{verb} {short}"));
        } else if stream == util::Stream::Stderr
            && (line.contains("error") || line.contains("Error"))
        {
            problems.push(line);
        }
    }
    let status = spawned.wait()?;
    pb.finish_and_clear();
    let duration = start.elapsed();
    let cpu = util::children_cpu_time().saturating_sub(cpu_before);
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let mut shown: Vec<String> = problems.iter().take(20).cloned().collect();
        if shown.is_empty() {
            shown.push(util::tail_lines(&text, 20));
        }
        bail!(
            "make {target} failed after {} ({}); errors:\n{}\nfull log: {}",
            fmt_duration(duration),
            status,
            shown.join("\n"),
            log_path.display()
        );
    }
    let image = plan.dir.join("arch/x86/boot/bzImage");
    if target == "bzImage" && !image.is_file() {
        bail!(
            "make succeeded but {} is missing (see {})",
            image.display(),
            log_path.display()
        );
    }
    if compiled > 0 {
        let n = count_objects(&plan.dir);
        std::fs::write(plan.dir.join("xtask-objects"), format!("{n}\n")).ok();
    }
    let kernel_release = std::fs::read_to_string(plan.dir.join("include/config/kernel.release"))
        .ok()
        .map(|s| s.trim().to_string());
    Ok(Built {
        image,
        dir: plan.dir.clone(),
        duration,
        cpu,
        compiled,
        log: log_path,
        kernel_release,
    })
}

/// Number of `.o` files in a build directory.
pub fn count_objects(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "o"))
        .count()
}

/// One commit `--each-patch` builds, and how its build went.
struct PatchBuild {
    commit: String,
    subject: String,
    status: String,
}

impl PatchBuild {
    fn new(commit: String, subject: String) -> PatchBuild {
        PatchBuild {
            commit,
            subject,
            status: "not built".into(),
        }
    }
}

/// The commits to build one by one: from `--range` or from applying the series.
fn each_patch_commits(args: &BuildArgs, tree: &Path) -> Result<Vec<PatchBuild>> {
    let sh = Shell::new()?;
    sh.change_dir(tree);
    if let Some(range) = &args.range {
        if !range.contains("..") {
            bail!("--range `{range}` must be BASE..TIP");
        }
        let out = cmd!(sh, "git rev-list --reverse --no-merges {range}")
            .quiet()
            .read()
            .with_context(|| format!("listing commits of {range} in {}", tree.display()))?;
        let mut v = Vec::new();
        for c in out.lines().filter(|l| !l.is_empty()) {
            let subject = cmd!(sh, "git log -1 --format=%s {c}").quiet().read()?;
            v.push(PatchBuild::new(c.to_string(), subject));
        }
        if v.is_empty() {
            bail!("--range {range} holds no commits");
        }
        return Ok(v);
    }
    let checkout = crate::series::checkout(tree, &crate::series::Purpose::EachPatch)
        .context("applying the series for --each-patch (or pass --range BASE..TIP)")?;
    let patches: Vec<PatchBuild> = checkout
        .commits
        .into_iter()
        .filter_map(|p| p.commit.map(|c| PatchBuild::new(c, p.subject)))
        .collect();
    if patches.is_empty() {
        bail!(
            "every patch of the series is already in the base of {}: there is nothing to build \
             one by one",
            tree.display()
        );
    }
    Ok(patches)
}

/// `--each-patch`: one scratch worktree and one build directory, every
/// commit checked out and built in order; the first failure is reported.
fn each_patch(args: &BuildArgs, tree: &Path, fragments: &[String]) -> Result<ExitCode> {
    let tree = tree
        .canonicalize()
        .with_context(|| format!("kernel tree {} does not exist", tree.display()))?;
    let mut patches = each_patch_commits(args, &tree)?;
    // The same scratch worktree (and so the same build directory) as the
    // default flow and the mutants: walking the series rebuilds only the
    // files each patch touches, and a `test` afterwards finds the tip built.
    let scratch = crate::series::checkout::scratch_worktree(&tree, &patches[0].commit)?;
    let mut plan = plan(&scratch, fragments, args.jobs, !args.no_ccache)?;
    plan.allow_undefined = true;
    let wsh = Shell::new()?;
    wsh.change_dir(&scratch);
    let total = patches.len();
    // The first patch that breaks the build, and make's errors.
    let mut broken: Option<(usize, String)> = None;
    for (i, p) in patches.iter_mut().enumerate() {
        let commit = &p.commit;
        println!(
            "[{}/{total}] {} {}",
            i + 1,
            util::short_hash(commit),
            p.subject
        );
        cmd!(wsh, "git checkout --quiet --force --detach {commit}")
            .quiet()
            .run()
            .with_context(|| format!("checking out {commit} in {}", scratch.display()))?;
        match configure(&plan).and_then(|_| make_bzimage(&plan)) {
            Ok(b) => p.status = format!("ok ({})", fmt_duration(b.duration)),
            Err(e) => {
                p.status = "FAILED".into();
                broken = Some((i, format!("{e:#}")));
                break;
            }
        }
    }
    println!("\n{:>3}  {:<12}  {:<16}  subject", "#", "commit", "build");
    for (i, p) in patches.iter().enumerate() {
        println!(
            "{:>3}  {:<12}  {:<16}  {}",
            i + 1,
            util::short_hash(&p.commit),
            p.status,
            p.subject
        );
    }
    match broken {
        Some((i, err)) => {
            println!(
                "\nfirst patch that breaks the build: {}/{total} \"{}\"\n{err}",
                i + 1,
                patches[i].subject
            );
            Ok(ExitCode::FAILURE)
        }
        None => {
            println!("\nall {total} patches build with {}", fragments.join("+"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_lines_are_classified_for_the_progress_line() {
        assert_eq!(
            classify_make_line("  CC      arch/x86/kvm/x86.o"),
            Some(("CC", "arch/x86/kvm/x86.o"))
        );
        assert_eq!(
            classify_make_line("  LD [M]  foo.ko"),
            Some(("LD", "[M]  foo.ko"))
        );
        assert_eq!(
            classify_make_line("  AS      arch/x86/entry/entry_64.o"),
            Some(("AS", "arch/x86/entry/entry_64.o"))
        );
        assert_eq!(classify_make_line("make[1]: Entering directory '/x'"), None);
        assert_eq!(
            classify_make_line("arch/x86/kvm/x86.c:12:1: error: expected ';'"),
            None
        );
        assert_eq!(classify_make_line("  lowercase   thing"), None);
    }

    #[test]
    fn empty_kbuild_commands_are_skipped_only_where_cmd_is_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        let include = dir.path().join("scripts/Kbuild.include");
        assert_eq!(skip_empty_commands(dir.path()), None, "no Kbuild.include");
        std::fs::write(&include, format!("x = 1\n{KBUILD_CMD_ALWAYS_SHELL}\n")).unwrap();
        let v = skip_empty_commands(dir.path()).unwrap();
        // The override is the tree's definition with the empty case cut out.
        let (name, value) = v.split_once('=').unwrap();
        let old = KBUILD_CMD_ALWAYS_SHELL.split_once(" = ").unwrap().1;
        assert_eq!(name, "cmd");
        assert_eq!(
            value,
            format!("@$(if $(cmd_$(1)),{},:)", old.strip_prefix('@').unwrap())
        );
        // A kbuild that defines cmd otherwise (6.12 skips empty commands
        // itself) gets nothing.
        std::fs::write(
            &include,
            "cmd = @$(if $(cmd_$(1)),set -e; $($(quiet)log_print) $(delete-on-interrupt) $(cmd_$(1)),:)\n",
        )
        .unwrap();
        assert_eq!(skip_empty_commands(dir.path()), None);
    }

    #[test]
    fn build_dirs_differ_per_tree_and_config_set() {
        let a = build_dir(Path::new("/src/linux"), &["base".into(), "gmem".into()]);
        let b = build_dir(Path::new("/other/linux"), &["base".into(), "gmem".into()]);
        let c = build_dir(Path::new("/src/linux"), &["base".into()]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(a.ends_with("base+gmem"));
        assert!(tree_id(Path::new("/src/linux")).starts_with("linux-"));
        assert_eq!(
            tree_id(Path::new("/src/linux")),
            tree_id(Path::new("/src/linux"))
        );
    }

    #[test]
    fn check_tree_refuses_non_kernel_dirs_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_tree(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("does not look like a Linux source tree"),
            "{err}"
        );
        let err = check_tree(Path::new("/nonexistent/linux"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(std::time::Duration::from_millis(7600)), "7.6s");
        assert_eq!(
            fmt_duration(std::time::Duration::from_secs(608)),
            "10m08.0s"
        );
    }
}
