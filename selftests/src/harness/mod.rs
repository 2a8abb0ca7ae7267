//! The harness: case declaration and assertions ([`case`]), isolation
//! ([`isolate`]), kernel log and taint checks ([`kmsg`]), KTAP output
//! ([`ktap`]) and the runner ([`suite`]).

#[macro_use]
pub mod case;
pub mod isolate;
pub mod kmsg;
pub mod ktap;
pub mod suite;
