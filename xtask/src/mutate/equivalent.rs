//! `patches/mutants/equivalent.toml`: the mutants no test can tell apart
//! from the series, each with the line it changes and why.
//!
//! ```toml
//! [[equivalent]]
//! id = "virt/kvm/guest_memfd.c:120:drop-call"   # or a patches/mutants/NAME
//! line = "\tfolio_mark_accessed(folio);"         # the original line
//! reason = "one line: why no test can tell it apart"
//! ```
//!
//! An entry whose `line` no longer matches what the series has there (or
//! whose mutant is no longer generated) is stale: it is reported and not
//! applied, so an entry never silently excuses a different mutant.
//!
//! `patches/mutants/survivors.toml` has the same shape with `[[survivor]]`
//! entries: mutants a full campaign saw survive and no case kills yet, each
//! with what would kill it. They are test gaps, scored as survivors by every
//! campaign; only a quick run (`--skip-listed`, CI) leaves them out, so that
//! it checks that kills stay kills.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::model::{Mutant, MutantId};

/// Where the list lives.
pub fn default_path() -> PathBuf {
    crate::util::patches_dir()
        .join("mutants")
        .join("equivalent.toml")
}

/// Where the known survivors are listed.
pub fn survivors_path() -> PathBuf {
    crate::util::patches_dir()
        .join("mutants")
        .join("survivors.toml")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    equivalent: Vec<EntryToml>,
    #[serde(default)]
    survivor: Vec<EntryToml>,
}

/// Which of the two lists a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Equivalent,
    Survivor,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::Equivalent => "equivalent",
            Kind::Survivor => "survivor",
        }
    }

    fn reason_hint(self) -> &'static str {
        match self {
            Kind::Equivalent => "say why no test can tell the mutant apart",
            Kind::Survivor => "say what a case would have to do to kill it",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryToml {
    id: Option<String>,
    line: Option<String>,
    reason: Option<String>,
}

/// What an entry names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Subject {
    Generated(MutantId),
    /// A patches/mutants/NAME.patch.
    HandWritten(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Generated(id) => write!(f, "{id}"),
            Subject::HandWritten(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub subject: Subject,
    pub line: String,
    pub reason: String,
}

/// An entry that no longer describes a mutant of the series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stale {
    pub id: String,
    pub why: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Equivalents {
    pub entries: Vec<Entry>,
}

/// Read and check `path`; a missing file is an empty list.
pub fn load(path: &Path) -> Result<Equivalents> {
    load_kind(path, Kind::Equivalent)
}

/// Read and check the known survivors at `path`; a missing file is an
/// empty list.
pub fn load_survivors(path: &Path) -> Result<Equivalents> {
    load_kind(path, Kind::Survivor)
}

fn load_kind(path: &Path, kind: Kind) -> Result<Equivalents> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_kind(&text, &path.display().to_string(), kind),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Equivalents::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Parse the list; errors name `file`, the entry (1-based, and its id when
/// known) and the field.
pub fn parse(text: &str, file: &str) -> Result<Equivalents> {
    parse_kind(text, file, Kind::Equivalent)
}

pub fn parse_kind(text: &str, file: &str, kind: Kind) -> Result<Equivalents> {
    let table = kind.table();
    let raw: FileToml = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!("{file}: not a list of [[{table}]] entries with id, line and reason: {e}")
    })?;
    let (mine, other) = match kind {
        Kind::Equivalent => (raw.equivalent, raw.survivor),
        Kind::Survivor => (raw.survivor, raw.equivalent),
    };
    if !other.is_empty() {
        bail!("{file}: holds [[{table}]] entries only; the other list has a file of its own");
    }
    let mut seen = BTreeSet::new();
    let mut entries = Vec::new();
    for (k, e) in mine.into_iter().enumerate() {
        let n = k + 1;
        let Some(id) = e.id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) else {
            bail!("{file}: entry {n} has no `id` (a generated id FILE:LINE:OPERATOR[#N] or a patches/mutants/ name)");
        };
        let what = format!("{file}: entry {n} (`{id}`)");
        let subject = if id.contains(':') {
            Subject::Generated(
                id.parse()
                    .map_err(|e| anyhow::anyhow!("{what}: field `id`: {e}"))?,
            )
        } else if id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            Subject::HandWritten(id.clone())
        } else {
            bail!("{what}: field `id` is neither a generated id (FILE:LINE:OPERATOR[#N]) nor a patch name from patches/mutants/");
        };
        let Some(line) = e.line.filter(|l| !l.trim().is_empty()) else {
            bail!("{what}: field `line` is missing or empty: give the original line the mutant changes, so a changed line makes the entry stale");
        };
        let Some(reason) = e
            .reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
        else {
            bail!(
                "{what}: field `reason` is missing or empty: {}",
                kind.reason_hint()
            );
        };
        if reason.contains('\n') {
            bail!("{what}: field `reason` must be one line");
        }
        if !seen.insert(id.clone()) {
            bail!("{what}: listed twice");
        }
        entries.push(Entry {
            subject,
            line,
            reason,
        });
    }
    Ok(Equivalents { entries })
}

fn same_line(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

impl Equivalents {
    /// The reason a generated mutant is listed, when its entry still
    /// matches its line.
    pub fn reason_for(&self, m: &Mutant) -> Option<&str> {
        self.entries.iter().find_map(|e| match &e.subject {
            Subject::Generated(id) if *id == m.id && same_line(&e.line, &m.original) => {
                Some(e.reason.as_str())
            }
            _ => None,
        })
    }

    /// The reason a hand-written mutant is listed (its line is checked by
    /// [`Equivalents::stale`]).
    pub fn reason_for_name(&self, name: &str) -> Option<&str> {
        self.entries.iter().find_map(|e| match &e.subject {
            Subject::HandWritten(n) if n == name => Some(e.reason.as_str()),
            _ => None,
        })
    }

    /// Entries that describe no current mutant: a generated id that is not
    /// generated any more or whose line changed; a hand-written name with
    /// no patch in `mutants_dir`, or whose patch no longer removes `line`.
    pub fn stale(&self, generated: &[Mutant], mutants_dir: &Path) -> Vec<Stale> {
        let mut out = Vec::new();
        for e in &self.entries {
            let id = e.subject.to_string();
            match &e.subject {
                Subject::Generated(mid) => match generated.iter().find(|m| m.id == *mid) {
                    None => out.push(Stale {
                        id,
                        why: "no such mutant is generated from the series any more".into(),
                    }),
                    Some(m) if !same_line(&m.original, &e.line) => out.push(Stale {
                        id,
                        why: format!(
                            "the line changed: the entry says `{}`, the series has `{}`",
                            e.line.trim(),
                            m.original.trim()
                        ),
                    }),
                    Some(_) => {}
                },
                Subject::HandWritten(name) => {
                    let path = mutants_dir.join(format!("{name}.patch"));
                    match std::fs::read_to_string(&path) {
                        Err(_) => out.push(Stale {
                            id,
                            why: format!("{} does not exist", path.display()),
                        }),
                        Ok(text) => {
                            let removes = text.lines().any(|l| {
                                l.strip_prefix('-')
                                    .is_some_and(|r| !r.starts_with("--") && same_line(r, &e.line))
                            });
                            if !removes {
                                out.push(Stale {
                                    id,
                                    why: format!(
                                        "{} does not change the line `{}`",
                                        path.display(),
                                        e.line.trim()
                                    ),
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn survivors_have_their_own_table_and_file() {
        let text = "[[survivor]]\nid = \"virt/kvm/guest_memfd.c:154:off-by-one\"\nline = \"\\tend = x;\"\nreason = \"count the pages allocated\"\n";
        let s = parse_kind(text, "survivors.toml", Kind::Survivor).unwrap();
        assert_eq!(s.entries.len(), 1);
        let err = parse_kind(text, "equivalent.toml", Kind::Equivalent).unwrap_err();
        assert!(
            format!("{err:#}").contains("holds [[equivalent]] entries only"),
            "{err:#}"
        );
        let no_reason = "[[survivor]]\nid = \"a.c:1:drop-call\"\nline = \"f();\"\n";
        let err = parse_kind(no_reason, "survivors.toml", Kind::Survivor).unwrap_err();
        assert!(
            format!("{err:#}").contains("what a case would have to do"),
            "{err:#}"
        );
        assert!(load_survivors(&survivors_path()).is_ok());
    }

    use super::*;
    use crate::mutate::model::Operator;

    fn mutant(id: &str, original: &str) -> Mutant {
        Mutant {
            id: id.parse().unwrap(),
            function: None,
            original: original.into(),
            mutated: ";".into(),
            diff: String::new(),
        }
    }

    #[test]
    fn entries_parse_and_match_by_id_and_line() {
        let eq = parse(
            "[[equivalent]]\nid = \"virt/kvm/a.c:10:drop-call\"\nline = \"\\tfoo(x);\"\nreason = \"foo is idempotent\"\n\n[[equivalent]]\nid = \"retry-gfn-start-only\"\nline = \"x\"\nreason = \"r\"\n",
            "eq.toml",
        )
        .unwrap();
        assert_eq!(eq.entries.len(), 2);
        let m = mutant("virt/kvm/a.c:10:drop-call", "\tfoo(x);");
        assert_eq!(eq.reason_for(&m), Some("foo is idempotent"));
        assert_eq!(
            eq.reason_for(&mutant("virt/kvm/a.c:10:drop-call", "\tbar(x);")),
            None
        );
        assert_eq!(eq.reason_for_name("retry-gfn-start-only"), Some("r"));
        assert!(matches!(
            &eq.entries[0].subject,
            Subject::Generated(MutantId {
                op: Operator::DropCall,
                ..
            })
        ));
        assert_eq!(parse("", "eq.toml").unwrap().entries.len(), 0);
    }

    #[test]
    fn errors_name_the_file_entry_and_field() {
        for (text, want) in [
            ("[[equivalent]]\nline = \"x\"\nreason = \"r\"\n", "entry 1 has no `id`"),
            ("[[equivalent]]\nid = \"a.c:x:drop-call\"\nline = \"x\"\nreason = \"r\"\n", "entry 1 (`a.c:x:drop-call`): field `id`"),
            ("[[equivalent]]\nid = \"m\"\nreason = \"r\"\n", "field `line`"),
            ("[[equivalent]]\nid = \"m\"\nline = \"x\"\nreason = \" \"\n", "field `reason`"),
            ("[[equivalent]]\nid = \"m\"\nline = \"x\"\nreason = \"a\\nb\"\n", "one line"),
            ("[[equivalent]]\nid = \"m\"\nline = \"x\"\nreason = \"r\"\n[[equivalent]]\nid = \"m\"\nline = \"x\"\nreason = \"r\"\n", "entry 2 (`m`): listed twice"),
            ("[[equivalent]]\nid = \"m\"\nline = \"x\"\nreason = \"r\"\nwhy = 1\n", "eq.toml: not a list"),
            ("[[equivalent]]\nid = \"a b\"\nline = \"x\"\nreason = \"r\"\n", "neither"),
        ] {
            let e = parse(text, "eq.toml").unwrap_err().to_string();
            assert!(e.contains(want) && e.starts_with("eq.toml"), "{e}");
        }
    }

    #[test]
    fn the_projects_list_parses_and_its_hand_written_entries_are_current() {
        let eq = load(&default_path()).unwrap();
        let hand: Vec<&Entry> = eq
            .entries
            .iter()
            .filter(|e| matches!(e.subject, Subject::HandWritten(_)))
            .collect();
        assert!(hand.len() >= 4, "{hand:?}");
        let dir = crate::util::patches_dir().join("mutants");
        let stale: Vec<Stale> = eq
            .stale(&[], &dir)
            .into_iter()
            .filter(|s| !s.id.contains(':'))
            .collect();
        assert!(stale.is_empty(), "{stale:?}");
    }

    #[test]
    fn stale_entries_are_found() {
        let dir = std::env::temp_dir().join(format!("gmem61-eq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hw.patch"),
            "--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-\told();\n+\tnew();\n",
        )
        .unwrap();
        let eq = parse(
            "[[equivalent]]\nid = \"x.c:1:drop-call\"\nline = \"foo();\"\nreason = \"r\"\n\
             [[equivalent]]\nid = \"x.c:2:drop-call\"\nline = \"bar();\"\nreason = \"r\"\n\
             [[equivalent]]\nid = \"x.c:3:drop-call\"\nline = \"baz();\"\nreason = \"r\"\n\
             [[equivalent]]\nid = \"hw\"\nline = \"old();\"\nreason = \"r\"\n\
             [[equivalent]]\nid = \"hw2\"\nline = \"old();\"\nreason = \"r\"\n\
             [[equivalent]]\nid = \"hw\"\nline = \"other();\"\nreason = \"r\"\n",
            "eq.toml",
        );
        // The same name twice is refused.
        assert!(eq.is_err());
        let eq = parse(
            "[[equivalent]]\nid = \"x.c:1:drop-call\"\nline = \"foo();\"\nreason = \"r\"\n\
             [[equivalent]]\nid = \"x.c:2:drop-call\"\nline = \"bar();\"\nreason = \"r\"\n\
             [[equivalent]]\nid = \"x.c:3:drop-call\"\nline = \"baz();\"\nreason = \"r\"\n\
             [[equivalent]]\nid = \"hw\"\nline = \"old();\"\nreason = \"r\"\n\
             [[equivalent]]\nid = \"hw2\"\nline = \"old();\"\nreason = \"r\"\n",
            "eq.toml",
        )
        .unwrap();
        let generated = [
            mutant("x.c:1:drop-call", "\tfoo();"),
            mutant("x.c:2:drop-call", "\tbar(1);"),
        ];
        let stale = eq.stale(&generated, &dir);
        let ids: Vec<&str> = stale.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["x.c:2:drop-call", "x.c:3:drop-call", "hw2"]);
        assert!(stale[0].why.contains("the line changed"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
