//! The harness: case declaration and assertions ([`case`]), isolation
//! ([`isolate`]), kernel log and taint checks ([`kmsg`]), KTAP output
//! ([`ktap`]), memory counters ([`meminfo`]), physical pages: their flags
//! ([`pageflags`]) and software memory failures ([`hwpoison`]), transparent
//! huge pages ([`thp`]) and the runner ([`suite`]).

#[macro_use]
pub mod case;
pub mod hwpoison;
pub mod isolate;
pub mod kmsg;
pub mod ktap;
pub mod meminfo;
pub mod pageflags;
pub mod suite;
pub mod thp;
