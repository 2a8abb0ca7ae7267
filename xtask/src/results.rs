//! What comes back from a run: KTAP parsing, the guest-log splat scanner,
//! results.json and junit.xml, the summary table. (Issue #3.)
