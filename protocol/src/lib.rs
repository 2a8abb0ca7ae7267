//! The facts `gmem-selftests` and `xtask` must agree on, in one place, as
//! every kselftest shares `kselftest.h`:
//!
//! - [`ktap`]: the diagnostic lines the suite adds to KTAP and xtask parses;
//! - [`kmsg`]: the markers the suite writes to the kernel log around a case;
//! - [`splat`]: which kernel log message starts a splat (a WARN, BUG, Oops,
//!   lockdep or sanitizer report, a stall, a panic);
//! - [`taint`]: the bits of `/proc/sys/kernel/tainted`.
//!
//! Pure data and functions only, no dependencies.

pub mod kmsg;
pub mod ktap;
pub mod splat;
pub mod taint;
