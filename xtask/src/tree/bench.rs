//! `cargo xtask bench import`: the tree import against plain `tar x` of
//! the same tarball, measured in the same run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::{debian, fetch_dir, import_tarball, ImportRequest, Imported};

/// The goal: the import may take at most this many times `tar x`.
const GOAL_RATIO: f64 = 1.5;
/// Rounds of each side. On a disk filesystem the outputs of all of them
/// stay until the end (about 4 GB per round for 6.1).
const ROUNDS: usize = 3;

#[derive(Clone, Copy)]
enum Side {
    Tar,
    Import,
}

#[derive(Serialize)]
struct Report {
    tarball: String,
    /// Where both sides wrote, and its filesystem.
    dir: String,
    filesystem: String,
    rounds: usize,
    tar_x_seconds: Vec<f64>,
    import_seconds: Vec<f64>,
    /// user+system CPU seconds (tar and xz together; all import threads).
    tar_x_cpu_seconds: Vec<f64>,
    import_cpu_seconds: Vec<f64>,
    cpu_ratio: f64,
    best_tar_x_seconds: f64,
    best_import_seconds: f64,
    ratio: f64,
    goal_ratio: f64,
    goal_met: bool,
    files: usize,
    tree: String,
    pack_compression: u32,
}

/// user+system CPU time of this process (all threads) or of its waited-for
/// children (and their waited-for children: tar's xz).
fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

/// Where the rounds run: a filesystem and whether outputs can be removed
/// right after each step.
struct Workspace {
    dir: PathBuf,
    fs: String,
    remove_each: bool,
    _tmp: Option<tempfile::TempDir>,
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const EXT4_MAGIC: i64 = 0xEF53;
/// A round's outputs on tmpfs: the tree (1.3 GB) and the repository
/// (2.6 GB), one at a time.
const TMPFS_NEEDED: u64 = 4 << 30;

fn statfs(path: &Path) -> Option<(i64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs writes only the struct it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_type as i64, st.f_bavail as u64 * st.f_bsize as u64))
}

fn fs_name(magic: i64) -> String {
    match magic {
        TMPFS_MAGIC => "tmpfs".into(),
        EXT4_MAGIC => "ext4".into(),
        other => format!("fs type {other:#x}"),
    }
}

/// `--dir` when given; else /dev/shm when it is a tmpfs with room (on a
/// disk filesystem the state left by earlier runs swings both sides by
/// seconds, see below); else target/bench/import.
fn workspace(dir: Option<&Path>) -> Result<Workspace> {
    let (base, tmp) = match dir {
        Some(d) => {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (d.to_path_buf(), true)
        }
        None => match statfs(Path::new("/dev/shm")) {
            Some((TMPFS_MAGIC, free)) if free >= TMPFS_NEEDED => (PathBuf::from("/dev/shm"), true),
            _ => (crate::util::target_dir().join("bench"), false),
        },
    };
    let magic = statfs(&base).map_or(0, |(m, _)| m);
    let (dir, holder) = if tmp {
        let t = tempfile::Builder::new()
            .prefix("xtask-bench-import-")
            .tempdir_in(&base)
            .with_context(|| format!("creating a directory in {}", base.display()))?;
        (t.path().to_path_buf(), Some(t))
    } else {
        let work = base.join("import");
        if work.exists() {
            fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
        }
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        (work, None)
    };
    Ok(Workspace {
        dir,
        fs: fs_name(magic),
        // After 80,000 files are deleted from ext4, its inode allocator
        // skips the recently deleted inodes for minutes, and that work
        // lands on whatever creates files next (measured here: a `tar x`
        // right after removing the previous round's trees took 25-41 s
        // instead of 8 s). tmpfs has no such memory.
        remove_each: magic == TMPFS_MAGIC,
        _tmp: holder,
    })
}

pub fn bench_import(dir: Option<&Path>) -> Result<ExitCode> {
    let level = super::import_compression()?;
    let version = super::default_version()?;
    let tarball = debian::ensure_tarball(&fetch_dir().join("apt"), &version, true)?;
    let space = workspace(dir)?;
    eprintln!(
        "bench import: rounds run in {} ({})",
        space.dir.display(),
        space.fs
    );
    let sh = Shell::new()?;
    // Both sides read the tarball from the page cache.
    fs::read(&tarball.path).with_context(|| format!("reading {}", tarball.path.display()))?;
    let setup = Setup {
        sh: &sh,
        space: &space,
        tarball: &tarball.path,
        version: &version,
        level,
    };
    let rounds = run_rounds(&setup)?;
    // Elsewhere than tmpfs, removed only now (see `workspace`).
    eprintln!("removing {} ...", space.dir.display());
    fs::remove_dir_all(&space.dir).with_context(|| format!("removing {}", space.dir.display()))?;
    let report = report(&setup, rounds)?;
    print_report(&report, &tarball.path, level);
    let json = crate::util::target_dir().join("bench").join("import.json");
    write_json(&json, &report)?;
    println!("  results: {}", json.display());
    Ok(ExitCode::SUCCESS)
}

/// What every round works with.
struct Setup<'a> {
    sh: &'a Shell,
    space: &'a Workspace,
    tarball: &'a Path,
    version: &'a str,
    level: u32,
}

/// Wall and CPU time of one side, a pair per round.
#[derive(Default)]
struct Samples {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Samples {
    fn best_wall(&self) -> Duration {
        self.wall.iter().min().copied().unwrap_or_default()
    }

    fn best_cpu(&self) -> Duration {
        self.cpu.iter().min().copied().unwrap_or_default()
    }
}

/// The times of both sides and the last import, for its file count and tree.
struct Rounds {
    tar: Samples,
    import: Samples,
    last: Option<Imported>,
}

fn run_rounds(setup: &Setup) -> Result<Rounds> {
    let mut rounds = Rounds {
        tar: Samples::default(),
        import: Samples::default(),
        last: None,
    };
    for round in 1..=ROUNDS {
        // Alternate which side goes first, so neither always inherits the
        // other's writeback or page-cache reclaim.
        let sides = if round % 2 == 1 {
            [Side::Tar, Side::Import]
        } else {
            [Side::Import, Side::Tar]
        };
        for side in sides {
            sync(setup.sh);
            match side {
                Side::Tar => tar_round(setup, round, &mut rounds.tar)?,
                Side::Import => {
                    rounds.last = Some(import_round(setup, round, &mut rounds.import)?);
                }
            }
        }
    }
    Ok(rounds)
}

fn tar_round(setup: &Setup, round: usize, samples: &mut Samples) -> Result<()> {
    let sh = setup.sh;
    let path = setup.tarball;
    let tar_dir = setup.space.dir.join(format!("tar-{round}"));
    fs::create_dir_all(&tar_dir)?;
    eprintln!("round {round}/{ROUNDS}: tar x ...");
    let cpu = cpu_time(libc::RUSAGE_CHILDREN);
    let start = Instant::now();
    cmd!(sh, "tar -xf {path} -C {tar_dir}")
        .quiet()
        .run()
        .context("running tar x")?;
    samples.wall.push(start.elapsed());
    samples
        .cpu
        .push(cpu_time(libc::RUSAGE_CHILDREN).saturating_sub(cpu));
    if setup.space.remove_each {
        fs::remove_dir_all(&tar_dir)?;
    }
    Ok(())
}

fn import_round(setup: &Setup, round: usize, samples: &mut Samples) -> Result<Imported> {
    let dest = setup.space.dir.join(format!("repo-{round}"));
    eprintln!("round {round}/{ROUNDS}: import ...");
    let cpu = cpu_time(libc::RUSAGE_SELF);
    let start = Instant::now();
    let imported = import_tarball(&ImportRequest {
        tarball: setup.tarball,
        dest: &dest,
        version: Some(setup.version),
        origin: "bench import".into(),
        source: "bench".into(),
        compression: setup.level,
        progress: false,
        expected_tree: None,
    })?;
    samples.wall.push(start.elapsed());
    samples
        .cpu
        .push(cpu_time(libc::RUSAGE_SELF).saturating_sub(cpu));
    check_clean(setup.sh, &dest)?;
    if setup.space.remove_each {
        fs::remove_dir_all(&dest)?;
    }
    Ok(imported)
}

fn ratio_of(import: Duration, tar: Duration) -> f64 {
    import.as_secs_f64() / tar.as_secs_f64().max(1e-9)
}

fn report(setup: &Setup, rounds: Rounds) -> Result<Report> {
    let Some(imported) = rounds.last else {
        bail!("no rounds ran")
    };
    let best_tar = rounds.tar.best_wall();
    let best_import = rounds.import.best_wall();
    let ratio = ratio_of(best_import, best_tar);
    let cpu_ratio = ratio_of(rounds.import.best_cpu(), rounds.tar.best_cpu());
    let all = |v: &[Duration]| v.iter().copied().map(secs).collect();
    Ok(Report {
        tarball: setup.tarball.display().to_string(),
        dir: setup.space.dir.display().to_string(),
        filesystem: setup.space.fs.clone(),
        rounds: ROUNDS,
        tar_x_seconds: all(&rounds.tar.wall),
        import_seconds: all(&rounds.import.wall),
        tar_x_cpu_seconds: all(&rounds.tar.cpu),
        import_cpu_seconds: all(&rounds.import.cpu),
        cpu_ratio: (cpu_ratio * 100.0).round() / 100.0,
        best_tar_x_seconds: secs(best_tar),
        best_import_seconds: secs(best_import),
        ratio: (ratio * 100.0).round() / 100.0,
        goal_ratio: GOAL_RATIO,
        goal_met: ratio <= GOAL_RATIO,
        files: imported.files,
        tree: imported.tree.to_string(),
        pack_compression: setup.level,
    })
}

fn print_report(report: &Report, tarball: &Path, level: u32) {
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "bench import: {} ({} entries, tree {}), on {}",
        name_of(tarball),
        report.files,
        report.tree,
        report.filesystem
    );
    println!(
        "  {:<20} {:>9}  {:<16} cpu (user+sys) per round",
        "step", "best wall", "wall per round"
    );
    println!(
        "  {:<20} {:>8.2}s  {:<16} {}",
        "tar x (baseline)",
        report.best_tar_x_seconds,
        list(&report.tar_x_seconds),
        list(&report.tar_x_cpu_seconds)
    );
    println!(
        "  {:<20} {:>8.2}s  {:<16} {}",
        format!("xtask import (z{level})"),
        report.best_import_seconds,
        list(&report.import_seconds),
        list(&report.import_cpu_seconds)
    );
    println!("  cpu ratio import / tar x: {:.2}", report.cpu_ratio);
    println!(
        "  ratio import / tar x: {:.2} (goal <= {GOAL_RATIO}): {}",
        report.ratio,
        if report.goal_met { "met" } else { "NOT met" }
    );
}

/// Write `value` as JSON to `path`, creating its directory (target/bench
/// does not exist when the rounds ran in /dev/shm).
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Flush dirty pages between runs so one run's writeback does not slow
/// the next one down.
fn sync(sh: &Shell) {
    let _ = cmd!(sh, "sync").quiet().run();
}

/// The import must be a clean checkout, or its time means nothing.
fn check_clean(sh: &Shell, repo: &Path) -> Result<()> {
    let _cd = sh.push_dir(repo);
    let status = cmd!(sh, "git status --porcelain")
        .quiet()
        .read()
        .context("running git status")?;
    if !status.is_empty() {
        let sample: Vec<&str> = status.lines().take(10).collect();
        bail!(
            "the imported tree at {} is not clean:\n{}",
            repo.display(),
            sample.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_go_to_a_directory_that_does_not_exist_yet() {
        let tmp = tempfile::tempdir().unwrap();
        let json = tmp.path().join("target/bench/import.json");
        write_json(&json, &serde_json::json!({"ratio": 1.5})).unwrap();
        let text = fs::read_to_string(&json).unwrap();
        assert!(text.contains("\"ratio\": 1.5"), "{text}");
    }
}
