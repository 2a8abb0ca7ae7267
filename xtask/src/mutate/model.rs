//! What the stages of a mutation campaign hand each other:
//! generate (patch lines -> `Mutant`s) -> run (`Mutant` -> `MutantResult`)
//! -> report (`MutantResult`s -> score, tables, files).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A mutation operator. Its kebab-case name is part of every mutant id,
/// so renaming one changes ids: don't.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Operator {
    /// `if (c)` / `while (c)` -> `if (!(c))`.
    NegateCondition,
    /// `<` <-> `<=`, `>` <-> `>=`.
    SwapRelational,
    /// `&&` <-> `||`.
    SwapLogical,
    /// A returned or assigned `-E...` becomes 0 or another errno.
    ReplaceErrno,
    /// A call statement is dropped (locks and unlocks included: a hang is
    /// a kill by timeout).
    DropCall,
    /// A range end moves by one (`end` -> `end - 1`, `end + 1`).
    OffByOne,
    /// One flag is dropped from a `A | B` mask.
    DropFlag,
}

impl Operator {
    pub fn name(self) -> &'static str {
        match self {
            Operator::NegateCondition => "negate-condition",
            Operator::SwapRelational => "swap-relational",
            Operator::SwapLogical => "swap-logical",
            Operator::ReplaceErrno => "replace-errno",
            Operator::DropCall => "drop-call",
            Operator::OffByOne => "off-by-one",
            Operator::DropFlag => "drop-flag",
        }
    }

    pub const ALL: [Operator; 7] = [
        Operator::NegateCondition,
        Operator::SwapRelational,
        Operator::SwapLogical,
        Operator::ReplaceErrno,
        Operator::DropCall,
        Operator::OffByOne,
        Operator::DropFlag,
    ];
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mutant's stable id: `FILE:LINE:OPERATOR`, with `#N` appended for the
/// N-th (N >= 2) way the operator applies to that line. LINE is the line
/// in the series tip's version of FILE, so ids stay put while the series
/// does not change that file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MutantId {
    pub file: String,
    pub line: u32,
    pub op: Operator,
    /// 1-based occurrence of `op` on the line.
    pub nth: u32,
}

impl fmt::Display for MutantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.op)?;
        if self.nth > 1 {
            write!(f, "#{}", self.nth)?;
        }
        Ok(())
    }
}

impl FromStr for MutantId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("`{s}` is not a mutant id (FILE:LINE:OPERATOR[#N], e.g. virt/kvm/guest_memfd.c:120:drop-call)")
        };
        let (rest, op) = s.rsplit_once(':').ok_or_else(bad)?;
        let (file, line) = rest.rsplit_once(':').ok_or_else(bad)?;
        let (op, nth) = match op.split_once('#') {
            Some((op, n)) => (op, n.parse::<u32>().map_err(|_| bad())?),
            None => (op, 1),
        };
        let op = Operator::ALL
            .into_iter()
            .find(|o| o.name() == op)
            .ok_or_else(bad)?;
        let line = line.parse::<u32>().map_err(|_| bad())?;
        if file.is_empty() || nth == 0 {
            return Err(bad());
        }
        Ok(MutantId {
            file: file.to_string(),
            line,
            op,
            nth,
        })
    }
}

impl From<MutantId> for String {
    fn from(id: MutantId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for MutantId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// One generated mutant: a single-line change on top of the series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutant {
    pub id: MutantId,
    /// The C function the line belongs to, when the generator can tell.
    pub function: Option<String>,
    /// The line as the series has it (no newline).
    pub original: String,
    /// The line as the mutant has it (no newline).
    pub mutated: String,
    /// A `git apply`-able unified diff against the series tip, with the
    /// context lines around the one changed line.
    pub diff: String,
}

/// How one mutant ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Outcome {
    /// Cases failed or splatted: they are `by`.
    Killed { by: Vec<String> },
    /// The kernel hung (or the suite timed out) while `by` were running.
    Timeout { by: Vec<String> },
    /// The kernel panicked while `by` were running.
    Panic { by: Vec<String> },
    /// Every case passed, twice (a survivor is rerun once).
    Survived,
    /// Every case passed, then the rerun on the same kernel failed `by`:
    /// a case is flaky (or the mutant is racy). Not in the score.
    Flaky { by: Vec<String> },
    /// The mutated kernel did not compile: not in the score.
    BuildFailed { log_tail: String },
    /// The mutant could not be tested (did not apply, no boot, harness
    /// error): not in the score.
    Error { detail: String },
}

impl Outcome {
    pub fn is_kill(&self) -> bool {
        matches!(
            self,
            Outcome::Killed { .. } | Outcome::Timeout { .. } | Outcome::Panic { .. }
        )
    }
}

/// A mutant, how it ended, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutantResult {
    pub mutant: Mutant,
    pub outcome: Outcome,
    /// `Some(reason)` when patches/mutants/equivalent.toml lists the
    /// mutant. A listed mutant that survives is equivalent (not in the
    /// score); one that is killed is reported: it was not equivalent, or a
    /// case is flaky.
    pub equivalent: Option<String>,
    /// Wall time of apply + build + boot + suite (and the rerun, if any).
    pub seconds: f64,
    /// The run directory of the (last) boot, under target/results/.
    pub run_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ids_say_what_is_expected() {
        for s in [
            "virt/kvm/guest_memfd.c:120:drop-call",
            "arch/x86/kvm/mmu/mmu.c:4321:swap-relational#2",
        ] {
            assert_eq!(s.parse::<MutantId>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "x.c:1",
            "x.c:one:drop-call",
            "x.c:1:nope",
            "x.c:1:drop-call#0",
        ] {
            let e = bad.parse::<MutantId>().unwrap_err();
            assert!(e.contains("FILE:LINE:OPERATOR"), "{e}");
        }
    }
}
