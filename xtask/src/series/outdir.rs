//! The output directory of `series format`: it holds only what `series
//! format` wrote there, and a marker file listing those files says so.
//!
//! Before any work, [`OutDir::check`] refuses a path that is a regular file,
//! a git repository or work tree, or a non-empty directory without the
//! marker. Mails are written to a staging directory first; [`OutDir::commit`]
//! then moves them in with one rename each (a new directory: one rename of
//! the whole staging directory), rewrites the marker the same way, and only
//! then removes files the previous run listed that this run did not write.
//! A file the marker does not list is never replaced or removed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Marker file name; a dot file, so `DIR/*.patch` never includes it.
pub const MARKER: &str = ".series-format";

const MARKER_HEADER: &str =
    "# Written by `cargo xtask series format`: the files it wrote in this directory.\n\
# A later run replaces or removes only the files listed here and leaves any other file alone.\n";

/// A checked output directory.
#[derive(Debug)]
pub struct OutDir {
    /// Absolute path.
    path: PathBuf,
    /// Files the previous run wrote (from the marker); None: no directory yet.
    previous: Option<BTreeSet<String>>,
}

impl OutDir {
    /// Check `out` before any work; see the module comment for what is refused.
    pub fn check(out: &Path) -> Result<OutDir> {
        let shown = out.display().to_string();
        let abs = std::path::absolute(out).with_context(|| format!("resolving --out {shown}"))?;
        let meta = match std::fs::metadata(&abs) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let path = normalize(&abs);
                if path.file_name().is_none() {
                    bail!("--out {shown}: cannot name a new directory there");
                }
                return Ok(OutDir {
                    path,
                    previous: None,
                });
            }
            Err(err) => return Err(err).with_context(|| format!("reading --out {shown}")),
        };
        if !meta.is_dir() {
            bail!(
                "--out {shown} is an existing file, not a directory; `series format` writes a \
                 directory of mails: pass a new or empty directory (or one it wrote before)"
            );
        }
        let path = abs
            .canonicalize()
            .with_context(|| format!("resolving --out {shown}"))?;
        if git2::Repository::open_ext(
            &path,
            git2::RepositoryOpenFlags::NO_SEARCH,
            std::iter::empty::<&std::ffi::OsStr>(),
        )
        .is_ok()
        {
            bail!(
                "--out {shown} is a git repository; `series format` never writes into one: pass a \
                 new or empty directory outside it, e.g. --out /tmp/{}-mails",
                path.file_name()
                    .map_or("series".into(), |n| n.to_string_lossy().into_owned())
            );
        }
        let marker = path.join(MARKER);
        if marker.is_file() {
            let text = std::fs::read_to_string(&marker)
                .with_context(|| format!("reading {}", marker.display()))?;
            let mut previous = BTreeSet::new();
            for line in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                if line.contains('/') || line == "." || line == ".." || line == MARKER {
                    bail!(
                        "{}: {line:?} is not a file name `series format` writes; remove the marker \
                         if this directory is not its output",
                        marker.display()
                    );
                }
                previous.insert(line.to_string());
            }
            return Ok(OutDir {
                path,
                previous: Some(previous),
            });
        }
        let mut entries: Vec<String> = std::fs::read_dir(&path)
            .with_context(|| format!("reading --out {shown}"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading --out {shown}"))?;
        if !entries.is_empty() {
            entries.sort();
            let more = if entries.len() > 5 {
                format!(" and {} more", entries.len() - 5)
            } else {
                String::new()
            };
            entries.truncate(5);
            bail!(
                "--out {shown} is a directory `series format` did not write (no {MARKER} marker) \
                 and it is not empty ({}{more}); pass a new or empty directory",
                entries.join(", ")
            );
        }
        Ok(OutDir {
            path,
            previous: Some(BTreeSet::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new staging directory on the same filesystem as the output.
    pub fn stage(&self) -> Result<tempfile::TempDir> {
        let (dir, name) = match &self.previous {
            Some(_) => (self.path.clone(), MARKER.to_string()),
            None => {
                let parent = self
                    .path
                    .parent()
                    .context("the output directory has no parent")?;
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
                let name = self
                    .path
                    .file_name()
                    .map_or("series".into(), |n| n.to_string_lossy().into_owned());
                (parent.to_path_buf(), format!(".{name}"))
            }
        };
        tempfile::Builder::new()
            .prefix(&format!("{name}.tmp-"))
            .tempdir_in(&dir)
            .with_context(|| format!("creating a temporary directory in {}", dir.display()))
    }

    /// Move the files of `staged` (no subdirectories) into the output.
    pub fn commit(&self, staged: tempfile::TempDir) -> Result<()> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(staged.path())? {
            let entry = entry?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        let marker_text = format!("{MARKER_HEADER}{}\n", names.join("\n"));
        let Some(previous) = &self.previous else {
            std::fs::write(staged.path().join(MARKER), &marker_text)?;
            let staged = staged.keep();
            if let Err(err) = std::fs::rename(&staged, &self.path) {
                let _ = std::fs::remove_dir_all(&staged);
                return Err(err).with_context(|| {
                    format!("moving the mails into place as {}", self.path.display())
                });
            }
            return Ok(());
        };
        // Nothing is replaced unless every name is free or ours.
        for name in &names {
            let target = self.path.join(name);
            if target.symlink_metadata().is_ok() && !previous.contains(name) {
                bail!(
                    "{} exists and `series format` did not write it (not in {MARKER}); move it \
                     away and run again (nothing was changed)",
                    target.display()
                );
            }
        }
        for name in &names {
            let target = self.path.join(name);
            std::fs::rename(staged.path().join(name), &target)
                .with_context(|| format!("moving {} into place", target.display()))?;
        }
        let marker = self.path.join(MARKER);
        let tmp = staged.path().join(MARKER);
        std::fs::write(&tmp, &marker_text)?;
        std::fs::rename(&tmp, &marker).with_context(|| format!("writing {}", marker.display()))?;
        for stale in previous.iter().filter(|p| !names.contains(p)) {
            let path = self.path.join(stale);
            if path.symlink_metadata().is_ok_and(|m| m.is_file()) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing the earlier run's {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// `abs` without `.` components and with `..` applied lexically (the
/// directory does not exist yet, so it cannot be canonicalized).
fn normalize(abs: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
