//! `cargo xtask bench build`: the kernel build's cold, no-op and one-file
//! times, and the upstream reference's cold build beside them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{configure, count_objects, fmt_duration, make_bzimage, plan, BuildPlan, Built};
use crate::kconfig;
use crate::util;

/// `cargo xtask bench build`: cold build (ccache disabled, fresh directory),
/// no-op rebuild, rebuild after touching virt/kvm/kvm_main.c. The tree is
/// $XTASK_TREE or the default tree; the config is base+gmem, or
/// $XTASK_BENCH_CONFIG.
pub fn bench_build() -> Result<ExitCode> {
    let tree = match std::env::var_os("XTASK_TREE") {
        Some(t) => PathBuf::from(t),
        // The default config needs the series (gmem.config names options it
        // adds): bench what `cargo xtask test` builds, the series checkout.
        None => crate::series::checkout_default_tree(&crate::series::Purpose::Default)
            .map(|c| c.worktree)
            .context("set XTASK_TREE=/path/to/linux, or make the default series checkout work")?,
    };
    let spec = std::env::var("XTASK_BENCH_CONFIG").unwrap_or_else(|_| "gmem".into());
    let fragments = kconfig::fragment_list(&spec)?;
    let p = fresh_plan(&tree, &fragments, &fragments.join("+"))?;
    println!(
        "bench build: tree {}, config {}, -j{}, ccache off, fresh {}",
        p.tree.display(),
        fragments.join("+"),
        p.jobs,
        p.dir.display()
    );
    println!("load average now: {}", load_average());
    configure(&p)?;
    let cold = make_bzimage(&p)?;
    let objects = count_objects(&p.dir);
    println!(
        "cold build: {} ({} objects, {} CPU)",
        fmt_duration(cold.duration),
        objects,
        fmt_duration(cold.cpu)
    );
    let noop = make_bzimage(&p)?;
    println!("no-op rebuild: {}", fmt_duration(noop.duration));
    let file = p.tree.join("virt/kvm/kvm_main.c");
    let f = std::fs::File::options()
        .append(true)
        .open(&file)
        .with_context(|| format!("opening {}", file.display()))?;
    let old = f.metadata()?.modified()?;
    f.set_modified(std::time::SystemTime::now())?;
    let touched = make_bzimage(&p);
    // Put the mtime back so the user's tree looks untouched.
    f.set_modified(old).ok();
    let touched = touched?;
    println!(
        "rebuild after touching virt/kvm/kvm_main.c: {} ({} objects compiled)",
        fmt_duration(touched.duration),
        touched.compiled
    );
    let c = cold.duration.as_secs_f64().max(0.001);
    println!(
        "\n{:<34} {:>10} {:>12} {:>10}",
        "step", "time", "vs cold", "goal"
    );
    println!(
        "{:<34} {:>10} {:>12} {:>10}",
        "cold build",
        fmt_duration(cold.duration),
        "1.000",
        "<= 15m"
    );
    println!(
        "{:<34} {:>10} {:>12.4} {:>10}",
        "no-op rebuild",
        fmt_duration(noop.duration),
        noop.duration.as_secs_f64() / c,
        "<= 20s"
    );
    println!(
        "{:<34} {:>10} {:>12.4} {:>10}",
        "touch virt/kvm/kvm_main.c",
        fmt_duration(touched.duration),
        touched.duration.as_secs_f64() / c,
        ""
    );
    println!("objects: {objects}");
    bench_reference_cold(&fragments, &cold, objects)?;
    Ok(ExitCode::SUCCESS)
}

/// The upstream reference's cold build (same fragments, plus its
/// `kconfigs/since/` additions; ccache off, fresh directory) beside the
/// 6.1 cold build just measured. `XTASK_BENCH_REFERENCE=none` leaves it
/// out; `=VERSION` picks another reference than series.toml's.
fn bench_reference_cold(fragments: &[String], base: &Built, base_objects: usize) -> Result<()> {
    let requested = std::env::var("XTASK_BENCH_REFERENCE").ok();
    if requested.as_deref() == Some("none") {
        println!("reference cold build: left out (XTASK_BENCH_REFERENCE=none)");
        return Ok(());
    }
    let version = crate::reference::version(requested.as_deref().filter(|v| !v.is_empty()))?;
    let fetched = crate::tree::fetch(&crate::tree::FetchRequest {
        source: crate::tree::Source::Debian,
        version: Some(version.clone()),
        dir: None,
        progress: true,
    })?;
    let p = fresh_plan(
        &fetched.path,
        fragments,
        &format!("ref-{version}/{}", fragments.join("+")),
    )?;
    println!(
        "\nbench build: reference linux {version}, tree {}, -j{}, ccache off, fresh {}",
        p.tree.display(),
        p.jobs,
        p.dir.display()
    );
    configure(&p)?;
    let cold = make_bzimage(&p)?;
    let objects = count_objects(&p.dir);
    println!("load average now: {}", load_average());
    let ratio = |a: std::time::Duration, b: std::time::Duration| {
        a.as_secs_f64() / b.as_secs_f64().max(0.001)
    };
    println!(
        "\n{:<26} {:>9} {:>9} {:>8} {:>11} {:>10} {:>7}",
        "cold build", "wall", "cpu", "objects", "wall vs 6.1", "cpu vs 6.1", "goal"
    );
    println!(
        "{:<26} {:>9} {:>9} {:>8} {:>11} {:>10} {:>7}",
        "6.1 + series",
        fmt_duration(base.duration),
        fmt_duration(base.cpu),
        base_objects,
        "1.000",
        "1.000",
        ""
    );
    println!(
        "{:<26} {:>9} {:>9} {:>8} {:>11.3} {:>10.3} {:>7}",
        format!("{version} (reference)"),
        fmt_duration(cold.duration),
        fmt_duration(cold.cpu),
        objects,
        ratio(cold.duration, base.duration),
        ratio(cold.cpu, base.cpu),
        "<= 1.5"
    );
    // CPU time moves far less with other work on the machine than wall
    // time does, so it is the ratio to trust when the load changed.
    println!(
        "(cpu = user + system time of make and its children; wall time depends on the machine's load)"
    );
    Ok(())
}

/// The 1-, 5- and 15-minute load averages, as /proc/loadavg has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A build of `tree` without ccache in an empty `kbuild/bench/<dir>`
/// (the harness's own directory, emptied if an earlier bench left it).
fn fresh_plan(tree: &Path, fragments: &[String], dir: &str) -> Result<BuildPlan> {
    let mut p = plan(tree, fragments, None, false)?;
    p.dir = util::kernel_work_dir()
        .join("kbuild")
        .join("bench")
        .join(dir);
    if p.dir.exists() {
        std::fs::remove_dir_all(&p.dir)
            .with_context(|| format!("removing the old bench dir {}", p.dir.display()))?;
    }
    Ok(p)
}
