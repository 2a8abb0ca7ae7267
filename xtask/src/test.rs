//! `cargo xtask test`: build, boot, run the selftests, report. (Issue #3.)

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use xshell::{cmd, Shell};

use crate::boot::{self, Accel, AccelChoice, Killed, VngSpec};
use crate::build;
use crate::kconfig;
use crate::results::{self, MutantRow, MutantsReport, Outcome, RunResult, SeriesTag};
use crate::util;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Run the selftests against the running kernel, booting nothing.
    #[arg(long)]
    pub host: bool,
    /// Kernel tree to build as checked out (default: the pinned tree with
    /// the series applied, built in a scratch worktree).
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// Comma-separated fragments from kconfigs/ (base is always first).
    #[arg(long, default_value = "gmem")]
    pub config: String,
    /// Boot this bzImage instead of building one.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// auto: KVM only when /dev/kvm is probed to boot a kernel, else TCG
    /// with `-cpu max` (the choice and the reason are always printed).
    #[arg(long, default_value = "auto")]
    pub accel: String,
    /// Whole-run timeout in seconds; when it expires QEMU is killed and the
    /// run is reported as a guest hang (default 900).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Only cases whose name contains PATTERN (passed to the selftests).
    #[arg(long)]
    pub filter: Option<String>,
    /// Seconds to wait for the KTAP header before calling it a failed boot
    /// (default 180 under TCG, 60 under KVM).
    #[arg(long)]
    pub boot_timeout: Option<u64>,
    /// Per-case timeout passed to the selftests (`--timeout`).
    #[arg(long)]
    pub case_timeout: Option<u64>,
    /// Use this selftests binary instead of building the workspace's.
    #[arg(long)]
    pub selftests: Option<PathBuf>,
    /// Build the selftests in release mode.
    #[arg(long)]
    pub release: bool,
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Extra guest kernel command line (repeatable).
    #[arg(long)]
    pub append: Vec<String>,
    /// Run a shell command in the guest instead of the selftests (boot check).
    #[arg(long, conflicts_with_all = ["host", "mutant", "mutants"])]
    pub exec: Option<String>,
    /// Apply patches/mutants/NAME.patch on top of the series, build, boot,
    /// run; succeeds only when the suite fails (the mutant is killed).
    #[arg(long, conflicts_with = "mutants")]
    pub mutant: Option<String>,
    /// `--mutants all`: every patch in patches/mutants/.
    #[arg(long, value_name = "all")]
    pub mutants: Option<String>,
    /// Install missing host tools first (`cargo xtask doctor --install`).
    #[arg(long)]
    pub install_deps: bool,
    /// Test an upstream kernel built without the series: VERSION, or
    /// series.toml's `[reference]` when none is given.
    #[arg(long, value_name = "VERSION", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["host", "tree", "kernel", "mutant", "mutants"])]
    pub reference: Option<String>,
}

pub fn run(args: TestArgs) -> Result<ExitCode> {
    if args.install_deps {
        let code = crate::doctor::run(crate::doctor::DoctorArgs { install: true })?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    if !args.host {
        use crate::doctor::Stage;
        let stages: &[Stage] = match (&args.kernel, &args.tree) {
            (Some(_), _) => &[Stage::Boot],
            (None, Some(_)) => &[Stage::Build, Stage::Boot],
            (None, None) => &[Stage::Tree, Stage::Build, Stage::Boot],
        };
        crate::doctor::preflight(stages)?;
    }
    if let Some(version) = &args.reference {
        return crate::reference::run_test(&args, Some(version.as_str()).filter(|v| !v.is_empty()));
    }
    if args.mutant.is_some() || args.mutants.is_some() {
        return run_mutants(&args);
    }
    let result = if args.host {
        run_host(&args)?
    } else {
        run_boot(&args, None, default_series_tag(&args, None))?
    };
    Ok(if result.outcome.is_pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Build (or find) the selftests binary.
pub fn selftests_binary(args: &TestArgs) -> Result<PathBuf> {
    if let Some(p) = &args.selftests {
        let p = p
            .canonicalize()
            .with_context(|| format!("--selftests {} does not exist", p.display()))?;
        return Ok(p);
    }
    let sh = Shell::new()?;
    sh.change_dir(util::project_root());
    let profile = if args.release { "release" } else { "debug" };
    eprintln!("selftests: cargo build -p selftests ({profile})");
    if args.release {
        cmd!(sh, "cargo build -p selftests --release")
            .run()
            .context("building the selftests")?;
    } else {
        cmd!(sh, "cargo build -p selftests")
            .run()
            .context("building the selftests")?;
    }
    let bin = util::target_dir().join(profile).join("gmem-selftests");
    if !bin.is_file() {
        bail!("the selftests build did not produce {}", bin.display());
    }
    Ok(bin)
}

fn selftest_args(args: &TestArgs) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(f) = &args.filter {
        v.push("--filter".into());
        v.push(f.clone());
    }
    if let Some(t) = args.case_timeout {
        v.push("--timeout".into());
        v.push(t.to_string());
    }
    v
}

/// `target/results/<run-id>/`, and the `latest` symlink pointing at it.
fn new_run_dir(tag: &str) -> Result<(String, PathBuf)> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(&time::macros::format_description!(
            "[year][month][day]-[hour][minute][second]"
        ))
        .unwrap_or_else(|_| "run".into());
    let root = util::target_dir().join("results");
    let mut id = format!("{stamp}-{tag}");
    let mut n = 1;
    while root.join(&id).exists() {
        n += 1;
        id = format!("{stamp}-{tag}-{n}");
    }
    let dir = root.join(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let latest = root.join("latest");
    let _ = std::fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(&id, &latest);
    Ok((id, dir))
}

fn finish(result: &RunResult, dir: &Path, guest_log_name: &str) -> Result<()> {
    let json = result.write_json(dir)?;
    let junit = result.write_junit(dir)?;
    std::fs::write(dir.join("summary.md"), result.summary_markdown())
        .with_context(|| format!("writing {}", dir.join("summary.md").display()))?;
    println!("\n{}", result.summary());
    println!(
        "files: {}, {}, {}",
        json.display(),
        junit.display(),
        dir.join(guest_log_name).display()
    );
    Ok(())
}

/// Boot a kernel under vng and run the selftests (or `--exec`) inside.
///
/// `series` names what the kernel was built from when the caller knows it
/// (the default flow and mutants); it is recorded in results.json.
pub fn run_boot(
    args: &TestArgs,
    tree_override: Option<&Path>,
    series: Option<SeriesTag>,
) -> Result<RunResult> {
    let fragments = kconfig::fragment_list(&args.config)?;
    let (image, release) = match &args.kernel {
        Some(k) => {
            let k = k
                .canonicalize()
                .with_context(|| format!("--kernel {} does not exist", k.display()))?;
            (k, None)
        }
        None => {
            let tree = match tree_override.or(args.tree.as_deref()) {
                Some(t) => t.to_path_buf(),
                None => build::default_series_checkout()?,
            };
            let plan = build::plan(&tree, &fragments, None, true)?;
            build::configure(&plan)?;
            let built = build::make_bzimage(&plan)?;
            println!(
                "kernel: {} ({} objects compiled, {})",
                built.image.display(),
                built.compiled,
                build::fmt_duration(built.duration)
            );
            (built.image, built.kernel_release)
        }
    };
    let bin = match &args.exec {
        Some(_) => None,
        None => Some(selftests_binary(args)?),
    };
    // With --kernel the fragments are whatever that image was built from:
    // an image under target/kbuild/.../<set>/arch/x86/boot names its set.
    let config_label = match &args.kernel {
        None => fragments.join("+"),
        Some(_) => image
            .ancestors()
            .nth(4)
            .filter(|d| d.join("xtask-merged.config").is_file())
            .and_then(|d| d.file_name())
            .map(|n| format!("{} (prebuilt --kernel)", n.to_string_lossy()))
            .unwrap_or_else(|| "unknown (prebuilt --kernel)".into()),
    };
    let choice: AccelChoice = boot::choose_accel(&args.accel, &image)?;
    println!("accel: {} — {}", choice.accel.name(), choice.reason);
    let tag = config_label
        .split(' ')
        .next()
        .unwrap_or("kernel")
        .to_string();
    let (run_id, dir) = new_run_dir(&format!("{tag}-{}", choice.accel.name()))?;
    let script = dir.join("guest.sh");
    let text = match (&args.exec, &bin) {
        (Some(e), _) => boot::guest_script(&dir, Path::new("/bin/sh"), &["-c".into(), e.clone()]),
        (None, Some(b)) => boot::guest_script(&dir, b, &selftest_args(args)),
        (None, None) => unreachable!("selftests binary resolved above"),
    };
    std::fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
    let mut append = boot::default_append();
    append.extend(args.append.iter().cloned());
    let spec = VngSpec {
        image: image.clone(),
        accel: choice.accel,
        cpus: args.cpus,
        memory: args.memory.clone(),
        rwdir: dir.clone(),
        exec: format!("sh {}", boot::sh_quote(&script.display().to_string())),
        append,
    };
    let vng_args = boot::vng_args(&spec);
    let mut command = vec!["vng".to_string()];
    command.extend(vng_args.iter().map(|a| a.to_string_lossy().into_owned()));
    std::fs::write(dir.join("command"), shell_words(&command)).ok();
    let boot_timeout = Duration::from_secs(args.boot_timeout.unwrap_or(match choice.accel {
        Accel::Tcg => 180,
        Accel::Kvm => 60,
    }));
    let run_timeout = Duration::from_secs(args.timeout.unwrap_or(900));
    println!(
        "boot: {} (boot timeout {}s, run timeout {}s)",
        shell_words(&command),
        boot_timeout.as_secs(),
        run_timeout.as_secs()
    );
    let start = Instant::now();
    let guest = boot::run_guest("vng", &vng_args, &dir, boot_timeout, run_timeout, true)?;

    // The kernel log: dmesg from the guest when it got that far (complete
    // and in order with the kmsg markers), else the console capture.
    let dmesg = std::fs::read_to_string(dir.join("guest-dmesg.log"))
        .ok()
        .filter(|s| !s.trim().is_empty());
    let kernel_log = dmesg.clone().unwrap_or_else(|| guest.console.clone());
    let mut splats = results::scan_splats(&kernel_log);
    if dmesg.is_some() {
        // A splat after dmesg ran (teardown, panic) only reached the console.
        let tail_splats: Vec<_> = results::scan_splats(&guest.console)
            .into_iter()
            .filter(|s| !splats.iter().any(|k| k.title == s.title))
            .collect();
        splats.extend(tail_splats);
    }
    // The KTAP stream: the guest's own copy (clean), else vng's stdout, else
    // the console (where it lands, mixed with kernel messages, when
    // virtme-ng-init had to fall back to the serial console).
    let ktap_text = std::fs::read_to_string(dir.join("ktap.log"))
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| {
            guest
                .stdout
                .contains("KTAP version 1")
                .then(|| guest.stdout.clone())
        })
        .unwrap_or_else(|| guest.console.clone());
    let ktap = if args.exec.is_some() {
        results::Ktap {
            version_seen: true,
            ..Default::default()
        }
    } else {
        results::parse_ktap(&ktap_text)
    };
    // The exit status the guest script recorded; vng's own status is only
    // meaningful when virtio-serial script I/O worked.
    let exit_file = std::fs::read_to_string(dir.join("exit-code"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let guest_exit = exit_file;
    let read_num = |n: &str| {
        std::fs::read_to_string(dir.join(n))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let taint_before = read_num("taint-before");
    let taint_after = read_num("taint-after");
    let kernel = std::fs::read_to_string(dir.join("guest-uname"))
        .ok()
        .map(|s| s.trim().to_string())
        .or(release);
    let panic_line = guest
        .console
        .lines()
        .map(results::strip_kmsg_prefix)
        .find(|l| l.starts_with("Kernel panic - not syncing"))
        .map(str::to_string);
    let last_console = |n: usize| {
        let lines: Vec<&str> = guest.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    };
    let outcome = match (&guest.killed, guest_exit) {
        (Some(Killed::BootTimeout(s)), _) => Outcome::NoBoot(format!(
            "the guest's userspace did not start within {s}s (no output from the guest script, no KTAP header); QEMU was killed. Last console lines:\n{}",
            last_console(15)
        )),
        (Some(Killed::RunTimeout(s)), _) => Outcome::Hang(format!(
            "the run did not finish within {s}s; QEMU was killed{}",
            ktap.running_at_end
                .as_ref()
                .or(splats.last().and_then(|s| s.test.as_ref()))
                .map(|t| format!(" while `{t}` was running"))
                .unwrap_or_default()
        )),
        (None, _) if panic_line.is_some() => Outcome::Panic(panic_line.clone().unwrap_or_default()),
        (None, _) if guest.up_s.is_none() => Outcome::NoBoot(format!(
            "vng exited ({}) before the guest script ran; last console lines:\n{}",
            guest.exit.map(|c| c.to_string()).unwrap_or_else(|| "signal".into()),
            last_console(15)
        )),
        (None, None) if guest.exit == Some(255) => Outcome::Panic(format!(
            "the guest script never finished and vng exited 255 (panic=-1 reboot or a crash); last console lines:\n{}",
            last_console(15)
        )),
        (None, None) => Outcome::Error(format!(
            "the guest script never recorded an exit status (vng exited {}); last console lines:\n{}",
            guest.exit.map(|c| c.to_string()).unwrap_or_else(|| "signal".into()),
            last_console(15)
        )),
        (None, code) => {
            let v = results::verdict(&ktap, &splats, taint_before, taint_after, code);
            match (args.exec.is_some(), code, v) {
                (true, Some(c), Outcome::Passed) if c != 0 => Outcome::Failed(vec![format!("guest command exited {c}")]),
                (_, _, v) => v,
            }
        }
    };
    let mut outcome = outcome;
    // Splats fail every kind of outcome; add them to Failed, keep the others.
    if let Outcome::Passed = outcome {
        if !splats.is_empty() {
            outcome = results::verdict(&ktap, &splats, taint_before, taint_after, guest_exit);
        }
    }
    let result = RunResult {
        run_id,
        mode: "vng".into(),
        kernel,
        kernel_image: Some(image),
        config: config_label,
        accel: choice.accel.name().into(),
        accel_reason: choice.reason.clone(),
        command,
        guest_exit,
        boot_to_first_ktap_s: guest.first_ktap_s,
        duration_s: start.elapsed().as_secs_f64(),
        taint_before,
        taint_after,
        ktap,
        splats,
        outcome,
        series,
    };
    finish(&result, &dir, "guest.log")?;
    if let Some(up) = guest.up_s {
        println!("guest userspace up after {up:.1}s");
    }
    Ok(result)
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| boot::sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--host`: the same binary against the running kernel. New kernel log
/// lines (when dmesg is readable) are scanned for splats too.
pub fn run_host(args: &TestArgs) -> Result<RunResult> {
    let bin = selftests_binary(args)?;
    let (run_id, dir) = new_run_dir("host")?;
    let sh = Shell::new()?;
    if let Ok(mode) = std::fs::read_to_string("/proc/sys/kernel/printk_devkmsg") {
        if mode.trim() != "on" {
            println!(
                "note: /proc/sys/kernel/printk_devkmsg is `{}`: the host rate-limits the selftests' begin/end kmsg markers, so a host splat may be attributed to no test (`echo on > /proc/sys/kernel/printk_devkmsg` to fix)",
                mode.trim()
            );
        }
    }
    let dmesg_before = cmd!(sh, "dmesg").quiet().ignore_stderr().read().ok();
    let taint = || {
        std::fs::read_to_string("/proc/sys/kernel/tainted")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let taint_before = taint();
    let start = Instant::now();
    let mut argv: Vec<std::ffi::OsString> =
        selftest_args(args).into_iter().map(Into::into).collect();
    argv.shrink_to_fit();
    let timeout = Duration::from_secs(args.timeout.unwrap_or(900));
    let guest = boot::run_guest(
        &bin.display().to_string(),
        &argv,
        &dir,
        timeout,
        timeout,
        true,
    )?;
    let taint_after = taint();
    let dmesg_after = cmd!(sh, "dmesg").quiet().ignore_stderr().read().ok();
    let new_log = match (&dmesg_before, &dmesg_after) {
        (Some(b), Some(a)) => {
            // Lines after the last line we saw before the run.
            let last = b.lines().last().unwrap_or("");
            match a.rfind(last) {
                Some(pos) if !last.is_empty() => a[pos + last.len()..].to_string(),
                _ => a.clone(),
            }
        }
        _ => String::new(),
    };
    std::fs::write(dir.join("host-dmesg.log"), &new_log).ok();
    let splats = results::scan_splats(&new_log);
    let ktap = results::parse_ktap(&guest.stdout);
    let outcome = match guest.killed {
        Some(_) => Outcome::Hang(format!(
            "the selftests did not finish within {}s and were killed",
            timeout.as_secs()
        )),
        None => results::verdict(&ktap, &splats, taint_before, taint_after, guest.exit),
    };
    let kernel = cmd!(sh, "uname -r").quiet().read().ok();
    let result = RunResult {
        run_id,
        mode: "host".into(),
        kernel,
        kernel_image: None,
        config: "(running kernel)".into(),
        accel: "host".into(),
        accel_reason: "--host: no guest, the running kernel".into(),
        command: std::iter::once(bin.display().to_string())
            .chain(selftest_args(args))
            .collect(),
        guest_exit: guest.exit,
        boot_to_first_ktap_s: None,
        duration_s: start.elapsed().as_secs_f64(),
        taint_before,
        taint_after,
        ktap,
        splats,
        outcome,
        series: None,
    };
    finish(&result, &dir, "stdout.log")?;
    Ok(result)
}

/// The mutants to run: one name, or every patches/mutants/*.patch.
pub fn mutant_names(args: &TestArgs) -> Result<Vec<String>> {
    let dir = util::patches_dir().join("mutants");
    let mut all: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".patch"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    if let Some(name) = &args.mutant {
        if !all.contains(name) {
            bail!(
                "no mutant `{name}`: {} does not exist (available: {})",
                dir.join(format!("{name}.patch")).display(),
                if all.is_empty() {
                    "none".into()
                } else {
                    all.join(", ")
                }
            );
        }
        return Ok(vec![name.clone()]);
    }
    match args.mutants.as_deref() {
        Some("all") if all.is_empty() => bail!("--mutants all: no patches in {}", dir.display()),
        Some("all") => Ok(all),
        Some(other) => {
            bail!("--mutants `{other}`: only `all` is accepted (use --mutant NAME for one)")
        }
        None => Ok(Vec::new()),
    }
}

/// The series version from patches/guest_memfd/series.toml (for branch names).
/// The series (and mutant) a build of the default flow comes from.
pub fn series_tag(mutant: Option<&str>) -> Option<SeriesTag> {
    let dir = util::patches_dir().join("guest_memfd");
    let toml = crate::series::model::SeriesToml::load(&dir.join("series.toml")).ok()?;
    Some(SeriesTag {
        name: toml.name,
        version: toml.version,
        base: toml.base.version,
        mutant: mutant.map(Into::into),
    })
}

/// Runs that build the default series checkout (no --tree, no --kernel)
/// know what they test; others do not claim a series.
fn default_series_tag(args: &TestArgs, mutant: Option<&str>) -> Option<SeriesTag> {
    (args.tree.is_none() && args.kernel.is_none() && args.exec.is_none())
        .then(|| series_tag(mutant))
        .flatten()
}

fn series_version() -> u64 {
    let path = util::patches_dir().join("guest_memfd").join("series.toml");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("version").and_then(|v| v.as_integer()))
        .map(|v| v as u64)
        .unwrap_or(1)
}

/// Which cases killed a mutant (failed, no result, or splat during them),
/// plus run-level reasons.
pub fn killers(result: &RunResult) -> Vec<String> {
    let mut v: Vec<String> = result
        .ktap
        .cases
        .iter()
        .filter(|c| c.status.is_failure())
        .map(|c| c.name.clone())
        .collect();
    for s in &result.splats {
        let who = match &s.test {
            Some(t) => format!("{t} (splat: {})", s.title),
            None => format!("splat in {}: {}", s.phase, s.title),
        };
        if !v.iter().any(|x| x.starts_with(&who)) {
            v.push(who);
        }
    }
    match &result.outcome {
        Outcome::Hang(d) => v.push(format!("hang: {d}")),
        Outcome::Panic(d) => v.push(format!("panic: {d}")),
        Outcome::NoBoot(_) => v.push("kernel did not boot".into()),
        Outcome::Error(d) => v.push(format!("error: {d}")),
        _ => {}
    }
    if v.is_empty() && !result.outcome.is_pass() {
        v.push(result.outcome.headline());
    }
    v
}

fn run_mutants(args: &TestArgs) -> Result<ExitCode> {
    if args.host || args.kernel.is_some() {
        bail!("--mutant/--mutants build and boot a kernel per mutant; they cannot be combined with --host or --kernel");
    }
    let names = mutant_names(args)?;
    let tree = match &args.tree {
        Some(t) => t.clone(),
        None => crate::tree::ensure_default_tree()
            .context("no --tree given and the default tree is not available")?,
    };
    let version = series_version();
    let mut rows: Vec<(String, Result<Vec<String>, String>, bool)> = Vec::new();
    for name in &names {
        println!("\n=== mutant {name}");
        let patch = util::patches_dir()
            .join("mutants")
            .join(format!("{name}.patch"));
        let branch = format!("guest_memfd/v{version}-mutant-{name}");
        if let Err(e) = build::delete_branch_if_exists(&tree, &branch) {
            rows.push((name.clone(), Err(format!("{e:#}")), false));
            continue;
        }
        let applied = crate::series::apply(&crate::series::ApplyRequest {
            series: "guest_memfd".into(),
            tree: tree.clone(),
            extra: vec![patch],
            branch: Some(branch.clone()),
        });
        let applied = match applied {
            Ok(a) => a,
            Err(e) => {
                rows.push((name.clone(), Err(format!("could not apply: {e:#}")), false));
                continue;
            }
        };
        let Some(tip) = applied.commits.iter().rev().find_map(|c| c.commit.clone()) else {
            rows.push((name.clone(), Err("apply created no commit".into()), false));
            continue;
        };
        // The series' scratch worktree and build dir: each mutant build
        // recompiles only what the mutant patch touches.
        let src = match build::scratch_worktree(&tree, "series", &tip) {
            Ok(s) => s,
            Err(e) => {
                rows.push((name.clone(), Err(format!("{e:#}")), false));
                continue;
            }
        };
        println!(
            "mutant {name}: applied on branch {branch}, building {}",
            src.display()
        );
        match run_boot(args, Some(&src), series_tag(Some(name))) {
            Ok(r) => {
                let killed = !r.outcome.is_pass();
                rows.push((name.clone(), Ok(killers(&r)), killed));
            }
            Err(e) => rows.push((name.clone(), Err(format!("{e:#}")), false)),
        }
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(6).max(6);
    println!("\n{:<w$}  {:<9}  killed by", "mutant", "verdict");
    let mut killed = 0;
    for (name, r, k) in &rows {
        match r {
            Ok(by) if *k => {
                killed += 1;
                println!("{name:<w$}  {:<9}  {}", "KILLED", results::brief(by, 3));
            }
            Ok(_) => println!(
                "{name:<w$}  {:<9}  every case passed: a selftest is missing",
                "SURVIVED"
            ),
            Err(e) => println!("{name:<w$}  {:<9}  {e}", "ERROR"),
        }
    }
    let total = rows.len();
    println!(
        "\nmutation score: {killed}/{total} ({:.0}%)",
        100.0 * killed as f64 / total.max(1) as f64
    );
    if let Some(series) = series_tag(None) {
        let report = MutantsReport {
            run_id: String::new(),
            series,
            rows: rows
                .iter()
                .map(|(name, r, k)| {
                    let (verdict, detail) = match r {
                        Ok(by) if *k => ("killed", by.clone()),
                        Ok(_) => ("survived", vec![]),
                        Err(e) => ("error", vec![e.clone()]),
                    };
                    MutantRow {
                        name: name.clone(),
                        verdict: verdict.into(),
                        detail,
                        run_id: None,
                    }
                })
                .collect(),
        };
        let (run_id, dir) = new_run_dir("mutants")?;
        let path = MutantsReport { run_id, ..report }.write(&dir)?;
        println!("files: {}", path.display());
    }
    Ok(if killed == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo xtask bench selftests`: the suite on the host, per-area times from
/// its `# time` diagnostics. The baseline (same run) is `--list`, i.e. the
/// binary's start-up cost.
pub fn bench_selftests() -> Result<ExitCode> {
    let args = TestArgs {
        host: true,
        tree: None,
        config: "gmem".into(),
        kernel: None,
        accel: "host".into(),
        timeout: None,
        filter: None,
        boot_timeout: None,
        case_timeout: None,
        selftests: std::env::var_os("XTASK_SELFTESTS").map(PathBuf::from),
        release: std::env::var_os("XTASK_SELFTESTS").is_none(),
        cpus: 2,
        memory: "2G".into(),
        append: Vec::new(),
        exec: None,
        mutant: None,
        mutants: None,
        install_deps: false,
        reference: None,
    };
    let bin = selftests_binary(&args)?;
    let sh = Shell::new()?;
    let t0 = Instant::now();
    cmd!(sh, "{bin} --list").quiet().ignore_status().output()?;
    let baseline = t0.elapsed();
    let t1 = Instant::now();
    let out = cmd!(sh, "{bin}").quiet().ignore_status().output()?;
    let total = t1.elapsed();
    let ktap = results::parse_ktap(&String::from_utf8_lossy(&out.stdout));
    let mut areas: Vec<(String, u64, usize)> = Vec::new();
    for c in &ktap.cases {
        let area = c.name.split('.').next().unwrap_or(&c.name).to_string();
        let ms = c.duration_ms.unwrap_or(0);
        match areas.iter_mut().find(|a| a.0 == area) {
            Some(a) => {
                a.1 += ms;
                a.2 += 1;
            }
            None => areas.push((area, ms, 1)),
        }
    }
    let (p, f, s, m) = ktap.count();
    println!(
        "selftests on the host ({}): {p} pass, {f} fail, {s} skip, {m} no result",
        bin.display()
    );
    println!(
        "\n{:<16} {:>6} {:>10} {:>10}",
        "area", "cases", "ms", "share"
    );
    let sum: u64 = areas.iter().map(|a| a.1).sum();
    for (area, ms, n) in &areas {
        println!(
            "{area:<16} {n:>6} {ms:>10} {:>9.1}%",
            100.0 * *ms as f64 / sum.max(1) as f64
        );
    }
    println!(
        "\nwhole suite {:.3}s; baseline `--list` {:.3}s; ratio {:.1}",
        total.as_secs_f64(),
        baseline.as_secs_f64(),
        total.as_secs_f64() / baseline.as_secs_f64().max(0.000_001)
    );
    Ok(ExitCode::SUCCESS)
}
