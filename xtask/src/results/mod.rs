//! What comes back from a run: KTAP parsing, the guest-log splat scanner,
//! the judge that turns both into a verdict, results.json and junit.xml,
//! the summary table, and results across runs.

pub mod expect;
pub mod history;
pub mod judge;
pub mod ktap;
pub mod run;
pub mod splats;

pub use history::{brief, MutantRow, MutantVerdict, MutantsReport, SeriesTag};
pub use judge::{judge, Boot, Judgement, Tally};
pub use ktap::{parse_ktap, Case, Ktap, Status};
pub use run::{Outcome, RunResult};
pub use splats::{classify_splat, decode_taint, scan_splats, strip_kmsg_prefix, Splat, SplatKind};
