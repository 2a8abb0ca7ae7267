//! Software memory failures through the hwpoison injector
//! (CONFIG_HWPOISON_INJECT, debugfs `hwpoison/`): poison one pfn as a
//! hardware error would (memory_failure()), and unpoison it again.
//!
//! A pfn found from page flags could, in principle, be someone else's page.
//! The injector's filter guards against that: [`Injector::only_files_on`]
//! restricts injection to pages of files on one device (guest_memfd files
//! live on the anonymous inode file system, where nothing else keeps page
//! cache) whose flags match; the kernel refuses any other page without
//! poisoning it (the write succeeds, the page stays clean).

use std::path::{Path, PathBuf};

use crate::harness::case::Stop;
use crate::harness::meminfo;
use crate::kvm::caps::Lack;

const DEBUGFS: &str = "/sys/kernel/debug";

pub struct Injector {
    dir: PathBuf,
}

impl Injector {
    /// The injector; mounts debugfs at its usual place when nothing has it
    /// mounted. Skips where the kernel has no memory failure handling, no
    /// debugfs or no injector.
    pub fn open() -> Result<Injector, Stop> {
        if meminfo::hardware_corrupted_kib()?.is_none() {
            return Err(Stop::lacking(
                Lack::Env("CONFIG_MEMORY_FAILURE".into()),
                "no HardwareCorrupted in /proc/meminfo: the kernel does not handle memory failures",
            ));
        }
        let root = debugfs()?;
        let dir = root.join("hwpoison");
        if !dir.join("corrupt-pfn").exists() {
            return Err(Stop::lacking(
                Lack::Env("CONFIG_HWPOISON_INJECT".into()),
                format!(
                    "no {}/corrupt-pfn (hwpoison_inject not built in or not loaded)",
                    dir.display()
                ),
            ));
        }
        Ok(Injector { dir })
    }

    /// memory_failure() on `pfn`, as the machine check handler would call it
    /// (flagged as simulated, so that unpoison stays allowed).
    pub fn poison(&self, pfn: u64) -> std::io::Result<()> {
        self.write("corrupt-pfn", &pfn.to_string())
    }

    pub fn unpoison(&self, pfn: u64) -> std::io::Result<()> {
        self.write("unpoison-pfn", &pfn.to_string())
    }

    /// Until the guard drops, only pages of files on device `dev` (an
    /// st_dev) whose /proc/kpageflags bits under `mask` equal `value` can
    /// be poisoned; the filter's previous settings come back on drop.
    pub fn only_files_on(&self, dev: u64, mask: u64, value: u64) -> Result<Filter<'_>, Stop> {
        let saved = FILTER_FILES
            .iter()
            .map(|f| self.read(f).map(|v| (*f, v)))
            .collect::<Result<Vec<_>, _>>()?;
        let guard = Filter { inj: self, saved };
        let settings = [
            ("corrupt-filter-dev-major", libc::major(dev).to_string()),
            ("corrupt-filter-dev-minor", libc::minor(dev).to_string()),
            ("corrupt-filter-flags-mask", mask.to_string()),
            ("corrupt-filter-flags-value", value.to_string()),
            ("corrupt-filter-enable", "1".to_string()),
        ];
        for (f, v) in settings {
            self.write(f, &v)
                .map_err(|e| Stop::Fail(format!("write {v} to {}: {e}", self.path(f))))?;
        }
        Ok(guard)
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn read(&self, file: &str) -> Result<String, Stop> {
        std::fs::read_to_string(self.dir.join(file))
            .map(|s| s.trim().to_string())
            .map_err(|e| Stop::Fail(format!("read {}: {e}", self.path(file))))
    }

    fn write(&self, file: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(self.dir.join(file), format!("{value}\n"))
    }
}

/// The filter files [`Injector::only_files_on`] sets, restored in this
/// order with the enable switch last.
const FILTER_FILES: [&str; 5] = [
    "corrupt-filter-dev-major",
    "corrupt-filter-dev-minor",
    "corrupt-filter-flags-mask",
    "corrupt-filter-flags-value",
    "corrupt-filter-enable",
];

/// The injector's filter as [`Injector::only_files_on`] set it.
pub struct Filter<'a> {
    inj: &'a Injector,
    saved: Vec<(&'static str, String)>,
}

impl Drop for Filter<'_> {
    fn drop(&mut self) {
        // Off first, so that no moment has the old switch with new values.
        let _ = self.inj.write("corrupt-filter-enable", "0");
        for (f, v) in &self.saved {
            let _ = self.inj.write(f, v);
        }
    }
}

/// Where debugfs is mounted, mounting it at /sys/kernel/debug if it is not.
pub fn debugfs() -> Result<PathBuf, Stop> {
    if let Some(p) = debugfs_mount()? {
        return Ok(p);
    }
    let lack = |why: String| Stop::lacking(Lack::Env("debugfs".into()), why);
    if !Path::new(DEBUGFS).is_dir() {
        return Err(lack(format!("no {DEBUGFS} (CONFIG_DEBUG_FS off)")));
    }
    // SAFETY: NUL-terminated constant strings; no mount data.
    let r = unsafe {
        libc::mount(
            c"debugfs".as_ptr(),
            c"/sys/kernel/debug".as_ptr(),
            c"debugfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(lack(format!(
            "mount debugfs on {DEBUGFS}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(PathBuf::from(DEBUGFS))
}

/// The first debugfs mount point in /proc/mounts.
fn debugfs_mount() -> Result<Option<PathBuf>, Stop> {
    let text = std::fs::read_to_string("/proc/mounts")
        .map_err(|e| Stop::Fail(format!("read /proc/mounts: {e}")))?;
    Ok(mount_point_of(&text, "debugfs"))
}

fn mount_point_of(mounts: &str, fstype: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_src, dir, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == fstype).then(|| PathBuf::from(dir))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_debugfs_mount() {
        let m = "sysfs /sys sysfs rw 0 0\ndebugfs /sys/kernel/debug debugfs rw 0 0\n";
        assert_eq!(
            mount_point_of(m, "debugfs"),
            Some(PathBuf::from("/sys/kernel/debug"))
        );
        assert_eq!(mount_point_of("sysfs /sys sysfs rw 0 0\n", "debugfs"), None);
    }
}
