//! What a test case is, the context it runs with, and assertion helpers.

use std::fmt::Display;
use std::time::Duration;

use crate::harness::isolate::Reporter;
use crate::kvm::caps::{AccessMode, Caps, Lack, Need, VmCaps};
use crate::kvm::{ename, errno_name, GmemFile, SysResult, Vm, VmType};

/// Why a case stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Fail(String),
    /// A skip, built only by [`Stop::lacking`].
    Skip(SkipReason),
}

/// A skip reason that names what is missing in the machine-readable form
/// (`lacks TOKEN: why`). Its field is private so that no case can skip with
/// free text, which no judge could check against what the kernel lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipReason(String);

impl SkipReason {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Stop {
    /// Skip because `lack` is missing; `why` is the human explanation.
    pub fn lacking(lack: Lack, why: impl Display) -> Stop {
        Stop::Skip(SkipReason(lack.skip_reason(&why.to_string())))
    }
}

pub type TestResult = Result<(), Stop>;

/// A registered case: one function with a descriptive name, its area and
/// what it needs. Every case runs once per VM type.
pub struct Case {
    pub area: &'static str,
    pub name: &'static str,
    pub needs: &'static [Need],
    pub run: fn(&Tx) -> TestResult,
}

/// Declares a [`Case`] for the function `$run` of the calling module: the
/// area is the module's name and the case's name is the function's, so
/// neither is written twice. `needs` lists what the case requires (the
/// runner skips it, naming the lack, where the VM type does not offer it).
///
/// ```
/// use selftests::case;
/// use selftests::harness::case::{Case, TestResult, Tx};
/// use selftests::kvm::caps::Need;
///
/// fn each_flag_bit(_tx: &Tx) -> TestResult {
///     Ok(())
/// }
///
/// const CASES: &[Case] = &[case!(each_flag_bit, needs: &[Need::GmemCreate])];
/// assert_eq!(CASES[0].name, "each_flag_bit");
/// ```
#[macro_export]
macro_rules! case {
    ($run:ident $(,)?) => {
        $crate::case!($run, needs: &[])
    };
    ($run:ident, needs: $needs:expr $(,)?) => {
        $crate::harness::case::Case {
            area: $crate::harness::case::last_path_segment(module_path!()),
            name: stringify!($run),
            needs: $needs,
            run: $run,
        }
    };
}

/// The text after the last `::` of a module path (`a::b::bind` -> `bind`),
/// evaluated at compile time for [`case!`].
pub const fn last_path_segment(path: &'static str) -> &'static str {
    let bytes = path.as_bytes();
    let mut start = bytes.len();
    while start > 0 && bytes[start - 1] != b':' {
        start -= 1;
    }
    let (_, tail) = bytes.split_at(start);
    match std::str::from_utf8(tail) {
        Ok(s) => s,
        Err(_) => panic!("a module path is UTF-8"),
    }
}

impl Case {
    pub fn full_name(&self, t: VmType) -> String {
        format!("{}.{}@{}", self.area, self.name, t.suffix())
    }
}

/// Per-case context (lives in the forked child).
pub struct Tx<'a> {
    pub rep: &'a Reporter,
    pub vm_type: VmType,
    pub caps: &'a Caps,
    pub timeout: Duration,
}

impl<'a> Tx<'a> {
    pub fn diag(&self, text: impl AsRef<str>) {
        self.rep.diag(text.as_ref());
    }

    pub fn page(&self) -> u64 {
        self.caps.page_size
    }

    pub fn vm_caps(&self) -> &VmCaps {
        self.caps.vm(self.vm_type)
    }

    pub fn gmem_flags(&self) -> u64 {
        self.vm_caps().gmem_flags
    }

    pub fn access_mode(&self) -> Result<AccessMode, Stop> {
        self.vm_caps().access_mode().ok_or_else(|| {
            let (lack, why) = self
                .vm_caps()
                .lacking(&[Need::GuestAccess])
                .unwrap_or((Lack::Kvm, "no vCPU access to guest_memfd".into()));
            Stop::lacking(lack, why)
        })
    }

    /// Fixture: a VM of this case's type.
    pub fn vm(&self) -> Result<Vm, Stop> {
        Vm::create(self.vm_type).map_err(|e| Stop::Fail(e.to_string()))
    }

    /// Fixture: a VM and a guest_memfd of `pages` pages with `flags`.
    pub fn vm_with_gmem(&self, pages: u64, flags: u64) -> Result<(Vm, GmemFile), Stop> {
        let vm = self.vm()?;
        let size = pages * self.page();
        let g = vm.create_gmem(size, flags).map_err(|e| {
            Stop::Fail(format!(
                "KVM_CREATE_GUEST_MEMFD(size {size:#x}, flags {flags:#x}): {}",
                ename(&e)
            ))
        })?;
        Ok((vm, g))
    }

    /// A deadline for in-case waits (vCPU progress): at most `cap`, and well
    /// inside the harness timeout so the case reports its own diagnosis.
    pub fn inner_limit(&self, cap: Duration) -> Duration {
        cap.min(self.timeout / 2).max(Duration::from_millis(100))
    }
}

/// `?`-friendly conversion of setup errors into failures.
pub trait OrFail<T> {
    fn or_fail(self, what: &str) -> Result<T, Stop>;
}

impl<T> OrFail<T> for SysResult<T> {
    fn or_fail(self, what: &str) -> Result<T, Stop> {
        self.map_err(|e| Stop::Fail(format!("{what}: {}", ename(&e))))
    }
}

impl<T> OrFail<T> for std::io::Result<T> {
    fn or_fail(self, what: &str) -> Result<T, Stop> {
        self.map_err(|e| Stop::Fail(format!("{what}: {e}")))
    }
}

impl<T> OrFail<T> for Result<T, String> {
    fn or_fail(self, what: &str) -> Result<T, Stop> {
        self.map_err(|e| Stop::Fail(format!("{what}: {e}")))
    }
}

pub fn fail<T>(msg: impl Display) -> Result<T, Stop> {
    Err(Stop::Fail(msg.to_string()))
}

/// Fails unless `cond`.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err(Stop::Fail(msg()))
    }
}

/// Expects `r` to fail with `want`; names `what` in the failure.
pub fn expect_errno<T>(what: &str, r: SysResult<T>, want: i32) -> TestResult {
    match r {
        Ok(_) => fail(format!(
            "{what}: expected {}, but it succeeded",
            errno_name(want)
        )),
        Err(e) if e.errno() == want => Ok(()),
        Err(e) => fail(format!(
            "{what}: expected {}, got {}",
            errno_name(want),
            ename(&e)
        )),
    }
}

/// Expects `r` to succeed.
pub fn expect_ok<T>(what: &str, r: SysResult<T>) -> Result<T, Stop> {
    r.map_err(|e| Stop::Fail(format!("{what}: expected success, got {}", ename(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_case(_: &Tx) -> TestResult {
        Ok(())
    }

    #[test]
    fn last_path_segment_takes_the_module_name() {
        assert_eq!(last_path_segment("selftests::cases::bind"), "bind");
        assert_eq!(last_path_segment("bind"), "bind");
        assert_eq!(last_path_segment(""), "");
    }

    #[test]
    fn case_macro_names_the_module_and_the_function() {
        const C: Case = case!(sample_case, needs: &[Need::Kvm]);
        assert_eq!(C.area, "tests");
        assert_eq!(C.name, "sample_case");
        assert_eq!(C.needs, &[Need::Kvm]);
        const D: Case = case!(sample_case);
        assert!(D.needs.is_empty());
    }
}
