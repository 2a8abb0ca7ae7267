//! Who sends a formatted series, and the placeholder identity the patch
//! files carry when no real person authored them.
//!
//! The patches in `patches/` may be authored and signed off by a project
//! identity nobody can post under the DCO; series.toml declares it as
//! `placeholder-author`. `series format` rewrites the commits it formats
//! (in the object database only): a commit by the placeholder becomes the
//! sender's, with the placeholder's Signed-off-by replaced by the sender's
//! (the backporter of a rewritten patch is its author; the upstream authors
//! are credited in the message). `--signoff` adds the sender's
//! Signed-off-by to every commit, as `git format-patch --signoff` does.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use git2::{Oid, Repository, Signature};

/// "Name <address>".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub email: String,
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <{}>", self.name, self.email)
    }
}

impl Ident {
    /// Parse "Name <address>"; `what` names the source in errors.
    pub fn parse(text: &str, what: &str) -> Result<Ident> {
        if let Ok(list) = mailparse::addrparse(text) {
            if let Some(mailparse::MailAddr::Single(info)) = list.first() {
                let name = info.display_name.clone().unwrap_or_default();
                if list.len() == 1 && info.addr.contains('@') && !name.trim().is_empty() {
                    return Ok(Ident {
                        name: name.trim().to_string(),
                        email: info.addr.clone(),
                    });
                }
            }
        }
        bail!("{what} {text:?} is not \"Name <address>\"")
    }

    /// Same person: the address compared without case.
    pub fn same(&self, name: &str, email: &str) -> bool {
        self.email.eq_ignore_ascii_case(email) || (self.name == name && !name.is_empty())
    }

    pub fn signoff(&self) -> String {
        format!("Signed-off-by: {self}")
    }

    /// The domain part of the address (for Message-IDs).
    pub fn domain(&self) -> &str {
        self.email.rsplit_once('@').map_or("localhost", |(_, d)| d)
    }
}

/// `git config user.name` and `user.email` as git reads them in `dir`
/// (repository, global and system config): the first of `dirs` where both
/// are set.
pub fn from_git_config(dirs: &[&Path]) -> Option<Ident> {
    let sh = xshell::Shell::new().ok()?;
    for dir in dirs {
        let get = |key: &str| {
            xshell::cmd!(sh, "git -C {dir} config --get {key}")
                .quiet()
                .ignore_stderr()
                .read()
                .ok()
                .filter(|v| !v.trim().is_empty())
        };
        if let (Some(name), Some(email)) = (get("user.name"), get("user.email")) {
            return Some(Ident {
                name: name.trim().to_string(),
                email: email.trim().to_string(),
            });
        }
    }
    None
}

/// What the rewrite changes.
#[derive(Debug, Clone)]
pub struct Rewrite<'a> {
    pub sender: &'a Ident,
    pub placeholder: Option<&'a Ident>,
    pub signoff: bool,
}

impl Rewrite<'_> {
    /// The message with the placeholder's Signed-off-by replaced by the
    /// sender's, and with `signoff` the sender's added when it is not the
    /// last one already.
    pub fn message(&self, message: &str) -> String {
        let mine = self.sender.signoff();
        let mut lines: Vec<String> = Vec::new();
        for line in message.lines() {
            let by_placeholder = line
                .strip_prefix("Signed-off-by:")
                .and_then(|who| Ident::parse(who.trim(), "").ok())
                .is_some_and(|who| {
                    self.placeholder
                        .is_some_and(|p| p.same(&who.name, &who.email))
                });
            if by_placeholder {
                if !lines.contains(&mine) {
                    lines.push(mine.clone());
                }
            } else {
                lines.push(line.to_string());
            }
        }
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        if self.signoff {
            let last_sob = lines.iter().rev().find(|l| l.starts_with("Signed-off-by:"));
            if last_sob != Some(&mine) {
                // Into the closing trailer block when there is one.
                let para_start = lines
                    .iter()
                    .rposition(|l| l.trim().is_empty())
                    .map_or(0, |i| i + 1);
                let trailers = para_start > 0
                    && lines[para_start..]
                        .iter()
                        .all(|l| is_trailer(l) || l.starts_with(' '));
                if !trailers {
                    lines.push(String::new());
                }
                lines.push(mine);
            }
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

fn is_trailer(line: &str) -> bool {
    line.split_once(": ").is_some_and(|(key, _)| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// Rewrite the linear range `base..tip` per `rw`; returns the new tip
/// (trees unchanged, nothing outside the object database touched).
pub fn rewrite_range(repo: &Repository, base: Oid, tip: Oid, rw: &Rewrite<'_>) -> Result<Oid> {
    let commits = super::export::range_commits(repo, base, tip)?;
    let mut parent = repo.find_commit(base)?;
    for oid in commits {
        let commit = repo.find_commit(oid)?;
        let author = commit.author();
        let (name, email) = (
            author.name().unwrap_or_default().to_string(),
            author.email().unwrap_or_default().to_string(),
        );
        let new_author = match rw.placeholder {
            Some(p) if p.same(&name, &email) => {
                Signature::new(&rw.sender.name, &rw.sender.email, &author.when())?
            }
            _ => author.to_owned(),
        };
        let message = commit
            .message()
            .with_context(|| format!("commit {oid}: message is not UTF-8"))?;
        let message = rw.message(message);
        let new = repo.commit(
            None,
            &new_author,
            &new_author,
            &message,
            &commit.tree()?,
            &[&parent],
        )?;
        parent = repo.find_commit(new)?;
    }
    Ok(parent.id())
}

/// Where `placeholder` appears in `text` (by address or name, any case):
/// the first line, numbered from 1.
pub fn find_placeholder(text: &str, placeholder: &Ident) -> Option<(usize, String)> {
    let email = placeholder.email.to_lowercase();
    let name = placeholder.name.to_lowercase();
    text.lines().enumerate().find_map(|(i, line)| {
        let lower = line.to_lowercase();
        (lower.contains(&email) || lower.contains(&name)).then(|| (i + 1, line.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(text: &str) -> Ident {
        Ident::parse(text, "test").unwrap()
    }

    #[test]
    fn placeholder_signoff_becomes_the_senders() {
        let sender = ident("Ann Sender <ann@example.org>");
        let placeholder = ident("Seed maintainers <seed@example.invalid>");
        let rw = Rewrite {
            sender: &sender,
            placeholder: Some(&placeholder),
            signoff: false,
        };
        assert_eq!(
            rw.message("S\n\nBody.\n\nSigned-off-by: Seed maintainers <SEED@example.invalid>\n"),
            "S\n\nBody.\n\nSigned-off-by: Ann Sender <ann@example.org>\n"
        );
    }

    #[test]
    fn signoff_is_added_once_into_the_trailer_block() {
        let sender = ident("Ann Sender <ann@example.org>");
        let rw = Rewrite {
            sender: &sender,
            placeholder: None,
            signoff: true,
        };
        assert_eq!(
            rw.message("S\n\nBody.\n\nSigned-off-by: Up Stream <up@example.org>\n"),
            "S\n\nBody.\n\nSigned-off-by: Up Stream <up@example.org>\nSigned-off-by: Ann Sender <ann@example.org>\n"
        );
        assert_eq!(
            rw.message("S\n\nSigned-off-by: Ann Sender <ann@example.org>\n"),
            "S\n\nSigned-off-by: Ann Sender <ann@example.org>\n"
        );
        assert_eq!(
            rw.message("S\n\nJust a body.\n"),
            "S\n\nJust a body.\n\nSigned-off-by: Ann Sender <ann@example.org>\n"
        );
    }

    #[test]
    fn ident_needs_a_name_and_an_address() {
        assert!(Ident::parse("ann@example.org", "--from").is_err());
        assert!(Ident::parse("Ann", "--from").is_err());
        assert_eq!(
            ident("\"Ann B.\" <a@x.org>").to_string(),
            "Ann B. <a@x.org>"
        );
    }
}
