//! Parsing `git format-patch` mails the way `git am` reads them: author
//! (RFC 2047 decoded), author date with its time zone, subject without the
//! `[PATCH ...]` prefix, message up to `---`, the diff, the signature.
//!
//! The diff is also checked line by line before anything is applied, so that
//! a truncated file, CRLF line endings, a binary diff, a rename, a copy or a
//! deletion is reported with the patch file and the target file instead of an
//! opaque libgit2 message.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use regex::Regex;

/// One patch as `git am` would see it.
#[derive(Debug, Clone)]
pub struct PatchMail {
    pub file: PathBuf,
    /// The commit id of the mbox `From <sha> Mon Sep 17 00:00:00 2001` line.
    pub from_sha: Option<String>,
    pub author_name: String,
    pub author_email: String,
    /// Author date: seconds since the epoch and the zone offset in minutes.
    pub time: i64,
    pub offset_minutes: i32,
    /// Subject with `[PATCH ...]`/`Re:` prefixes removed.
    pub subject: String,
    /// The full commit message (subject, blank line, body), git-stripspace'd.
    pub message: String,
    /// From the first `diff --git` line to the end of the diff (signature excluded).
    pub diff: Vec<u8>,
    /// The format-patch signature (the text after `-- `), if any.
    pub signature: Option<String>,
    /// Files the diff modifies or creates, in order.
    pub files: Vec<String>,
}

/// Read and parse a format-patch mail.
pub fn parse_patch_file(path: &Path) -> Result<PatchMail> {
    let bytes = std::fs::read(path).with_context(|| format!("reading patch {}", path.display()))?;
    parse_patch(path, &bytes)
}

/// Read a patch that may be a mail or a bare `git diff` (mutants): a bare
/// diff gets `fallback_subject` and a fixed author.
pub fn parse_patch_or_diff(path: &Path, fallback_subject: &str) -> Result<PatchMail> {
    let bytes = std::fs::read(path).with_context(|| format!("reading patch {}", path.display()))?;
    if bytes.starts_with(b"diff --git ") {
        check_line_endings(path, &bytes)?;
        let files = check_diff(path, &bytes)?;
        return Ok(PatchMail {
            file: path.to_path_buf(),
            from_sha: None,
            author_name: "gmem61 xtask".into(),
            author_email: "xtask@gmem61.invalid".into(),
            time: 0,
            offset_minutes: 0,
            subject: fallback_subject.to_string(),
            message: format!("{fallback_subject}\n"),
            diff: bytes,
            signature: None,
            files,
        });
    }
    parse_patch(path, &bytes)
}

fn check_line_endings(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(pos) = bytes.windows(2).position(|w| w == b"\r\n") {
        let line = bytes[..pos].iter().filter(|&&b| b == b'\n').count() + 1;
        bail!(
            "{}: CRLF line endings (first at line {line}); patches must use LF only \
             (convert with `dos2unix` or re-export with `cargo xtask series export`)",
            path.display()
        );
    }
    Ok(())
}

/// Parse a format-patch mail held in memory; `path` names it in errors.
pub fn parse_patch(path: &Path, bytes: &[u8]) -> Result<PatchMail> {
    let p = path.display();
    if bytes.is_empty() {
        bail!("{p}: empty file, not a patch");
    }
    check_line_endings(path, bytes)?;
    let envelope = split_from_line(bytes);
    let mail = mailparse::parse_mail(envelope.mail)
        .map_err(|err| anyhow::anyhow!("{p}: not a mail written by `git format-patch`: {err}"))?;
    let mut headers = MailHeaders::read(path, &mail)?;
    let body = mail
        .get_body_raw()
        .map_err(|err| anyhow::anyhow!("{p}: cannot decode the mail body: {err}"))?;
    let parts = split_body(path, &body)?;
    let message_text = decode_message(path, &mail.ctype.charset, &body[..parts.msg_end])?;
    let diffstat = diffstat_totals(&body[parts.msg_end..parts.diff_start]);
    let body_text = headers.apply_in_body(path, &message_text)?;
    let message = stripspace(&format!("{}\n\n{body_text}", headers.subject));
    let diff = read_diff(path, &body[parts.diff_start..], diffstat)?;
    Ok(PatchMail {
        file: path.to_path_buf(),
        from_sha: envelope.from_sha,
        author_name: headers.author.name,
        author_email: headers.author.email,
        time: headers.date.time,
        offset_minutes: headers.date.offset_minutes,
        subject: headers.subject,
        message,
        diff: diff.diff,
        signature: diff.signature,
        files: diff.files,
    })
}

/// A mail with its mbox `From ` line split off.
struct Envelope<'a> {
    /// The commit id that line names, if it names one.
    from_sha: Option<String>,
    mail: &'a [u8],
}

fn split_from_line(bytes: &[u8]) -> Envelope<'_> {
    if !bytes.starts_with(b"From ") {
        return Envelope {
            from_sha: None,
            mail: bytes,
        };
    }
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..end]);
    let token = line.split_whitespace().nth(1).unwrap_or("");
    let from_sha = (token.len() == 40 && token.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| token.to_string());
    Envelope {
        from_sha,
        mail: &bytes[(end + 1).min(bytes.len())..],
    }
}

struct Author {
    name: String,
    email: String,
}

/// Seconds since the epoch and the zone offset in minutes.
struct AuthorDate {
    time: i64,
    offset_minutes: i32,
}

/// What `git am` takes from the headers (and in-body header lines).
struct MailHeaders {
    author: Author,
    date: AuthorDate,
    subject: String,
}

impl MailHeaders {
    fn read(path: &Path, mail: &mailparse::ParsedMail) -> Result<Self> {
        let p = path.display();
        let header = |name: &str| {
            mail.headers
                .iter()
                .find(|h| h.get_key().eq_ignore_ascii_case(name))
        };
        let (Some(from), Some(date), Some(subject)) =
            (header("From"), header("Date"), header("Subject"))
        else {
            bail!(
                "{p}: not a patch written by `git format-patch` (needs From:, Date: and Subject: headers); \
                 a series directory holds only format-patch files and series.toml"
            );
        };
        let author = parse_author(&from.get_value())
            .with_context(|| format!("{p}: bad From: header {:?}", from.get_value()))?;
        let date_text = date.get_value();
        let time = mailparse::dateparse(&date_text)
            .map_err(|err| anyhow::anyhow!("{p}: bad Date: header {date_text:?}: {err}"))?;
        let offset_minutes = parse_zone(&date_text)
            .with_context(|| format!("{p}: Date: header {date_text:?} has no +HHMM zone"))?;
        let subject = clean_subject(&subject.get_value());
        if subject.is_empty() {
            bail!("{p}: empty Subject:");
        }
        Ok(MailHeaders {
            author,
            date: AuthorDate {
                time,
                offset_minutes,
            },
            subject,
        })
    }

    /// In-body headers (`From:`/`Date:`/`Subject:` lines opening the body,
    /// as `git format-patch --from` and mailing lists write them) override
    /// the mail headers, as in `git am`. Returns the body after them.
    fn apply_in_body<'a>(&mut self, path: &Path, text: &'a str) -> Result<&'a str> {
        let p = path.display();
        let mut body_text = text.trim_start_matches('\n');
        let mut in_body = false;
        while let Some((line, rest)) = body_text.split_once('\n') {
            if let Some(value) = line.strip_prefix("From: ") {
                // RFC 2047 encoded words decoded, as in a mail header.
                let raw = format!("From: {value}");
                let (header, _) = mailparse::parse_header(raw.as_bytes()).map_err(|err| {
                    anyhow::anyhow!("{p}: bad in-body From: line {value:?}: {err}")
                })?;
                self.author = parse_author(&header.get_value())
                    .with_context(|| format!("{p}: bad in-body From: line {value:?}"))?;
            } else if let Some(value) = line.strip_prefix("Date: ") {
                self.date.time = mailparse::dateparse(value).map_err(|err| {
                    anyhow::anyhow!("{p}: bad in-body Date: line {value:?}: {err}")
                })?;
                self.date.offset_minutes = parse_zone(value)
                    .with_context(|| format!("{p}: in-body Date: {value:?} has no +HHMM zone"))?;
            } else if let Some(value) = line.strip_prefix("Subject: ") {
                self.subject = clean_subject(value);
            } else {
                break;
            }
            in_body = true;
            body_text = rest;
        }
        if in_body && !body_text.starts_with('\n') && !body_text.is_empty() {
            bail!("{p}: in-body From:/Date:/Subject: lines must be followed by a blank line");
        }
        Ok(body_text)
    }
}

/// Where the message ends and the diff starts in a mail body.
struct BodyParts {
    msg_end: usize,
    diff_start: usize,
}

/// The message runs up to the first `---` line (or the diff if there is
/// no `---`); the diff starts at the first `diff --git` line.
fn split_body(path: &Path, body: &[u8]) -> Result<BodyParts> {
    let p = path.display();
    let mut msg_end = None;
    let mut diff_start = None;
    let mut offset = 0;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let text = trim_eol(line);
        if msg_end.is_none()
            && (text.starts_with(b"---") && text[3..].iter().all(|b| b.is_ascii_whitespace())
                || text.starts_with(b"diff -")
                || text.starts_with(b"Index: "))
        {
            msg_end = Some(offset);
        }
        if text.starts_with(b"diff --git ") {
            diff_start = Some(offset);
            break;
        }
        offset += line.len();
    }
    let Some(diff_start) = diff_start else {
        if body.windows(b"\n@@ -".len()).any(|w| w == b"\n@@ -")
            || body.windows(4).any(|w| w == b"\n---")
        {
            bail!("{p}: truncated or mangled patch: no `diff --git` line found after the message");
        }
        bail!("{p}: no diff in this mail; is it a patch written by `git format-patch`?");
    };
    Ok(BodyParts {
        msg_end: msg_end.unwrap_or(diff_start),
        diff_start,
    })
}

/// The message in the mail's charset, converted to UTF-8 as `git am`
/// does (the diff is taken byte for byte, as git am does too).
fn decode_message<'a>(path: &Path, charset: &str, message: &'a [u8]) -> Result<Cow<'a, str>> {
    let p = path.display();
    let charset = charset.to_ascii_lowercase();
    if matches!(charset.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii") {
        return Ok(Cow::Borrowed(std::str::from_utf8(message).map_err(
            |_| {
                anyhow::anyhow!(
                    "{p}: commit message is not valid UTF-8 (and the mail names no other charset)"
                )
            },
        )?));
    }
    let Some(encoding) = encoding_rs::Encoding::for_label(charset.as_bytes()) else {
        bail!("{p}: unknown charset {charset:?} in Content-Type");
    };
    let (text, had_errors) = encoding.decode_without_bom_handling(message);
    if had_errors {
        bail!("{p}: the commit message is not valid {charset}");
    }
    Ok(Cow::Owned(text.into_owned()))
}

/// The checked diff of a mail and its signature.
struct DiffPart {
    diff: Vec<u8>,
    signature: Option<String>,
    files: Vec<String>,
}

/// Splits the signature off the diff part of a mail body (after the last
/// "-- " line, if what follows holds no diff lines), checks the diff and
/// holds it against the diffstat.
fn read_diff(path: &Path, diff_part: &[u8], diffstat: Option<DiffTotals>) -> Result<DiffPart> {
    let p = path.display();
    let (diff, signature) = split_signature(diff_part);
    if signature.is_none() && !diff.ends_with(b"\n") {
        bail!("{p}: truncated: the file ends in the middle of a line and has no `-- ` signature");
    }
    let checked = check_diff_counted(path, diff)?;
    let diff = for_libgit2(diff);
    if let Some(stat) = diffstat {
        let found = DiffTotals {
            files: checked.files.len() as u64,
            added: checked.added,
            removed: checked.removed,
        };
        if stat != found {
            bail!(
                "{p}: truncated: its diffstat says {} files changed, {} insertions(+), \
                 {} deletions(-), but the diff holds {} files, {} insertions(+), \
                 {} deletions(-) (cut at a file boundary?); take the patch again from its source",
                stat.files,
                stat.added,
                stat.removed,
                found.files,
                found.added,
                found.removed
            );
        }
    }
    Ok(DiffPart {
        diff,
        signature,
        files: checked.files,
    })
}

/// The diff as libgit2 can read it. git writes a path with a space
/// unquoted (`diff --git a/my file.c b/my file.c`) and ends its `---`/`+++`
/// lines with a TAB (so that GNU patch finds where the name ends).
/// libgit2 cannot split such a `diff --git` line (a new file then has no
/// old path and fails to apply) and takes the TAB for part of the name, so
/// the header is quoted and the TAB dropped; neither carries anything else.
fn for_libgit2(diff: &[u8]) -> Vec<u8> {
    let quote = |path: &str| format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = Vec::with_capacity(diff.len());
    for line in diff.split_inclusive(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"diff --git ") {
            let rest = String::from_utf8_lossy(rest);
            if !rest.contains('"') {
                if let Some((a, b)) = split_git_paths(&rest) {
                    if a.contains(' ') || b.contains(' ') {
                        let header = format!(
                            "diff --git {} {}\n",
                            quote(&format!("a/{a}")),
                            quote(&format!("b/{b}"))
                        );
                        out.extend_from_slice(header.as_bytes());
                        continue;
                    }
                }
            }
        }
        let is_name = line.starts_with(b"--- ") || line.starts_with(b"+++ ");
        match line.strip_suffix(b"\t\n") {
            Some(name) if is_name && name.contains(&b' ') => {
                out.extend_from_slice(name);
                out.push(b'\n');
            }
            _ => out.extend_from_slice(line),
        }
    }
    out
}

/// Files changed, lines added and lines removed.
#[derive(Debug, PartialEq, Eq)]
struct DiffTotals {
    files: u64,
    added: u64,
    removed: u64,
}

/// The totals of a `git diff --stat` summary line (` 2 files changed,
/// 7 insertions(+), 1 deletion(-)`) in `text`, if there is one.
fn diffstat_totals(text: &[u8]) -> Option<DiffTotals> {
    static R: OnceLock<Regex> = OnceLock::new();
    let re = crate::util::static_regex(
        &R,
        r"(?m)^ (\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?$",
    );
    let text = String::from_utf8_lossy(text);
    let caps = re.captures_iter(&text).last()?;
    let n = |i: usize| caps.get(i).map_or(Some(0), |m| m.as_str().parse().ok());
    Some(DiffTotals {
        files: n(1)?,
        added: n(2)?,
        removed: n(3)?,
    })
}

fn trim_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

fn split_signature(diff: &[u8]) -> (&[u8], Option<String>) {
    let marker = b"\n-- \n";
    if let Some(pos) = diff.windows(marker.len()).rposition(|w| w == marker) {
        let tail = &diff[pos + marker.len()..];
        let looks_like_diff = tail.split(|&b| b == b'\n').any(|l| {
            l.starts_with(b"@@ ") || l.starts_with(b"diff --git ") || l.starts_with(b"+++ ")
        });
        if !looks_like_diff {
            let mut sig = String::from_utf8_lossy(tail).into_owned();
            // format-patch writes "-- \n<sig>\n\n": drop the final blank line.
            if sig.ends_with("\n\n") {
                sig.pop();
            }
            return (&diff[..pos + 1], Some(sig));
        }
    }
    (diff, None)
}

fn parse_author(value: &str) -> Result<Author> {
    let list = mailparse::addrparse(value).map_err(|err| anyhow::anyhow!("{err}"))?;
    match list.first() {
        Some(mailparse::MailAddr::Single(info)) if list.len() == 1 => {
            let name = info.display_name.clone().unwrap_or_default();
            let name = if name.trim().is_empty() {
                info.addr.clone()
            } else {
                name
            };
            Ok(Author {
                name,
                email: info.addr.clone(),
            })
        }
        _ => bail!("expected one author address"),
    }
}

fn parse_zone(date: &str) -> Option<i32> {
    let token = date.split_whitespace().last()?;
    let (sign, digits) = match token.as_bytes().first()? {
        b'+' => (1, &token[1..]),
        b'-' => (-1, &token[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    Some(sign * (hours * 60 + minutes))
}

/// `git mailinfo`'s subject cleanup: drop leading `Re:` and `[...]` groups.
pub fn clean_subject(subject: &str) -> String {
    let mut s = subject.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("re:") {
            s = s[3..].trim_start();
        } else if s.starts_with('[') {
            match s.find(']') {
                Some(end) => s = s[end + 1..].trim_start(),
                None => break,
            }
        } else {
            break;
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `git stripspace` without comment removal: trailing whitespace dropped,
/// runs of blank lines squeezed, leading/trailing blank lines removed, one
/// final newline.
pub fn stripspace(text: &str) -> String {
    let mut out = String::new();
    let mut pending_blank = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            pending_blank = !out.is_empty();
            continue;
        }
        if pending_blank {
            out.push('\n');
            pending_blank = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Check a diff before applying it; returns the target files.
pub fn check_diff(path: &Path, diff: &[u8]) -> Result<Vec<String>> {
    Ok(check_diff_counted(path, diff)?.files)
}

/// The files a diff touches and the lines it adds and removes.
struct CheckedDiff {
    files: Vec<String>,
    added: u64,
    removed: u64,
}

/// [`check_diff`], also counting the added and removed lines.
fn check_diff_counted(path: &Path, diff: &[u8]) -> Result<CheckedDiff> {
    let mut checker = DiffChecker::new(path);
    let mut lines = diff.split(|&b| b == b'\n').peekable();
    while let Some(raw) = lines.next() {
        let is_last = lines.peek().is_none();
        if is_last && raw.is_empty() {
            break;
        }
        checker.line(raw)?;
    }
    checker.finish()
}

/// The `diff --git` section being read.
struct Section {
    file: String,
    has_change: bool,
    mode_only: bool,
}

/// The hunk being read: lines its header promises that are still to come.
struct Hunk {
    old_left: u64,
    new_left: u64,
    header: String,
}

/// [`check_diff_counted`] between two lines of the diff.
struct DiffChecker<'a> {
    path: &'a Path,
    hunk_re: &'static Regex,
    files: Vec<String>,
    current: Option<Section>,
    hunk: Option<Hunk>,
    added: u64,
    removed: u64,
    line_no: usize,
}

impl<'a> DiffChecker<'a> {
    fn new(path: &'a Path) -> Self {
        DiffChecker {
            path,
            hunk_re: {
                static R: OnceLock<Regex> = OnceLock::new();
                crate::util::static_regex(&R, r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
            },
            files: Vec::new(),
            current: None,
            hunk: None,
            added: 0,
            removed: 0,
            line_no: 0,
        }
    }

    fn file(&self) -> &str {
        self.current.as_ref().map_or("?", |s| s.file.as_str())
    }

    fn line(&mut self, raw: &[u8]) -> Result<()> {
        self.line_no += 1;
        if self.hunk_line(raw)? {
            return Ok(());
        }
        self.header_line(&String::from_utf8_lossy(raw))
    }

    /// A line the open hunk still expects, counted against its header;
    /// false once the hunk is complete.
    fn hunk_line(&mut self, raw: &[u8]) -> Result<bool> {
        let p = self.path.display();
        let line_no = self.line_no;
        let Some(Hunk {
            old_left,
            new_left,
            header,
        }) = self.hunk.as_mut()
        else {
            return Ok(false);
        };
        if *old_left > 0 || *new_left > 0 {
            let file = self.current.as_ref().map_or("?", |s| s.file.as_str());
            match raw.first() {
                Some(b' ') | None => {
                    if *old_left == 0 || *new_left == 0 {
                        bail!("{p}: malformed hunk `{header}` of {file}: more context lines than its header counts");
                    }
                    *old_left -= 1;
                    *new_left -= 1;
                }
                Some(b'-') => {
                    if *old_left == 0 {
                        bail!("{p}: malformed hunk `{header}` of {file}: more removed lines than its header counts");
                    }
                    *old_left -= 1;
                    self.removed += 1;
                }
                Some(b'+') => {
                    if *new_left == 0 {
                        bail!("{p}: malformed hunk `{header}` of {file}: more added lines than its header counts");
                    }
                    *new_left -= 1;
                    self.added += 1;
                }
                Some(b'\\') => {}
                Some(_) => bail!(
                    "{p}: truncated: hunk `{header}` of {file} stops at line {line_no} of the diff \
                     with {old_left} old and {new_left} new lines missing"
                ),
            }
            return Ok(true);
        }
        if raw.first() == Some(&b'\\') {
            return Ok(true);
        }
        self.hunk = None;
        Ok(false)
    }

    /// A line outside any hunk: file headers, extended headers, hunk headers.
    fn header_line(&mut self, text: &str) -> Result<()> {
        let p = self.path.display();
        if let Some(rest) = text.strip_prefix("diff --git ") {
            self.finish_section()?;
            let (a, b) = split_git_paths(rest)
                .with_context(|| format!("{p}: cannot read the paths of `{text}`"))?;
            if a != b {
                bail!(
                    "{p}: renames are not supported ({a} -> {b}); regenerate the patch with \
                     `git format-patch --no-renames` or split the change"
                );
            }
            self.current = Some(Section {
                file: b.clone(),
                has_change: false,
                mode_only: false,
            });
            self.files.push(b);
        } else if text.starts_with("GIT binary patch") || text.starts_with("Binary files ") {
            bail!(
                "{p}: binary diff of {} is not supported; the series must be plain text patches",
                self.file()
            );
        } else if text.starts_with("deleted file mode ") {
            bail!(
                "{p}: deletes {}; deleting files is not supported by `apply` (keep the file, empty it, \
                 or handle the deletion outside the series)",
                self.file()
            );
        } else if text.starts_with("rename from ")
            || text.starts_with("rename to ")
            || text.starts_with("copy from ")
            || text.starts_with("copy to ")
            || text.starts_with("similarity index ")
        {
            bail!(
                "{p}: renames and copies are not supported ({}); regenerate with `git format-patch --no-renames`",
                text
            );
        } else if text.starts_with("old mode ")
            || text.starts_with("new mode ")
            || text.starts_with("new file mode ")
        {
            if let Some(section) = self.current.as_mut() {
                section.mode_only = true;
            }
        } else if let Some(caps) = self.hunk_re.captures(text) {
            let Some(section) = self.current.as_mut() else {
                bail!("{p}: hunk `{text}` before any `diff --git` line");
            };
            let count = |m: Option<regex::Match>| m.map_or(Ok(1), |m| m.as_str().parse::<u64>());
            let old =
                count(caps.get(2)).with_context(|| format!("{p}: bad hunk header `{text}`"))?;
            let new =
                count(caps.get(4)).with_context(|| format!("{p}: bad hunk header `{text}`"))?;
            self.hunk = Some(Hunk {
                old_left: old,
                new_left: new,
                header: text.trim_end().to_string(),
            });
            section.has_change = true;
        } else if text.starts_with("index ") || text.starts_with("--- ") || text.starts_with("+++ ")
        {
        } else if self.current.is_some() && text.trim().is_empty() {
            // A blank line between file sections (e.g. before a signature) is harmless.
        } else {
            bail!(
                "{p}: unexpected line {} in the diff of {}: {:?}; the patch is truncated or mangled",
                self.line_no,
                self.file(),
                text
            );
        }
        Ok(())
    }

    /// A file section must change something: a hunk or a mode.
    fn finish_section(&self) -> Result<()> {
        if let Some(section) = &self.current {
            if !section.has_change && !section.mode_only {
                bail!(
                    "{}: truncated: the diff of {} has no hunks",
                    self.path.display(),
                    section.file
                );
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<CheckedDiff> {
        let p = self.path.display();
        if let Some(Hunk {
            old_left,
            new_left,
            header,
        }) = &self.hunk
        {
            if *old_left > 0 || *new_left > 0 {
                bail!(
                    "{p}: truncated: the file ends inside hunk `{header}` of {} with {old_left} old and \
                     {new_left} new lines missing",
                    self.file()
                );
            }
        }
        self.finish_section()?;
        if self.files.is_empty() {
            bail!("{p}: the diff touches no file");
        }
        Ok(CheckedDiff {
            files: self.files,
            added: self.added,
            removed: self.removed,
        })
    }
}

/// Split `a/X b/Y` of a `diff --git` line; either path may be quoted
/// the way git quotes unusual names (`"a/na\303\257ve.c"`).
fn split_git_paths(rest: &str) -> Option<(String, String)> {
    let rest = rest.trim_end_matches('\n');
    if rest.starts_with('"') {
        let (a, used) = unquote_c(rest)?;
        let b_text = rest[used..].strip_prefix(' ')?;
        let b = if b_text.starts_with('"') {
            let (b, used) = unquote_c(b_text)?;
            if used != b_text.len() {
                return None;
            }
            b
        } else {
            b_text.to_string()
        };
        return Some((
            a.strip_prefix("a/")?.to_string(),
            b.strip_prefix("b/")?.to_string(),
        ));
    }
    if rest.ends_with('"') {
        let idx = rest.find(" \"b/")?;
        let (b, used) = unquote_c(&rest[idx + 1..])?;
        if used != rest.len() - idx - 1 {
            return None;
        }
        return Some((
            rest[..idx].strip_prefix("a/")?.to_string(),
            b.strip_prefix("b/")?.to_string(),
        ));
    }
    // Paths contain no " b/" in practice; if they do, the halves are equal.
    let a = rest.strip_prefix("a/")?;
    let len = a.len();
    if len >= 3 && (len - 3) % 2 == 0 {
        let half = (len - 3) / 2;
        if a.is_char_boundary(half) && a[half..].starts_with(" b/") && a[..half] == a[half + 3..] {
            return Some((a[..half].to_string(), a[..half].to_string()));
        }
    }
    let idx = a.find(" b/")?;
    Some((a[..idx].to_string(), a[idx + 3..].to_string()))
}

/// One C-quoted string at the start of `text` (as git writes paths with
/// control characters, quotes, backslashes or non-ASCII bytes): its value
/// and how many bytes of `text` it used. None if malformed or not UTF-8.
fn unquote_c(text: &str) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some((String::from_utf8(out).ok()?, i + 1)),
            b'\\' => {
                let c = *bytes.get(i + 1)?;
                i += 2;
                match c {
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b't' => out.push(b'\t'),
                    b'n' => out.push(b'\n'),
                    b'v' => out.push(11),
                    b'f' => out.push(12),
                    b'r' => out.push(b'\r'),
                    b'"' | b'\\' => out.push(c),
                    b'0'..=b'3' => {
                        let digits = bytes.get(i..i + 2)?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return None;
                        }
                        out.push((c - b'0') * 64 + (digits[0] - b'0') * 8 + (digits[1] - b'0'));
                        i += 2;
                    }
                    _ => return None,
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

/// RFC 2047-encodes `text` as one UTF-8 "Q" word when it is not plain
/// ASCII (format-patch does the same for subjects and author names).
pub fn encode_word(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let mut out = String::from("=?UTF-8?q?");
    for b in text.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                out.push(b as char)
            }
            b' ' => out.push('_'),
            _ => out.push_str(&format!("={b:02X}")),
        }
    }
    out.push_str("?=");
    out
}

/// The lines (first, last) of every `name:` header in `headers`, folded
/// continuation lines included.
fn header_spans(headers: &[&str], name: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    for (start, line) in headers.iter().enumerate() {
        let named = line
            .split_once(':')
            .is_some_and(|(key, _)| key.eq_ignore_ascii_case(name));
        if named {
            let mut last = start;
            while last + 1 < headers.len() && headers[last + 1].starts_with([' ', '\t']) {
                last += 1;
            }
            spans.push((start, last));
        }
    }
    spans
}

/// The addresses (lower-cased) of every `name:` header in `headers`.
fn header_addrs(headers: &[&str], name: &str) -> Vec<String> {
    header_spans(headers, name)
        .into_iter()
        .flat_map(|(first, last)| {
            let value = headers[first..=last].concat();
            let value = value.split_once(':').map_or("", |(_, v)| v).to_string();
            parse_addrs(&value)
        })
        .collect()
}

fn parse_addrs(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(list) = mailparse::addrparse(value) {
        for item in list.iter() {
            match item {
                mailparse::MailAddr::Single(s) => out.push(s.addr.to_lowercase()),
                mailparse::MailAddr::Group(g) => {
                    out.extend(g.addrs.iter().map(|s| s.addr.to_lowercase()))
                }
            }
        }
    }
    out
}

/// Adds `addrs` ("Name <addr>" or "addr") to the Cc header of the mail
/// `text`, skipping any already in its To or Cc (by address, ignoring
/// case); creates the Cc header after To when there is none; names that
/// are not ASCII are RFC 2047-encoded. Returns the new text and what was
/// added (as given).
pub fn add_cc(text: &str, addrs: &[String]) -> Result<(String, Vec<String>)> {
    let Some(end) = text.find("\n\n") else {
        bail!("no end of the mail headers (blank line)");
    };
    let headers: Vec<&str> = text[..end].split('\n').collect();
    let mut known = header_addrs(&headers, "To");
    known.extend(header_addrs(&headers, "Cc"));
    let mut added = Vec::new();
    let mut written = Vec::new();
    for entry in addrs {
        let list = match mailparse::addrparse(entry) {
            Ok(list) => list,
            Err(_) => bail!("{entry:?} is not a mail address"),
        };
        let Some(mailparse::MailAddr::Single(info)) = list.first() else {
            bail!("{entry:?} is not a single mail address");
        };
        let addr = info.addr.to_lowercase();
        if !addr.contains('@') || known.contains(&addr) {
            continue;
        }
        known.push(addr);
        written.push(match &info.display_name {
            Some(name) if !name.is_ascii() => format!("{} <{}>", encode_word(name), info.addr),
            _ => entry.clone(),
        });
        added.push(entry.clone());
    }
    if added.is_empty() {
        return Ok((text.to_string(), added));
    }
    let folded = written.join(",\n    ");
    // The last line of the Cc header (else of To, else of all headers).
    let block_end = |name: &str| header_spans(&headers, name).first().map(|&(_, last)| last);
    let mut lines: Vec<String> = headers.iter().map(|l| l.to_string()).collect();
    if let Some(last) = block_end("Cc") {
        lines[last].push_str(&format!(",\n    {folded}"));
    } else {
        let at = block_end("To").unwrap_or(lines.len() - 1);
        lines.insert(at + 1, format!("Cc: {folded}"));
    }
    Ok((format!("{}{}", lines.join("\n"), &text[end..]), added))
}

/// Adds `Message-ID: <id>` and, with `parent`, `In-Reply-To:` and
/// `References:` after the `Subject:` header of the mail `text` (where
/// `git format-patch --thread` puts them). Refuses a mail that has a
/// Message-ID already.
pub fn add_thread_headers(text: &str, id: &str, parent: Option<&str>) -> Result<String> {
    let Some(end) = text.find("\n\n") else {
        bail!("no end of the mail headers (blank line)");
    };
    let headers: Vec<&str> = text[..end].split('\n').collect();
    if !header_spans(&headers, "Message-ID").is_empty() {
        bail!("the mail has a Message-ID already");
    }
    let Some(&(_, last)) = header_spans(&headers, "Subject").first() else {
        bail!("the mail has no Subject: header");
    };
    let mut lines: Vec<String> = headers.iter().map(|l| l.to_string()).collect();
    let mut new = vec![format!("Message-ID: <{id}>")];
    if let Some(parent) = parent {
        new.push(format!("In-Reply-To: <{parent}>"));
        new.push(format!("References: <{parent}>"));
    }
    lines.splice(last + 1..last + 1, new);
    Ok(format!("{}{}", lines.join("\n"), &text[end..]))
}

/// One mbox of `mails` (each starting with its `From <sha> ...` line), in
/// order: body lines that start with `From ` (after any `>`) get one more
/// `>` (mboxrd quoting), and every mail ends with a blank line.
pub fn mbox(mails: &[String]) -> String {
    let mut out = String::new();
    for mail in mails {
        for (i, line) in mail.split_inclusive('\n').enumerate() {
            if i > 0 && line.trim_start_matches('>').starts_with("From ") {
                out.push('>');
            }
            out.push_str(line);
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_cleanup_matches_git_am() {
        assert_eq!(
            clean_subject("[PATCH v2 3/7] KVM: x86: do it"),
            "KVM: x86: do it"
        );
        assert_eq!(clean_subject("Re: [RFC PATCH] [foo] bar  baz"), "bar baz");
    }

    #[test]
    fn stripspace_squeezes_and_trims() {
        assert_eq!(stripspace("\n\nS\n\n\n b  \n\n"), "S\n\n b\n");
    }

    #[test]
    fn zone_offsets() {
        assert_eq!(parse_zone("Wed, 25 Nov 2026 17:14:02 +0530"), Some(330));
        assert_eq!(parse_zone("Wed, 25 Nov 2026 17:14:02 -0100"), Some(-60));
        assert_eq!(parse_zone("Wed, 25 Nov 2026 17:14:02"), None);
    }

    #[test]
    fn in_body_from_overrides_the_sender() {
        let mail = b"From: Sender <s@example.org>\nDate: Wed, 25 Nov 2026 17:14:02 +0000\nSubject: [PATCH] x: y\n\nFrom: Real Author <a@example.org>\nDate: Tue, 24 Nov 2026 10:00:00 -0500\n\nBody\n---\n f | 1 +\n\ndiff --git a/f b/f\nindex 1..2 100644\n--- a/f\n+++ b/f\n@@ -1 +1,2 @@\n a\n+b\n";
        let parsed = parse_patch(Path::new("0001-x.patch"), mail).unwrap();
        assert_eq!(
            (parsed.author_name.as_str(), parsed.author_email.as_str()),
            ("Real Author", "a@example.org")
        );
        assert_eq!(parsed.offset_minutes, -300);
        assert_eq!(parsed.message, "x: y\n\nBody\n");
        assert_eq!(parsed.signature, None);
    }

    #[test]
    fn rfc2047_author_is_decoded() {
        let mail = b"From: =?UTF-8?q?J=C3=B6rg=20R=C3=B6del?= <j@example.org>\nDate: Wed, 25 Nov 2026 17:14:02 +0100\nSubject: [PATCH] x: y\n\nBody\n---\n f | 1 +\n\ndiff --git a/f b/f\nindex 1..2 100644\n--- a/f\n+++ b/f\n@@ -1 +1,2 @@\n a\n+b\n-- \n2.47.3\n\n";
        let parsed = parse_patch(Path::new("0001-x.patch"), mail).unwrap();
        assert_eq!(parsed.author_name, "J\u{f6}rg R\u{f6}del");
        assert_eq!(parsed.offset_minutes, 60);
        assert_eq!(parsed.message, "x: y\n\nBody\n");
        assert_eq!(parsed.signature.as_deref(), Some("2.47.3\n"));
        assert_eq!(parsed.files, vec!["f".to_string()]);
    }

    #[test]
    fn add_cc_appends_to_a_folded_cc_and_skips_known_addresses() {
        let mail = "From x\nSubject: s\nTo: a@x.org\nCc: B <b@x.org>,\n    c@x.org\n\nbody\nCc: not@header.org\n";
        let (text, added) = add_cc(
            mail,
            &[
                "A <A@X.ORG>".into(),
                "c@x.org".into(),
                "\"D. E\" <d@x.org>".into(),
                "Zoë <z@x.org>".into(),
            ],
        )
        .unwrap();
        assert_eq!(added, ["\"D. E\" <d@x.org>", "Zoë <z@x.org>"]);
        assert_eq!(
            text,
            "From x\nSubject: s\nTo: a@x.org\nCc: B <b@x.org>,\n    c@x.org,\n    \"D. E\" <d@x.org>,\n    =?UTF-8?q?Zo=C3=AB?= <z@x.org>\n\nbody\nCc: not@header.org\n"
        );
    }

    #[test]
    fn thread_headers_follow_the_folded_subject() {
        let mail = "From 1 Mon Sep 17 00:00:00 2001\nFrom: a@x.org\nSubject: [PATCH 1/2] a long\n subject\nTo: b@x.org\n\nbody\nSubject: no\n";
        let text = add_thread_headers(mail, "p1@x.org", Some("c@x.org")).unwrap();
        assert_eq!(
            text,
            "From 1 Mon Sep 17 00:00:00 2001\nFrom: a@x.org\nSubject: [PATCH 1/2] a long\n subject\nMessage-ID: <p1@x.org>\nIn-Reply-To: <c@x.org>\nReferences: <c@x.org>\nTo: b@x.org\n\nbody\nSubject: no\n"
        );
        assert!(add_thread_headers(&text, "again@x.org", None).is_err());
    }

    #[test]
    fn mbox_quotes_from_lines_and_separates_mails() {
        let mails = [
            "From 1 Mon\nSubject: a\n\nFrom the start\n>From quoted\n".to_string(),
            "From 2 Mon\nSubject: b\n\nbody\n\n".to_string(),
        ];
        assert_eq!(
            mbox(&mails),
            "From 1 Mon\nSubject: a\n\n>From the start\n>>From quoted\n\nFrom 2 Mon\nSubject: b\n\nbody\n\n"
        );
    }

    #[test]
    fn add_cc_creates_the_header_after_to_and_leaves_a_mail_alone_when_nothing_is_new() {
        let mail = "Subject: s\nTo: a@x.org,\n    b@x.org\nDate: d\n\nbody\n";
        let (text, added) = add_cc(mail, &["n@x.org".into()]).unwrap();
        assert_eq!(added, ["n@x.org"]);
        assert_eq!(
            text,
            "Subject: s\nTo: a@x.org,\n    b@x.org\nCc: n@x.org\nDate: d\n\nbody\n"
        );
        let (same, none) = add_cc(mail, &["B@x.org".into()]).unwrap();
        assert!(none.is_empty());
        assert_eq!(same, mail);
        assert!(add_cc("Subject: no body", &["n@x.org".into()]).is_err());
        assert!(add_cc(mail, &["not an address".into()]).is_err());
    }
}
