//! `cargo xtask test`: build, boot, run the selftests, judge, report.
//! `mutants` runs the same flow once per mutant of the series.

mod bench;
mod mutants;

pub use bench::bench_selftests;
pub(crate) use mutants::test_mutant;
pub use mutants::{classify, mutant_names};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser};
use xshell::{cmd, Shell};

use crate::boot::{self, Accel, AccelChoice, AccelRequest, Killed, VngSpec};
use crate::build;
use crate::kconfig;
use crate::results::expect::{self, Expectations, KernelExpect};
use crate::results::judge::{judge, Boot, Deadline, Evidence};
use crate::results::{self, RunResult, SeriesTag};
use crate::util;

#[derive(Debug, Clone, Args)]
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
    /// The guest's accelerator (the choice and the reason are always
    /// printed).
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,
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
    /// Kill the guest when the suite, once started, prints nothing for this
    /// many seconds, and report a hang (default: only the whole-run
    /// timeout). Must exceed the longest case; `mutate run` sets it from
    /// the unmutated series' suite time.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: Option<u64>,
    /// The selftests stop at the first failing case (KTAP `Bail out!`);
    /// the rest of the plan is reported without results.
    #[arg(long)]
    pub fail_fast: bool,
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
    /// Give the guest N NUMA nodes (vng --numa): --memory split evenly,
    /// the vCPUs spread over them. The kernel needs CONFIG_NUMA (the `numa`
    /// fragment: `--config gmem,numa`).
    #[arg(long, value_name = "N", conflicts_with = "host")]
    pub numa: Option<u32>,
    /// Run a shell command in the guest instead of the selftests (boot check).
    #[arg(long, conflicts_with_all = ["host", "mutant", "all_mutants"])]
    pub exec: Option<String>,
    /// Apply patches/mutants/NAME.patch on top of the series, build, boot,
    /// run; succeeds only when the suite fails (the mutant is killed).
    #[arg(long, conflicts_with = "all_mutants")]
    pub mutant: Option<String>,
    /// Every patch in patches/mutants/ (but those equivalent.toml lists),
    /// each as `--mutant NAME` would run it.
    #[arg(long)]
    pub all_mutants: bool,
    /// Install missing host tools first (`cargo xtask doctor --install`).
    #[arg(long)]
    pub install_deps: bool,
    /// Judge the run against this table of the series' expectation file
    /// (patches/<series>.expect.toml), e.g. `upstream-6.12` for a reference
    /// kernel; builds of the series use `series` without being told.
    #[arg(long, value_name = "KIND")]
    pub expect: Option<String>,
    /// Test an upstream kernel built without the series: VERSION, or
    /// series.toml's `[reference]` when none is given.
    #[arg(long, value_name = "VERSION", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["host", "tree", "kernel", "mutant", "all_mutants"])]
    pub reference: Option<String>,
}

impl TestArgs {
    /// The arguments `cargo xtask test ARGS...` would get, parsed by the
    /// real CLI: callers that run tests on their own (matrix lanes, the
    /// campaign, benchmarks) name only what they set, and every other field
    /// has `test`'s default.
    pub fn from_cli<S: AsRef<str>>(args: &[S]) -> Result<TestArgs> {
        let argv: Vec<&str> = ["cargo xtask", "test"]
            .into_iter()
            .chain(args.iter().map(AsRef::as_ref))
            .collect();
        let cli = crate::cli::Cli::try_parse_from(&argv)
            .with_context(|| format!("building the test arguments {}", argv[1..].join(" ")))?;
        match cli.command {
            crate::cli::Command::Test(args) => Ok(args),
            _ => unreachable!("parsed a `test` command line"),
        }
    }
}

pub fn run(args: TestArgs) -> Result<ExitCode> {
    if args.install_deps {
        let code = crate::doctor::run(crate::doctor::DoctorArgs { install: true })?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    // Refuse a --numa the guest cannot be given before any build starts.
    numa_layout(&args)?;
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
    if args.mutant.is_some() || args.all_mutants {
        return mutants::run(&args);
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

/// The vng `--numa` values `--numa N` asks for (none without it).
fn numa_layout(args: &TestArgs) -> Result<Vec<String>> {
    match args.numa {
        Some(n) => boot::numa_layout(n, args.cpus, &args.memory),
        None => Ok(Vec::new()),
    }
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
    if args.fail_fast {
        v.push("--fail-fast".into());
    }
    v
}

/// `target/results/<run-id>/`, and the `latest` symlink pointing at it.
pub(crate) fn new_run_dir(tag: &str) -> Result<(String, PathBuf)> {
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

/// The kernel a boot uses: `--kernel` as given, else built from the tree
/// (`tree_override`, `--tree`, or the series checkout). Returns the image
/// and, for builds, the kernel release.
pub fn kernel_image(
    args: &TestArgs,
    tree_override: Option<&Path>,
    fragments: &[String],
) -> Result<(PathBuf, Option<String>)> {
    if let Some(k) = &args.kernel {
        let k = k
            .canonicalize()
            .with_context(|| format!("--kernel {} does not exist", k.display()))?;
        return Ok((k, None));
    }
    let tree = match tree_override.or(args.tree.as_deref()) {
        Some(t) => t.to_path_buf(),
        None => crate::series::checkout_default_tree(&crate::series::Purpose::Default)?.worktree,
    };
    let built = build::build_kernel("kernel", &tree, fragments, None)?;
    Ok((built.image, built.kernel_release))
}

/// The expectation table a run is judged against: `--expect KIND`, or
/// `series` for a build of the series; None (skips are not checked) for
/// anything else or a build without the fragments the table needs.
/// `fragments` is None when the kernel's are unknown (`--host`).
pub fn expectation(
    args: &TestArgs,
    series: Option<&SeriesTag>,
    fragments: Option<&[String]>,
) -> Result<Option<KernelExpect>> {
    let name = series
        .map(|t| t.name.as_str())
        .unwrap_or(crate::series::DEFAULT_SERIES);
    let kind = match (&args.expect, series) {
        (Some(k), _) => k.as_str(),
        (None, Some(_)) => "series",
        (None, None) => return Ok(None),
    };
    let path = expect::path_for(&util::patches_dir(), name);
    let all = Expectations::load(&path)?;
    let found = match fragments {
        Some(f) => all.for_build(kind, f),
        None => all.kinds.get(kind),
    };
    let fragments = fragments.unwrap_or_default();
    match found {
        Some(e) => Ok(Some(e.clone())),
        None if all.kinds.contains_key(kind) => {
            if args.expect.is_some() {
                bail!(
                    "--expect {kind}: [{kind}] in {} needs the fragments {:?}, this build has {:?}",
                    path.display(),
                    all.kinds[kind].fragments,
                    fragments
                );
            }
            println!(
                "expect: [{kind}] of {} needs the fragments {:?}; this build ({}) is judged without it: skips are not checked",
                path.display(),
                all.kinds[kind].fragments,
                fragments.join("+")
            );
            Ok(None)
        }
        None => bail!(
            "no [{kind}] table in {} (it has: {})",
            path.display(),
            all.kinds.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Build (unless `--kernel`), boot under vng, run the selftests (or
/// `--exec`) inside, judge.
///
/// `series` names what the kernel was built from when the caller knows it
/// (the default flow and mutants); it is recorded in results.json.
pub fn run_boot(
    args: &TestArgs,
    tree_override: Option<&Path>,
    series: Option<SeriesTag>,
) -> Result<RunResult> {
    let fragments = kconfig::fragment_list(&args.config)?;
    let (image, release) = kernel_image(args, tree_override, &fragments)?;
    boot_image(args, &image, release, series, &fragments)
}

/// Boot `image` and judge what comes back: prepare the run directory and
/// the vng command, boot, read the guest's files, judge, write the results.
pub fn boot_image(
    args: &TestArgs,
    image: &Path,
    release: Option<String>,
    series: Option<SeriesTag>,
    fragments: &[String],
) -> Result<RunResult> {
    let expect = if args.exec.is_some() {
        None
    } else {
        expectation(args, series.as_ref(), Some(fragments))?
    };
    if let Some(e) = &expect {
        println!("expect: judged against [{}] ({})", e.kind, e.description);
    }
    let plan = prepare_guest(args, image, fragments)?;
    let start = Instant::now();
    let guest = boot::run_guest(
        "vng",
        &plan.vng_args,
        &plan.dir,
        plan.boot_timeout,
        plan.run_timeout,
        args.stall_timeout.map(Duration::from_secs),
        true,
    )?;

    let got = read_guest_run(&plan.dir, &guest, args.exec.is_some());
    let judgement = judge(&Evidence {
        boot: &got.boot,
        ktap: &got.ktap,
        splats: &got.splats,
        taint_before: got.taint_before,
        taint_after: got.taint_after,
        expect: expect.as_ref(),
        numa_nodes: args.numa,
        exec: args.exec.is_some(),
    });
    let mut result = RunResult {
        run_id: plan.run_id,
        mode: "vng".into(),
        kernel: got.uname.or(release),
        kernel_image: Some(image.to_path_buf()),
        config: plan.config_label,
        accel: Some(plan.accel.accel),
        accel_reason: plan.accel.reason,
        command: plan.command,
        guest_exit: got.boot.exit,
        boot_to_first_ktap_s: guest.first_ktap_s,
        duration_s: start.elapsed().as_secs_f64(),
        taint_before: got.taint_before,
        taint_after: got.taint_after,
        ktap: got.ktap,
        splats: got.splats,
        series,
        filter: args.filter.clone(),
        expect: expect.map(|e| e.kind),
        numa: args.numa,
        image_sha256: util::sha256_file(image).ok(),
        selftests_sha256: plan.selftests_sha256,
        ..Default::default()
    };
    result.set_judgement(judgement);
    finish(&result, &plan.dir, boot::files::GUEST_LOG)?;
    if let Some(up) = guest.up_s {
        println!("guest userspace up after {up:.1}s");
    }
    Ok(result)
}

/// Everything a boot needs, decided before it starts.
struct GuestPlan {
    run_id: String,
    dir: PathBuf,
    accel: AccelChoice,
    /// The fragment set the kernel was built from, as results name it.
    config_label: String,
    /// The vng command line: `command` for results.json, `vng_args` to run.
    command: Vec<String>,
    vng_args: Vec<std::ffi::OsString>,
    boot_timeout: Duration,
    run_timeout: Duration,
    /// Of the selftests binary the guest runs (none for `--exec`).
    selftests_sha256: Option<String>,
}

/// Picks the accelerator, makes the run directory, writes the guest script
/// and the vng command line into it.
fn prepare_guest(args: &TestArgs, image: &Path, fragments: &[String]) -> Result<GuestPlan> {
    let (program, program_args) = match &args.exec {
        Some(e) => (PathBuf::from("/bin/sh"), vec!["-c".to_string(), e.clone()]),
        None => (selftests_binary(args)?, selftest_args(args)),
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
    let accel: AccelChoice = boot::choose_accel(args.accel, image)?;
    println!("accel: {} — {}", accel.accel.name(), accel.reason);
    let tag = config_label.split(' ').next().unwrap_or("kernel");
    let (run_id, dir) = new_run_dir(&format!("{tag}-{}", accel.accel.name()))?;
    let script = dir.join(boot::files::GUEST_SCRIPT);
    let text = boot::guest_script(&dir, &program, &program_args);
    std::fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
    let mut append = boot::default_append();
    append.extend(args.append.iter().cloned());
    let spec = VngSpec {
        image: image.to_path_buf(),
        accel: accel.accel,
        cpus: args.cpus,
        memory: args.memory.clone(),
        rwdir: dir.clone(),
        exec: format!("sh {}", util::sh_quote(&script.display().to_string())),
        append,
        numa: numa_layout(args)?,
    };
    let vng_args = boot::vng_args(&spec);
    let mut command = vec!["vng".to_string()];
    command.extend(vng_args.iter().map(|a| a.to_string_lossy().into_owned()));
    std::fs::write(dir.join(boot::files::COMMAND), util::shell_words(&command)).ok();
    let boot_timeout = Duration::from_secs(args.boot_timeout.unwrap_or(match accel.accel {
        Accel::Tcg => 180,
        Accel::Kvm => 60,
    }));
    let run_timeout = Duration::from_secs(args.timeout.unwrap_or(900));
    println!(
        "boot: {} (boot timeout {}s, run timeout {}s)",
        util::shell_words(&command),
        boot_timeout.as_secs(),
        run_timeout.as_secs()
    );
    Ok(GuestPlan {
        run_id,
        dir,
        accel,
        config_label,
        command,
        vng_args,
        boot_timeout,
        run_timeout,
        selftests_sha256: match &args.exec {
            Some(_) => None,
            None => util::sha256_file(&program).ok(),
        },
    })
}

/// What a guest run left in its run directory, read back.
struct GuestRunFiles {
    boot: Boot,
    ktap: results::Ktap,
    splats: Vec<results::Splat>,
    taint_before: Option<u64>,
    taint_after: Option<u64>,
    uname: Option<String>,
}

/// Reads the guest script's files and vng's captures (`exec`: no KTAP).
fn read_guest_run(dir: &Path, guest: &boot::GuestRun, exec: bool) -> GuestRunFiles {
    // The kernel log: dmesg from the guest when it got that far (complete
    // and in order with the kmsg markers), else the console capture.
    let files = boot::GuestArtifacts::read(dir);
    let dmesg = files.dmesg;
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
    let ktap_text = files
        .ktap_log
        .or_else(|| {
            guest
                .stdout
                .contains("KTAP version 1")
                .then(|| guest.stdout.clone())
        })
        .unwrap_or_else(|| guest.console.clone());
    let ktap = if exec {
        results::Ktap {
            version_seen: true,
            ..Default::default()
        }
    } else {
        results::parse_ktap(&ktap_text)
    };
    let boot = Boot {
        killed: guest.killed.as_ref().map(|k| match k {
            Killed::BootTimeout(s) => Deadline::Boot(*s),
            Killed::RunTimeout(s) => Deadline::Run(*s),
            Killed::Stalled(s) => Deadline::Stall(*s),
        }),
        userspace_up: guest.up_s.is_some(),
        panic_line: guest
            .console
            .lines()
            .map(results::strip_kmsg_prefix)
            .find(|l| l.starts_with("Kernel panic - not syncing"))
            .map(str::to_string),
        // The exit status the guest script recorded; vng's own status is
        // only meaningful when virtio-serial script I/O worked.
        exit: files.exit_code,
        vng_exit: guest.exit,
        console_tail: util::tail_lines(&guest.console, 15),
    };
    GuestRunFiles {
        boot,
        ktap,
        splats,
        taint_before: files.taint_before,
        taint_after: files.taint_after,
        uname: files.uname,
    }
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
        args.stall_timeout.map(Duration::from_secs),
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
    let expect = match &args.expect {
        Some(_) => expectation(args, None, None)?,
        None => None,
    };
    let judgement = judge(&Evidence {
        boot: &Boot {
            killed: guest.killed.as_ref().map(|k| match k {
                Killed::Stalled(s) => Deadline::Stall(*s),
                _ => Deadline::Run(timeout.as_secs()),
            }),
            userspace_up: true,
            panic_line: None,
            exit: guest.exit,
            vng_exit: None,
            console_tail: String::new(),
        },
        ktap: &ktap,
        splats: &splats,
        taint_before,
        taint_after,
        expect: expect.as_ref(),
        numa_nodes: None,
        exec: false,
    });
    let kernel = cmd!(sh, "uname -r").quiet().read().ok();
    let mut result = RunResult {
        run_id,
        mode: "host".into(),
        kernel,
        kernel_image: None,
        config: "(running kernel)".into(),
        accel: None,
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
        filter: args.filter.clone(),
        expect: expect.map(|e| e.kind),
        image_sha256: Some(util::host_kernel_key()),
        selftests_sha256: util::sha256_file(&bin).ok(),
        ..Default::default()
    };
    result.set_judgement(judgement);
    finish(&result, &dir, boot::files::STDOUT_LOG)?;
    Ok(result)
}

/// The series (and mutant) a build of the default flow comes from.
pub fn series_tag(mutant: Option<&str>) -> Option<SeriesTag> {
    let dir = util::patches_dir().join(crate::series::DEFAULT_SERIES);
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
