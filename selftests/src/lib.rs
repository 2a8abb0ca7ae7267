//! guest_memfd selftests laid out like the kernel's kselftests:
//!
//! - [`harness`]: what `kselftest_harness.h` is to a C test: KTAP output, one
//!   forked child per case with its own timeout, kernel log and taint checks,
//!   the case declaration ([`case!`]) and the suite runner.
//! - [`kvm`]: the fd types and ioctls (`kvm_util` in the kernel's tree) and the
//!   capability probe that decides skips.
//! - [`cases`]: the cases, one module per area, and their guest fixtures.

#[macro_use]
pub mod harness;
pub mod cases;
pub mod kvm;
