//! guest_memfd selftests: a kselftest-style harness (KTAP output, one forked
//! child per case with its own timeout, kernel log and taint checks) and the
//! cases, run once per VM type.

pub mod caps;
pub mod case;
pub mod cases;
pub mod guest;
pub mod isolate;
pub mod kmsg;
pub mod ktap;
pub mod kvm;
pub mod suite;
