//! The series directory and its `series.toml`.
//!
//! # Series format
//!
//! A series lives in `patches/<name>/` and holds exactly:
//!
//! - `series.toml` (below);
//! - the patches, `NNNN-<slug>.patch`, numbered from `0001` without gaps, each
//!   one mail as written by `git format-patch` (or `cargo xtask series export`,
//!   which runs it): an mbox `From <sha> ...` line, `From:`, `Date:`,
//!   `Subject:`, the message, `---`, a diffstat, the diff and the `-- `
//!   signature;
//! - optionally `0000-cover-letter.patch`: the cover letter template. Its
//!   `Subject:` (the `[PATCH ...]` prefix is dropped) and the text of its body
//!   up to the generated part (shortlog, diffstat, changelog, `base-commit:`)
//!   become the subject and blurb of the cover letter `series format` writes.
//!
//! Anything else in the directory (a README, an editor backup, a
//! subdirectory) is refused, so that a stray file is never mistaken for a
//! patch or silently ignored. Patches must be plain text with LF line endings;
//! binary diffs, renames, copies and deletions are refused (the kernel's
//! mailing lists want plain diffs, and each of these has bitten `git am`
//! users).
//!
//! ```toml
//! name = "guest_memfd"             # must match the directory name
//! version = 1                      # N of vN; `apply` creates branch <name>/v<N>
//! change-id = "20261125-guest-memfd-6-1-3f9c2a"   # b4-style, stable across versions
//! subject-prefix = "PATCH"         # "RFC PATCH" etc. (default "PATCH")
//! to = ["kvm@vger.kernel.org"]     # default recipients of `series format`
//! cc = ["linux-kernel@vger.kernel.org"]
//! # who the patch files are authored and signed off by when no real person
//! # is; `series format` replaces it by the sender (optional)
//! placeholder-author = "Seed maintainers <maintainers@example.invalid>"
//!
//! [base]
//! version = "6.1.176"              # upstream version; `apply` uses tag v<version> if present
//! # tree hash (`git rev-parse <base>^{tree}`) per known source of the base;
//! # the Debian orig tarball lacks 7 non-free paths so its tree differs from
//! # kernel.org's v6.1.176
//! trees = { debian-orig = "b501e1fb059b8cec665b48945130d1c1b6fdd1d6" }
//!
//! [[changelog]]                    # one entry per version, newest last or first
//! version = 1
//! changes = ["Initial backport of ..."]
//! ```
//!
//! Unknown keys are errors (a typo such as `subject_prefix` would otherwise be
//! ignored). Every error names the file and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// File name of the series description inside a series directory.
pub const SERIES_TOML: &str = "series.toml";
/// File name of the optional cover letter template.
pub const COVER_LETTER: &str = "0000-cover-letter.patch";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SeriesToml {
    pub name: String,
    pub version: u32,
    pub change_id: String,
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// "Name <address>" the patch files are authored and signed off by
    /// when no real person is: `series format` replaces it by the sender.
    #[serde(default)]
    pub placeholder_author: Option<String>,
    pub base: Base,
    /// The upstream kernel the suite is judged against (`cargo xtask test
    /// --reference`, `cargo xtask matrix`): built without the series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Base>,
    #[serde(default)]
    pub changelog: Vec<ChangelogEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Upstream version, e.g. "6.1.176".
    pub version: String,
    /// Known tree hashes of the base commit, keyed by source (e.g. "debian-orig").
    pub trees: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangelogEntry {
    pub version: u32,
    pub changes: Vec<String>,
}

fn default_subject_prefix() -> String {
    "PATCH".to_string()
}

/// A validation error: which file, which field, what is wrong.
#[derive(Debug)]
pub struct FieldError {
    pub file: PathBuf,
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: field `{}`: {}",
            self.file.display(),
            self.field,
            self.message
        )
    }
}

impl std::error::Error for FieldError {}

impl SeriesToml {
    /// Parse and validate `series.toml` text; `file` is used in errors only.
    pub fn parse(text: &str, file: &Path) -> Result<SeriesToml> {
        let parsed: SeriesToml = toml::from_str(text).map_err(|err| {
            anyhow::anyhow!(
                "{}: malformed series.toml: {}",
                file.display(),
                err.to_string().trim_end()
            )
        })?;
        parsed.validate(file)?;
        Ok(parsed)
    }

    /// Read and validate `<dir>/series.toml`.
    pub fn load(file: &Path) -> Result<SeriesToml> {
        let text = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
                "{}: missing: every series directory needs a series.toml (name, version, \
                 change-id, [base] version and trees); see the README",
                file.display()
            ),
            Err(err) => return Err(err).with_context(|| format!("reading {}", file.display())),
        };
        let text = String::from_utf8(text)
            .map_err(|_| anyhow::anyhow!("{}: not valid UTF-8", file.display()))?;
        SeriesToml::parse(&text, file)
    }

    fn validate(&self, file: &Path) -> Result<()> {
        let err = |field: &str, message: String| -> anyhow::Error {
            FieldError {
                file: file.to_path_buf(),
                field: field.to_string(),
                message,
            }
            .into()
        };
        let name_re = Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$").expect("static regex");
        if !name_re.is_match(&self.name) || self.name.ends_with(".lock") || self.name.contains("..")
        {
            return Err(err(
                "name",
                format!(
                    "{:?} is not usable as a series and branch name (letters, digits, `_`, `.`, `-`)",
                    self.name
                ),
            ));
        }
        if self.version == 0 {
            return Err(err("version", "must be 1 or more (the N of vN)".into()));
        }
        if let Some(who) = &self.placeholder_author {
            if !is_mail_address(who) || !who.contains('<') {
                return Err(err(
                    "placeholder-author",
                    format!("{who:?} is not \"Name <address>\""),
                ));
            }
        }
        let change_id_re =
            Regex::new(r"^[0-9]{8}-[A-Za-z0-9][A-Za-z0-9_.-]*$").expect("static regex");
        if !change_id_re.is_match(&self.change_id) {
            return Err(err(
                "change-id",
                format!(
                    "{:?} is not a change id of the form YYYYMMDD-slug (as b4 writes, e.g. \
                     \"20261125-guest-memfd-6-1-3f9c2a\")",
                    self.change_id
                ),
            ));
        }
        if self.subject_prefix.trim().is_empty()
            || self.subject_prefix.contains(['[', ']', '\n'])
            || self.subject_prefix.trim() != self.subject_prefix
        {
            return Err(err(
                "subject-prefix",
                format!(
                    "{:?} must be non-empty words without brackets, e.g. \"RFC PATCH\"",
                    self.subject_prefix
                ),
            ));
        }
        for (field, list) in [("to", &self.to), ("cc", &self.cc)] {
            for (i, addr) in list.iter().enumerate() {
                if !is_mail_address(addr) {
                    return Err(err(
                        &format!("{field}[{i}]"),
                        format!("{addr:?} is not a mail address (\"list@vger.kernel.org\" or \"Name <a@b>\")"),
                    ));
                }
            }
        }
        let version_re =
            Regex::new(r"^[0-9]+\.[0-9]+(\.[0-9]+)?(-rc[0-9]+)?$").expect("static regex");
        if !version_re.is_match(&self.base.version) {
            return Err(err(
                "base.version",
                format!(
                    "{:?} is not an upstream version such as \"6.1.176\"",
                    self.base.version
                ),
            ));
        }
        if self.base.trees.is_empty() {
            return Err(err(
                "base.trees",
                "needs at least one tree hash, e.g. { debian-orig = \"<git rev-parse v6.1.176^{tree}>\" }".into(),
            ));
        }
        let hex_re = Regex::new(r"^[0-9a-f]{40}$").expect("static regex");
        for (source, hash) in &self.base.trees {
            if !hex_re.is_match(hash) {
                return Err(err(
                    &format!("base.trees.{source}"),
                    format!("{hash:?} is not a tree hash (40 lowercase hex digits from `git rev-parse <base>^{{tree}}`)"),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, entry) in self.changelog.iter().enumerate() {
            if entry.version == 0 || entry.version > self.version {
                return Err(err(
                    &format!("changelog[{i}].version"),
                    format!(
                        "{} is outside 1..={} (the series version)",
                        entry.version, self.version
                    ),
                ));
            }
            if !seen.insert(entry.version) {
                return Err(err(
                    &format!("changelog[{i}].version"),
                    format!(
                        "version {} has two changelog entries; merge them",
                        entry.version
                    ),
                ));
            }
            if entry.changes.is_empty() || entry.changes.iter().any(|c| c.trim().is_empty()) {
                return Err(err(
                    &format!("changelog[{i}].changes"),
                    "must list at least one non-empty change".into(),
                ));
            }
        }
        Ok(())
    }

    /// The branch `apply` creates: `<name>/v<version>`.
    pub fn branch_name(&self) -> String {
        format!("{}/v{}", self.name, self.version)
    }

    /// Changelog entry for one version, if any.
    pub fn changes_in(&self, version: u32) -> Option<&ChangelogEntry> {
        self.changelog.iter().find(|e| e.version == version)
    }
}

fn is_mail_address(addr: &str) -> bool {
    match mailparse::addrparse(addr) {
        Ok(list) => {
            list.len() == 1
                && match &list[0] {
                    mailparse::MailAddr::Single(info) => {
                        let mut parts = info.addr.splitn(2, '@');
                        matches!((parts.next(), parts.next()), (Some(l), Some(d)) if !l.is_empty() && d.contains('.'))
                    }
                    mailparse::MailAddr::Group(_) => false,
                }
        }
        Err(_) => false,
    }
}

/// A loaded series directory: validated `series.toml` and the patch files in order.
#[derive(Debug, Clone)]
pub struct Series {
    pub dir: PathBuf,
    pub toml: SeriesToml,
    pub cover: Option<PathBuf>,
    pub patches: Vec<PathBuf>,
}

impl Series {
    /// Load a series directory; refuses stray files, gaps in the numbering and
    /// a `name` that does not match the directory.
    pub fn load(dir: &Path) -> Result<Series> {
        let toml = SeriesToml::load(&dir.join(SERIES_TOML))?;
        check_name(dir, &toml)?;
        let (cover, patches) = list_patch_files(dir)?;
        if patches.is_empty() {
            bail!(
                "{}: no patches (expected files named 0001-<subject>.patch written by `git format-patch`)",
                dir.display()
            );
        }
        Ok(Series {
            dir: dir.to_path_buf(),
            toml,
            cover,
            patches,
        })
    }

    pub fn name(&self) -> &str {
        &self.toml.name
    }
}

/// Refuses a series.toml whose `name` is not the name of its directory
/// (resolved, so that `.` and `patches/x/` are checked too).
pub fn check_name(dir: &Path, toml: &SeriesToml) -> Result<()> {
    let resolved = dir
        .canonicalize()
        .with_context(|| format!("resolving series directory {}", dir.display()))?;
    let dir_name = resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir_name != toml.name {
        return Err(FieldError {
            file: dir.join(SERIES_TOML),
            field: "name".into(),
            message: format!(
                "{:?} does not match the directory name {dir_name:?}; rename one of them",
                toml.name
            ),
        }
        .into());
    }
    Ok(())
}

/// The patch files of a series directory (cover letter apart), in order.
/// Errors on anything that is not `series.toml` or a numbered `.patch`.
pub fn list_patch_files(dir: &Path) -> Result<(Option<PathBuf>, Vec<PathBuf>)> {
    let patch_re = Regex::new(r"^([0-9]{4})-[^/]+\.patch$").expect("static regex");
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading series directory {}", dir.display()))?;
    let mut numbered: Vec<(u32, PathBuf)> = Vec::new();
    let mut cover = None;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading series directory {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            bail!("{}: file name is not UTF-8; a series directory holds only series.toml and NNNN-*.patch", path.display());
        };
        let file_type = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if name == SERIES_TOML && file_type.is_file() {
            continue;
        }
        if !file_type.is_file() {
            bail!(
                "{}: not a regular file; a series directory holds only series.toml and NNNN-*.patch (move it elsewhere)",
                path.display()
            );
        }
        if name == COVER_LETTER {
            cover = Some(path);
            continue;
        }
        let Some(caps) = patch_re.captures(name) else {
            bail!(
                "{}: not a patch file; a series directory holds only series.toml, NNNN-<subject>.patch \
                 and 0000-cover-letter.patch (move or delete this file)",
                path.display()
            );
        };
        let number: u32 = caps[1]
            .parse()
            .with_context(|| format!("{}: bad number", path.display()))?;
        if number == 0 {
            bail!(
                "{}: number 0000 is reserved for 0000-cover-letter.patch",
                path.display()
            );
        }
        numbered.push((number, path));
    }
    numbered.sort();
    for (i, (number, path)) in numbered.iter().enumerate() {
        let expected = i as u32 + 1;
        if *number != expected {
            if *number < expected {
                bail!(
                    "{}: a second patch numbered {number:04}; numbers must be unique",
                    path.display()
                );
            }
            bail!(
                "{}: expected patch number {expected:04} here (numbers run from 0001 without gaps)",
                path.display()
            );
        }
    }
    Ok((cover, numbered.into_iter().map(|(_, p)| p).collect()))
}

/// Series directories under `patches_dir` (those with a series.toml).
pub fn known_series(patches_dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(entries) = std::fs::read_dir(patches_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if entry.path().join(SERIES_TOML).is_file() {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

/// Resolve `--series`: a name under `patches_dir`, or a path to a series
/// directory (anything containing a `/`). Unknown names list the known ones.
pub fn resolve_series_dir(series: &str, patches_dir: &Path) -> Result<PathBuf> {
    if series.contains('/') || series.starts_with('.') {
        let dir = PathBuf::from(series);
        if !dir.is_dir() {
            bail!("series directory {} does not exist", dir.display());
        }
        return Ok(dir);
    }
    let dir = patches_dir.join(series);
    if dir.is_dir() {
        return Ok(dir);
    }
    let known = known_series(patches_dir);
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    bail!(
        "unknown series {series:?}: no directory {} (known series in {}: {known}); \
         pass --series NAME or a path to a series directory",
        dir.display(),
        patches_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "guest_memfd"
version = 2
change-id = "20261125-guest-memfd-6-1-3f9c2a"
subject-prefix = "RFC PATCH"
to = ["kvm@vger.kernel.org"]
cc = ["Jane Doe <jane@example.org>"]
[base]
version = "6.1.176"
trees = { debian-orig = "b501e1fb059b8cec665b48945130d1c1b6fdd1d6" }
[[changelog]]
version = 1
changes = ["Initial backport"]
[[changelog]]
version = 2
changes = ["Fix the bug"]
"#;

    fn parse_err(text: &str) -> String {
        match SeriesToml::parse(text, Path::new("patches/x/series.toml")) {
            Ok(parsed) => panic!("expected an error, parsed {parsed:?}"),
            Err(err) => format!("{err:#}"),
        }
    }

    #[test]
    fn good_series_toml_parses() {
        let parsed = SeriesToml::parse(GOOD, Path::new("series.toml")).unwrap();
        assert_eq!(parsed.branch_name(), "guest_memfd/v2");
        assert_eq!(parsed.subject_prefix, "RFC PATCH");
        assert_eq!(
            parsed.changes_in(2).unwrap().changes,
            vec!["Fix the bug".to_string()]
        );
    }

    #[test]
    fn subject_prefix_defaults_to_patch() {
        let text = GOOD.replace("subject-prefix = \"RFC PATCH\"\n", "");
        let parsed = SeriesToml::parse(&text, Path::new("series.toml")).unwrap();
        assert_eq!(parsed.subject_prefix, "PATCH");
    }

    #[test]
    fn bad_tree_hash_names_field() {
        let err = parse_err(&GOOD.replace("b501e1fb059b8cec665b48945130d1c1b6fdd1d6", "abc"));
        assert!(
            err.contains("patches/x/series.toml: field `base.trees.debian-orig`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = parse_err(&GOOD.replace("subject-prefix", "subject_prefix"));
        assert!(
            err.contains("patches/x/series.toml") && err.contains("subject_prefix"),
            "{err}"
        );
    }

    #[test]
    fn missing_name_is_refused() {
        let err = parse_err(&GOOD.replace("name = \"guest_memfd\"\n", ""));
        assert!(err.contains("missing field `name`"), "{err}");
    }

    #[test]
    fn changelog_version_beyond_series_version_is_refused() {
        let err = parse_err(&GOOD.replace("version = 2\nchanges", "version = 3\nchanges"));
        assert!(err.contains("field `changelog[1].version`"), "{err}");
    }

    #[test]
    fn bad_address_is_refused() {
        let err = parse_err(&GOOD.replace("kvm@vger.kernel.org", "kvm at vger"));
        assert!(err.contains("field `to[0]`"), "{err}");
    }
}
