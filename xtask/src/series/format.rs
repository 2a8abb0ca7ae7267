//! `cargo xtask series format`: a mailing-list-ready series in a directory
//! that `git send-email DIR` accepts as is. Nothing is sent.
//!
//! The series is applied in memory on its verified base (no branch, no
//! checkout), then `git format-patch` writes `[<prefix> vN k/M]` mails with
//! a cover letter, `--base` (the `base-commit:` line), the To/Cc headers and,
//! when the previous version is known, a `git range-diff` against it. The
//! cover letter is then completed:
//!
//! - subject and blurb from `0000-cover-letter.patch` in the series directory
//!   (its `Subject:` without the `[PATCH ...]` prefix, its body up to the
//!   generated shortlog); without it, the subject is
//!   "<name>: backport to Linux <base.version>" and the blurb is empty;
//! - "Changes in vK:" for every K from N down to 2, from `[[changelog]]`;
//! - a "Tested:" section from `results::history::tested_section` when
//!   booted runs of this version exist;
//! - `change-id:` after `base-commit:`.
//!
//! v1 is not marked in subjects (`[PATCH 1/3]`, the kernel convention);
//! from v2 on subjects read `[PATCH v2 1/3]`. Each patch is then checked by
//! the tree's `scripts/checkpatch.pl --strict` and the counts printed (the
//! cover letter too, without the Gerrit Change-Id check that b4's
//! `change-id:` trailer trips).
//!
//! Every mail is From: the sender (`--from`, which the CLI defaults to git
//! config); commits by series.toml's placeholder identity become the
//! sender's (see [`super::identity`]), a patch by anyone else keeps its
//! author in an in-body `From:` line, and no mail may name the
//! placeholder. The patches are threaded to the cover letter
//! (`Message-ID`, `In-Reply-To`, `References`) and all mails are also
//! written as one `series.mbx` for `b4 am -m`. The output directory is
//! checked before any work and only ever holds what `series format` wrote
//! (see [`super::outdir`]).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use git2::{Oid, Repository};
use regex::Regex;

use super::apply::{commit_patch, open_repo, short, verify_base};
use super::checkpatch::{self, Checkpatch};
use super::export::{format_patch, infer_style, PatchStyle};
use super::identity::{find_placeholder, rewrite_range, Ident, Rewrite};
use super::mail;
use super::model::Series;
use super::outdir::OutDir;

#[derive(Debug, Clone, Default)]
pub struct FormatRequest {
    pub reroll: Option<u32>,
    /// Added to series.toml's `to`.
    pub to: Vec<String>,
    /// Added to series.toml's `cc`.
    pub cc: Vec<String>,
    pub out: Option<PathBuf>,
    /// Previous version: a series directory, a `BASE..TIP` range or a ref.
    pub compare_to: Option<String>,
    pub checkpatch: bool,
    /// The sender, "Name <email>": the From: of every mail, and the author
    /// of the patches series.toml's placeholder identity authored. Required
    /// (the CLI fills it from git config); see [`super::identity`].
    pub from: Option<String>,
    /// Add the sender's Signed-off-by to every patch.
    pub signoff: bool,
    /// Seconds since the epoch that go into the Message-IDs (default: now).
    pub message_id_time: Option<i64>,
    /// `target/results/`: the Tested: section comes from the newest runs of
    /// this series version found there (see `results::history`).
    pub results_dir: Option<PathBuf>,
    /// Add to each patch's Cc what `scripts/get_maintainer.pl` names for
    /// it, and to the cover letter's Cc all of them.
    pub auto_cc: bool,
}

#[derive(Debug)]
pub struct FormatReport {
    pub out: PathBuf,
    pub files: Vec<(String, String)>,
    pub range_diff: Option<String>,
    pub checkpatch: Option<Checkpatch>,
    pub notes: Vec<String>,
    /// With `auto_cc`: per mail, the addresses get_maintainer.pl added.
    pub auto_cc: Option<Vec<(String, Vec<String>)>>,
    pub sender: Ident,
    /// Message-ID of each mail (without brackets), cover letter first.
    pub message_ids: Vec<String>,
}

impl fmt::Display for FormatReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (file, subject) in &self.files {
            writeln!(f, "{file}  {subject}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        match &self.range_diff {
            Some(what) => writeln!(f, "range-diff against {what} included in the cover letter")?,
            None => writeln!(f, "no previous version known: no range-diff")?,
        }
        if let Some(added) = &self.auto_cc {
            writeln!(f, "auto-cc (scripts/get_maintainer.pl):")?;
            for (file, addrs) in added {
                if addrs.is_empty() {
                    writeln!(f, "  {file}: nobody new")?;
                } else {
                    writeln!(f, "  {file}: +{}", addrs.join(", "))?;
                }
            }
        }
        if let Some(cp) = &self.checkpatch {
            writeln!(f, "{}", checkpatch::table(cp))?;
        }
        writeln!(
            f,
            "from {}; threaded to the cover letter <{}>",
            self.sender,
            self.message_ids.first().map_or("", String::as_str)
        )?;
        let out = self.out.display();
        write!(
            f,
            "wrote {} mails and {MBOX} to {out}; nothing was sent. Review, then: \
             git send-email {out}/*.patch (b4: b4 am -m {out}/{MBOX})",
            self.files.len(),
        )
    }
}

/// Apply `patches` on `base` in the object database only; returns the tip.
fn build_in_memory(repo: &Repository, base: Oid, patches: &[PathBuf]) -> Result<Oid> {
    let mut tip = repo.find_commit(base)?;
    for file in patches {
        let patch = mail::parse_patch_file(file)?;
        let diff = git2::Diff::from_buffer(&patch.diff).map_err(|err| {
            anyhow::anyhow!(
                "{}: libgit2 cannot parse the diff: {}",
                file.display(),
                err.message()
            )
        })?;
        let oid = commit_patch(repo, &tip, &patch, &diff)?;
        tip = repo.find_commit(oid)?;
    }
    Ok(tip.id())
}

/// The previous version as base and tip commits in `repo`, and what it was.
fn previous_range(
    repo: &Repository,
    series: &Series,
    version: u32,
    compare_to: Option<&str>,
) -> Result<Option<(Oid, Oid, String)>> {
    match compare_to {
        Some(spec) if Path::new(spec).join("series.toml").is_file() => {
            let prev = Series::load(Path::new(spec))?;
            let base = verify_base(repo, &prev)
                .with_context(|| format!("base of the previous version {spec}"))?;
            let tip = build_in_memory(repo, base.id(), &prev.patches)?;
            Ok(Some((
                base.id(),
                tip,
                format!("{spec} (v{})", prev.toml.version),
            )))
        }
        Some(spec) if spec.contains("..") => {
            let range = repo.revparse(spec).map_err(|err| {
                anyhow::anyhow!("--compare-to {spec:?}: not a range: {}", err.message())
            })?;
            let (Some(from), Some(to)) = (range.from(), range.to()) else {
                bail!("--compare-to {spec:?}: not a BASE..TIP range");
            };
            Ok(Some((
                from.peel_to_commit()?.id(),
                to.peel_to_commit()?.id(),
                spec.to_string(),
            )))
        }
        Some(spec) => {
            let tip = repo
                .revparse_single(spec)
                .and_then(|o| o.peel_to_commit())
                .map_err(|err| {
                    anyhow::anyhow!(
                        "--compare-to {spec:?}: not a series directory, range or ref: {}",
                        err.message()
                    )
                })?
                .id();
            let base = walk_to_base(repo, &series.toml, tip)?;
            Ok(Some((base, tip, spec.to_string())))
        }
        None if version > 1 => {
            let branch = format!("{}/v{}", series.name(), version - 1);
            match repo.revparse_single(&format!("refs/heads/{branch}")) {
                Ok(obj) => {
                    let tip = obj.peel_to_commit()?.id();
                    let base = walk_to_base(repo, &series.toml, tip)?;
                    Ok(Some((base, tip, format!("branch {branch}"))))
                }
                Err(_) => Ok(None),
            }
        }
        None => Ok(None),
    }
}

fn walk_to_base(repo: &Repository, toml: &super::SeriesToml, tip: Oid) -> Result<Oid> {
    super::export::base_below(repo, toml, tip)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no commit below {} has a base tree listed in series.toml; pass --compare-to BASE..TIP",
            short(tip)
        )
    })
}

/// Subject and blurb from the cover letter template, if any.
fn cover_template(cover: Option<&Path>) -> Result<(Option<String>, String)> {
    let Some(cover) = cover else {
        return Ok((None, String::new()));
    };
    let bytes = std::fs::read(cover).with_context(|| format!("reading {}", cover.display()))?;
    let rest = if bytes.starts_with(b"From ") {
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |e| e + 1);
        &bytes[end..]
    } else {
        &bytes[..]
    };
    let parsed = mailparse::parse_mail(rest)
        .map_err(|err| anyhow::anyhow!("{}: not a mail: {err}", cover.display()))?;
    let subject = parsed
        .headers
        .iter()
        .find(|h| h.get_key().eq_ignore_ascii_case("Subject"))
        .map(|h| mail::clean_subject(&h.get_value()))
        .filter(|s| !s.is_empty() && !s.contains("*** SUBJECT HERE ***"));
    let body = parsed
        .get_body_raw()
        .map_err(|err| anyhow::anyhow!("{}: {err}", cover.display()))?;
    let body = String::from_utf8(body)
        .map_err(|_| anyhow::anyhow!("{}: body is not UTF-8", cover.display()))?;
    let shortlog = Regex::new(r"^\S.* \(\d+\):$").expect("static regex");
    let mut blurb = Vec::new();
    for line in body.lines() {
        if shortlog.is_match(line)
            || line.starts_with("base-commit:")
            || line.starts_with("change-id:")
            || line.starts_with("Changes in v")
            || line == "-- "
            || line.contains("*** BLURB HERE ***")
        {
            break;
        }
        blurb.push(line);
    }
    Ok((subject, mail::stripspace(&blurb.join("\n"))))
}

/// The changelog part of the cover letter: "Changes in vK:" for K = N..2.
pub fn changelog_section(series: &Series, version: u32) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut notes = Vec::new();
    for v in (2..=version).rev() {
        match series.toml.changes_in(v) {
            Some(entry) => {
                out.push_str(&format!("Changes in v{v}:\n"));
                for change in &entry.changes {
                    out.push_str(&format!("- {change}\n"));
                }
                out.push('\n');
            }
            None if v == version => notes.push(format!(
                "series.toml has no [[changelog]] entry for version {v}: the cover letter lists no changes since v{}",
                v - 1
            )),
            None => {}
        }
    }
    (out, notes)
}

fn merge_addrs(base: &[String], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for a in extra {
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

/// The whole `series format`.
pub fn format_series(series: &Series, tree: &Path, req: &FormatRequest) -> Result<FormatReport> {
    let Preflight {
        version,
        out,
        sender,
        placeholder,
    } = preflight(series, req)?;
    let rewrite = Rewrite {
        sender: &sender,
        placeholder: placeholder.as_ref(),
        signoff: req.signoff,
    };
    let repo = open_repo(tree)?;
    // Before any work, so a missing script leaves nothing half-done.
    let maintainer_script = if req.auto_cc {
        Some(get_maintainer(tree)?)
    } else {
        None
    };
    let commits = build_commits(&repo, series, version, req.compare_to.as_deref(), &rewrite)?;

    let staged = out.stage()?;
    run_format_patch(tree, series, req, version, &commits, &sender, staged.path())?;
    let written = list_mails(staged.path())?;
    let mut notes = Vec::new();
    complete_cover(
        series,
        req.results_dir.as_deref(),
        version,
        commits.base,
        &written.cover,
        &mut notes,
    )?;
    let subjects = read_subjects(&written.all)?;
    let auto_cc = match &maintainer_script {
        Some(script) => Some(auto_cc(script, tree, &written.cover, &subjects.patches)?),
        None => None,
    };
    let threaded = thread_mails(
        &written.all,
        &series.toml.change_id,
        version,
        req.message_id_time,
        &sender,
    )?;
    if let Some(p) = &placeholder {
        refuse_placeholder(&written.all, &threaded.mails, p, out.path())?;
    }
    std::fs::write(staged.path().join(MBOX), mail::mbox(&threaded.mails))
        .with_context(|| format!("writing {MBOX}"))?;

    let checkpatch = if req.checkpatch {
        Some(run_checkpatch(
            tree,
            &written.cover,
            &subjects.patches,
            &mut notes,
        )?)
    } else {
        None
    };
    out.commit(staged)?;
    Ok(FormatReport {
        out: out.path().to_path_buf(),
        files: subjects.files,
        range_diff: commits.previous.map(|p| p.what),
        checkpatch,
        notes,
        auto_cc,
        sender,
        message_ids: threaded.message_ids,
    })
}

/// What is settled before any work: the version, where the mails go and
/// who sends them.
struct Preflight {
    version: u32,
    out: OutDir,
    sender: Ident,
    placeholder: Option<Ident>,
}

fn preflight(series: &Series, req: &FormatRequest) -> Result<Preflight> {
    let version = req.reroll.unwrap_or(series.toml.version);
    if version == 0 {
        bail!("--reroll must be 1 or more");
    }
    for addr in req.to.iter().chain(&req.cc) {
        if mailparse::addrparse(addr).map_or(true, |l| l.is_empty()) || !addr.contains('@') {
            bail!("{addr:?} is not a mail address");
        }
    }
    let out_path = req.out.clone().unwrap_or_else(|| {
        crate::util::target_dir()
            .join("series")
            .join(format!("{}-v{version}", series.name()))
    });
    let out = OutDir::check(&out_path).map_err(|err| {
        if req.out.is_none() {
            err.context(format!(
                "the default output directory {} (if an earlier xtask wrote it, without the \
                 marker, remove it; or pass --out DIR)",
                out_path.display()
            ))
        } else {
            err
        }
    })?;
    let placeholder = series
        .toml
        .placeholder_author
        .as_deref()
        .map(|p| Ident::parse(p, "series.toml placeholder-author"))
        .transpose()?;
    let Some(from) = req.from.as_deref() else {
        bail!(
            "no sender identity: set `git config user.name` and `git config user.email` (in the \
             kernel tree or in this project) or pass --from \"Name <address>\""
        );
    };
    let sender = Ident::parse(from, "--from")?;
    if let Some(p) = &placeholder {
        if p.same(&sender.name, &sender.email) {
            bail!(
                "the sender {sender} is the placeholder identity series.toml declares \
                 (placeholder-author), which nobody can post under; set your own `git config \
                 user.name`/`user.email` or pass --from \"Name <address>\""
            );
        }
    }
    Ok(Preflight {
        version,
        out,
        sender,
        placeholder,
    })
}

/// The previous version, rewritten like this one, for `--range-diff`.
struct Previous {
    /// `BASE..TIP`.
    range: String,
    /// What the user named, for the report.
    what: String,
}

/// The series as commits on its base, with the sender's identity.
struct Commits {
    base: Oid,
    tip: Oid,
    previous: Option<Previous>,
}

fn build_commits(
    repo: &Repository,
    series: &Series,
    version: u32,
    compare_to: Option<&str>,
    rewrite: &Rewrite,
) -> Result<Commits> {
    for file in &series.patches {
        mail::parse_patch_file(file)?;
    }
    let base = verify_base(repo, series)?;
    let tip = build_in_memory(repo, base.id(), &series.patches)?;
    let tip = rewrite_range(repo, base.id(), tip, rewrite)?;
    let previous = match previous_range(repo, series, version, compare_to)? {
        Some((prev_base, prev_tip, what)) => {
            // The same rewrite, so the range-diff shows only real changes.
            let prev_tip = rewrite_range(repo, prev_base, prev_tip, rewrite)?;
            Some(Previous {
                range: format!("{prev_base}..{prev_tip}"),
                what,
            })
        }
        None => None,
    };
    Ok(Commits {
        base: base.id(),
        tip,
        previous,
    })
}

/// `git format-patch` of the commits into `dir`, with the cover letter,
/// the addresses and the range-diff.
fn run_format_patch(
    tree: &Path,
    series: &Series,
    req: &FormatRequest,
    version: u32,
    commits: &Commits,
    sender: &Ident,
    dir: &Path,
) -> Result<()> {
    let existing = infer_style(&series.patches);
    let style = PatchStyle {
        abbrev: 12,
        signature: existing.signature,
        zero_commit: false,
        subject_prefix: series.toml.subject_prefix.clone(),
        numbered: None,
    };
    let mut args = vec![
        "--cover-letter".to_string(),
        format!("--base={}", commits.base),
        format!("--from={sender}"),
    ];
    if version > 1 {
        args.push(format!("--reroll-count={version}"));
    }
    for to in merge_addrs(&series.toml.to, &req.to) {
        args.push(format!("--to={to}"));
    }
    for cc in merge_addrs(&series.toml.cc, &req.cc) {
        args.push(format!("--cc={cc}"));
    }
    if let Some(previous) = &commits.previous {
        args.push(format!("--range-diff={}", previous.range));
    }
    format_patch(
        tree,
        commits.base,
        commits.tip,
        dir,
        &style,
        &args,
        Some((&sender.name, &sender.email)),
    )
}

/// The mails git format-patch wrote, in order.
struct Written {
    all: Vec<PathBuf>,
    cover: PathBuf,
}

fn list_mails(dir: &Path) -> Result<Written> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    all.sort();
    let Some(cover) = all.iter().find(|p| is_cover(p)).cloned() else {
        bail!("git format-patch wrote no cover letter");
    };
    Ok(Written { all, cover })
}

fn is_cover(path: &Path) -> bool {
    path.to_string_lossy().ends_with("0000-cover-letter.patch")
}

/// Completes the cover letter git format-patch wrote: subject, blurb,
/// changelog, Tested: and change-id (see the module docs).
fn complete_cover(
    series: &Series,
    results_dir: Option<&Path>,
    version: u32,
    base: Oid,
    cover_path: &Path,
    notes: &mut Vec<String>,
) -> Result<()> {
    let (subject, blurb) = cover_template(series.cover.as_deref())?;
    if series.cover.is_none() {
        notes.push(format!(
            "no {} in {}: the cover letter has a generated subject and no blurb",
            super::model::COVER_LETTER,
            series.dir.display()
        ));
    }
    let subject = subject.unwrap_or_else(|| {
        format!(
            "{}: backport to Linux {}",
            series.name(),
            series.toml.base.version
        )
    });
    let (changelog, changelog_notes) = changelog_section(series, version);
    notes.extend(changelog_notes);
    let mut middle = String::new();
    if !blurb.is_empty() {
        middle.push_str(&blurb);
        middle.push('\n');
    }
    middle.push_str(&changelog);
    let tested = results_dir.and_then(|dir| {
        crate::results::history::tested_section(
            dir,
            series.name(),
            version,
            &series.toml.base.version,
        )
    });
    if let Some(tested) = tested {
        middle.push_str(&tested);
        middle.push_str("\n\n");
    }
    let middle = middle.trim_end();
    let cover = std::fs::read_to_string(cover_path)?;
    let cover = fill_cover(&cover, &subject, middle, base, &series.toml.change_id)?;
    std::fs::write(cover_path, cover)?;
    Ok(())
}

/// Puts `subject` and `middle` in place of git format-patch's
/// placeholders and adds `change-id:` after `base-commit:`.
fn fill_cover(
    cover: &str,
    subject: &str,
    middle: &str,
    base: Oid,
    change_id: &str,
) -> Result<String> {
    if !cover.contains("*** SUBJECT HERE ***") || !cover.contains("*** BLURB HERE ***") {
        bail!("unexpected cover letter from git format-patch (no SUBJECT/BLURB placeholders)");
    }
    let mut cover = cover.replacen("*** SUBJECT HERE ***", &mail::encode_word(subject), 1);
    cover = if middle.is_empty() {
        cover.replacen("*** BLURB HERE ***\n\n", "", 1)
    } else {
        cover.replacen("*** BLURB HERE ***", middle, 1)
    };
    let base_line = format!("base-commit: {base}\n");
    if !cover.contains(&base_line) {
        bail!("git format-patch wrote no base-commit line");
    }
    Ok(cover.replacen(
        &base_line,
        &format!("{base_line}change-id: {change_id}\n"),
        1,
    ))
}

/// Each mail's file name and subject, and the patches without the cover.
struct Subjects {
    files: Vec<(String, String)>,
    patches: Vec<PathBuf>,
}

/// Reads every mail back; each patch must parse as one.
fn read_subjects(written: &[PathBuf]) -> Result<Subjects> {
    let mut files = Vec::new();
    let mut patches = Vec::new();
    for file in written {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read(file)?;
        let parsed = mailparse::parse_mail(text.strip_prefix(b"From ").map_or(&text[..], |r| {
            let end = r
                .iter()
                .position(|&b| b == b'\n')
                .map_or(r.len(), |e| e + 1);
            &r[end..]
        }))
        .map_err(|err| anyhow::anyhow!("{name}: unreadable mail: {err}"))?;
        let subject = parsed
            .headers
            .iter()
            .find(|h| h.get_key().eq_ignore_ascii_case("Subject"))
            .map(|h| h.get_value())
            .unwrap_or_default();
        if !is_cover(file) {
            mail::parse_patch(file, &text)?;
            patches.push(file.clone());
        }
        files.push((name, subject));
    }
    Ok(Subjects { files, patches })
}

/// The mails as threaded and written, with their Message-IDs.
struct Threaded {
    mails: Vec<String>,
    message_ids: Vec<String>,
}

/// Threads the patches to the cover letter, as `git format-patch
/// --thread` does, with ids of this run: the change-id, the version and
/// the patch number make them distinct across versions, the time across
/// runs.
fn thread_mails(
    written: &[PathBuf],
    change_id: &str,
    version: u32,
    message_id_time: Option<i64>,
    sender: &Ident,
) -> Result<Threaded> {
    let stamp = message_id_stamp(message_id_time)?;
    let cover_id = message_id(change_id, version, 0, &stamp, sender);
    let mut mails = Vec::new();
    let mut message_ids = Vec::new();
    for (k, file) in written.iter().enumerate() {
        let id = message_id(change_id, version, k, &stamp, sender);
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let parent = (k > 0).then_some(cover_id.as_str());
        let text = mail::add_thread_headers(&text, &id, parent)
            .with_context(|| format!("threading {}", file.display()))?;
        std::fs::write(file, &text).with_context(|| format!("writing {}", file.display()))?;
        mails.push(text);
        message_ids.push(id);
    }
    Ok(Threaded { mails, message_ids })
}

/// No mail may name series.toml's placeholder identity.
fn refuse_placeholder(
    written: &[PathBuf],
    mails: &[String],
    placeholder: &Ident,
    out: &Path,
) -> Result<()> {
    for (file, text) in written.iter().zip(mails) {
        if let Some((line, what)) = find_placeholder(text, placeholder) {
            bail!(
                "{} line {line} still names the placeholder identity {placeholder}: {what:?}; \
                 name a real person there in the patch files (nothing was written to {})",
                file.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                out.display()
            );
        }
    }
    Ok(())
}

fn run_checkpatch(
    tree: &Path,
    cover: &Path,
    patches: &[PathBuf],
    notes: &mut Vec<String>,
) -> Result<Checkpatch> {
    let result = checkpatch::run(tree, Some(cover), patches)?;
    if matches!(result, Checkpatch::Ran(_)) {
        notes.push(format!(
            "checkpatch ran on the cover letter with --ignore {}: its change-id: line is b4's \
             series trailer, not a Gerrit Change-Id",
            checkpatch::COVER_IGNORE
        ));
    }
    Ok(result)
}

/// File name of the one mbox holding every mail, for `b4 am -m`.
pub const MBOX: &str = "series.mbx";

/// `YYYYMMDDHHMMSS` (UTC) of `at` seconds since the epoch, default now.
fn message_id_stamp(at: Option<i64>) -> Result<String> {
    let when = match at {
        Some(secs) => time::OffsetDateTime::from_unix_timestamp(secs)
            .context("message id time out of range")?,
        None => time::OffsetDateTime::now_utc(),
    };
    Ok(when.format(time::macros::format_description!(
        "[year][month][day][hour][minute][second]"
    ))?)
}

/// `<change-id>-v<N>-<k>-<stamp>@<sender's domain>` (without the brackets).
fn message_id(change_id: &str, version: u32, k: usize, stamp: &str, sender: &Ident) -> String {
    format!("{change_id}-v{version}-{k}-{stamp}@{}", sender.domain())
}

/// The tree's `scripts/get_maintainer.pl`, or an error saying what to do.
fn get_maintainer(tree: &Path) -> Result<PathBuf> {
    let script = tree.join("scripts/get_maintainer.pl");
    if !script.is_file() {
        bail!(
            "--auto-cc needs {}, which {} does not have; drop --auto-cc or pass --tree with a kernel tree",
            script.display(),
            tree.display()
        );
    }
    Ok(script)
}

/// Runs the tree's `scripts/get_maintainer.pl` on each patch and adds the
/// people and lists it names to that patch's Cc (unless already in its To
/// or Cc); the cover letter gets every address added anywhere.
fn auto_cc(
    script: &Path,
    tree: &Path,
    cover: &Path,
    patches: &[PathBuf],
) -> Result<Vec<(String, Vec<String>)>> {
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    // get_maintainer.pl runs from the tree's top (it reads MAINTAINERS
    // there), so the patches are passed by absolute path.
    let sh = xshell::Shell::new()?;
    sh.change_dir(tree);
    let mut report = Vec::new();
    let mut everyone: Vec<String> = Vec::new();
    for patch in patches {
        let abs =
            std::path::absolute(patch).with_context(|| format!("resolving {}", patch.display()))?;
        let output = xshell::cmd!(
            sh,
            "perl {script} --no-rolestats --nogit --nogit-fallback {abs}"
        )
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running perl {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "{} failed on {} ({}): {}",
                script.display(),
                name_of(patch),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let named: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| l.contains('@'))
            .map(str::to_string)
            .collect();
        let text = std::fs::read_to_string(patch)
            .with_context(|| format!("reading {}", patch.display()))?;
        let (text, added) = mail::add_cc(&text, &named)
            .with_context(|| format!("adding Cc to {}", name_of(patch)))?;
        std::fs::write(patch, text).with_context(|| format!("writing {}", patch.display()))?;
        for a in &added {
            if !everyone.contains(a) {
                everyone.push(a.clone());
            }
        }
        report.push((name_of(patch), added));
    }
    let text =
        std::fs::read_to_string(cover).with_context(|| format!("reading {}", cover.display()))?;
    let (text, added) = mail::add_cc(&text, &everyone).context("adding Cc to the cover letter")?;
    std::fs::write(cover, text).with_context(|| format!("writing {}", cover.display()))?;
    report.insert(0, (name_of(cover), added));
    Ok(report)
}
