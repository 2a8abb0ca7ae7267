//! The upstream reference lane: an upstream kernel (by default the one
//! pinned as `[reference]` in patches/guest_memfd/series.toml), fetched as
//! `tree fetch` does, built **without** the series from the same fragments
//! (plus the version's `kconfigs/since/` additions) and survivor check, then
//! booted and tested like any lane. Upstream is the definition of correct;
//! this is the kernel the series is compared with (`cargo xtask matrix`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::build::{self, Built};
use crate::kconfig;
use crate::test::TestArgs;
use crate::tree::{self, FetchRequest, Source};

/// A built reference kernel.
#[derive(Debug, Clone)]
pub struct ReferenceKernel {
    pub version: String,
    pub tree: PathBuf,
    pub built: Built,
}

/// The reference version: `requested`, else series.toml's `[reference]`.
pub fn version(requested: Option<&str>) -> Result<String> {
    if let Some(v) = requested {
        tree::validate_version(v)?;
        return Ok(v.to_string());
    }
    match tree::pinned_reference()? {
        Some((v, _)) => Ok(v),
        None => anyhow::bail!(
            "no reference version: patches/guest_memfd/series.toml has no [reference] table \
             (add `[reference]` with `version = \"6.12.107\"`) and none was given"
        ),
    }
}

/// The table of patches/guest_memfd.expect.toml an upstream `version` is
/// judged against, `upstream-MAJOR.MINOR`, when the file has one; without
/// it the run's skips are not checked (and it says so).
pub fn expect_kind(version: &str) -> Result<Option<String>> {
    let major_minor: Vec<&str> = version.split('.').take(2).collect();
    let kind = format!("upstream-{}", major_minor.join("."));
    let path = crate::results::expect::path_for(
        &crate::util::patches_dir(),
        crate::series::DEFAULT_SERIES,
    );
    let all = crate::results::expect::Expectations::load(&path)?;
    if all.kinds.contains_key(&kind) {
        Ok(Some(kind))
    } else {
        println!(
            "expect: {} has no [{kind}] table: the linux {version} lane's skips are not checked",
            path.display()
        );
        Ok(None)
    }
}

/// Fetches (or reuses) the upstream tree of `version` and builds it with
/// `config` (fragment names, base first). The build directory sits under
/// `$XTASK_KERNEL_DIR/kbuild/` like every other, so rebuilds are incremental.
pub fn build(version: &str, config: &str, jobs: Option<usize>) -> Result<ReferenceKernel> {
    let fragments = kconfig::fragment_list(config)?;
    println!("reference: linux {version} (upstream, without the series)");
    let fetched = tree::fetch(&FetchRequest {
        source: Source::Debian,
        version: Some(version.to_string()),
        dir: None,
        progress: true,
    })
    .with_context(|| format!("fetching the reference tree linux {version}"))?;
    println!(
        "reference: {} linux {} at {} (tree {})",
        if fetched.reused { "reused" } else { "imported" },
        fetched.version,
        fetched.path.display(),
        fetched.tree
    );
    let built = build::build_kernel("reference kernel", &fetched.path, &fragments, jobs)?;
    Ok(ReferenceKernel {
        version: version.to_string(),
        tree: fetched.path,
        built,
    })
}

/// `cargo xtask test --reference [VERSION]`: build the reference and run
/// the suite on it exactly as the default lane runs on 6.1 + series.
pub fn run_test(args: &TestArgs, requested: Option<&str>) -> Result<ExitCode> {
    if args.tree.is_some() || args.kernel.is_some() || args.host {
        anyhow::bail!(
            "--reference builds the pinned upstream tree itself; it cannot be combined with --tree, --kernel or --host"
        );
    }
    let version = version(requested)?;
    let reference = build(&version, &args.config, None)?;
    let mut args = args.clone();
    if args.expect.is_none() {
        args.expect = expect_kind(&version)?;
    }
    let result = crate::test::run_boot(&args, Some(&reference.tree), None)?;
    println!(
        "reference lane: linux {version}: {}",
        result.outcome.headline()
    );
    Ok(if result.outcome.is_pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
