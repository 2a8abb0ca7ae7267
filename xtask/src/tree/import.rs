//! Importing a source tarball into a fresh git repository in one pass:
//! the tarball is decompressed by one thread (`DecodedStream`); the tar
//! stream is parsed and every entry checked before anything is written;
//! each file is then written to the work tree by one thread and hashed and
//! packed by another. Trees, the commit, the tag and an index with stat
//! data follow, so the result is a clean checkout without a second read.
//!
//! Everything happens in a temporary directory next to the destination,
//! renamed into place at the very end.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;

use anyhow::{anyhow, bail, Context, Result};

use super::pack::{self, Kind, PackWriter, RawOid, Stat, MODE_EXEC, MODE_FILE, MODE_LINK};

/// A tarball entry we refuse to extract.
#[derive(Debug, thiserror::Error)]
#[error("refusing tarball entry `{entry}`: {reason}")]
pub struct UnsafeEntry {
    pub entry: String,
    pub reason: String,
}

fn unsafe_entry(entry: &[u8], reason: impl Into<String>) -> anyhow::Error {
    UnsafeEntry {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
    .into()
}

/// What to import and how.
pub struct ImportRequest<'a> {
    pub tarball: &'a Path,
    /// The repository to create. Must not exist (or be an empty directory).
    pub dest: &'a Path,
    /// Upstream version; `None` takes it from the top-level directory
    /// (`linux-6.1.176/` gives 6.1.176).
    pub version: Option<&'a str>,
    /// A line describing where the tarball came from, for the commit message.
    pub origin: String,
    /// The source id recorded in `.git/xtask-tree.toml` (`debian`, `tarball:...`).
    pub source: String,
    /// Refuse the import unless its tree has this id (hex).
    pub expected_tree: Option<String>,
    /// zlib level for the pack (0 = stored, fastest; 1 = fast and 4x smaller).
    pub compression: u32,
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct Imported {
    pub path: PathBuf,
    pub version: String,
    pub commit: git2::Oid,
    pub tree: git2::Oid,
    pub files: usize,
}

/// Counts the compressed bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a .tar.xz / .tar.gz / .tar, recognised by its magic bytes.
fn open_decoded(path: &Path, count: Arc<AtomicU64>) -> Result<Box<dyn Read + Send>> {
    let mut file =
        File::open(path).with_context(|| format!("opening tarball {}", path.display()))?;
    let mut magic = [0u8; 6];
    let n = file
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    drop(file);
    let file = File::open(path).with_context(|| format!("opening tarball {}", path.display()))?;
    let reader = BufReader::with_capacity(1 << 20, Counting { inner: file, count });
    if n >= 6 && magic == *b"\xfd7zXZ\0" {
        Ok(Box::new(xz2::read::XzDecoder::new(reader)))
    } else if n >= 2 && magic[..2] == *b"\x1f\x8b" {
        Ok(Box::new(flate2::read::GzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Decompressed bytes handed from the decoder thread to the tar reader.
const DECODED_CHUNK: usize = 1 << 20;

/// Reads what a decoder thread decompresses, so that decompression (the
/// longest part of an import) runs next to the tar parsing and the path
/// checks instead of before them, as `tar x` runs `xz` in a process of its
/// own. Buffers go back to the decoder to be reused.
struct DecodedStream {
    chunks: Receiver<io::Result<Vec<u8>>>,
    empties: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl DecodedStream {
    fn spawn(mut inner: Box<dyn Read + Send>) -> Result<Self> {
        let (chunk_tx, chunks) = sync_channel::<io::Result<Vec<u8>>>(8);
        let (empties, empty_rx) = sync_channel::<Vec<u8>>(8);
        thread::Builder::new()
            .name("import-decode".into())
            .spawn(move || loop {
                let mut buf = empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(DECODED_CHUNK));
                buf.resize(DECODED_CHUNK, 0);
                let mut filled = 0;
                let result = loop {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let last = filled == 0 || result.is_err();
                let message = match result {
                    Ok(()) => Ok(buf),
                    Err(e) => Err(e),
                };
                // The reader hung up (an entry was refused): stop decoding.
                if chunk_tx.send(message).is_err() || last {
                    return;
                }
            })
            .context("spawning a thread")?;
        Ok(DecodedStream {
            chunks,
            empties,
            current: Vec::new(),
            pos: 0,
            done: false,
        })
    }
}

impl Read for DecodedStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            let next = match self.chunks.recv() {
                Ok(chunk) => chunk?,
                Err(_) => {
                    return Err(io::Error::other("the decompression thread stopped early"));
                }
            };
            if next.is_empty() {
                self.done = true;
            }
            let old = std::mem::replace(&mut self.current, next);
            let _ = self.empties.try_send(old);
            self.pos = 0;
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

enum DiskJob {
    File {
        idx: usize,
        path: PathBuf,
        data: Arc<Vec<u8>>,
        exec: bool,
    },
    Symlink {
        idx: usize,
        path: PathBuf,
        target: Vec<u8>,
    },
    Copy {
        idx: usize,
        path: PathBuf,
        from: PathBuf,
        exec: bool,
    },
}

struct PackJob {
    idx: usize,
    data: Arc<Vec<u8>>,
}

enum Node {
    Dir,
    File { idx: usize },
    Symlink,
}

struct Entry {
    path: Vec<u8>,
    mode: u32,
    /// For hard links: the entry whose blob this one shares.
    same_as: Option<usize>,
}

/// Splits an archive path into the top-level directory and the rest,
/// refusing anything that could land outside the tree.
fn split_path(raw: &[u8]) -> Result<(&[u8], Vec<&[u8]>)> {
    if raw.first() == Some(&b'/') {
        return Err(unsafe_entry(raw, "absolute path"));
    }
    let mut parts = raw
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".");
    let top = parts
        .next()
        .ok_or_else(|| unsafe_entry(raw, "empty path"))?;
    let rest: Vec<&[u8]> = parts.collect();
    for part in std::iter::once(&top).chain(rest.iter()) {
        if *part == b".." {
            return Err(unsafe_entry(raw, "path contains a `..` component"));
        }
        if part.eq_ignore_ascii_case(b".git") {
            return Err(unsafe_entry(raw, "path contains a `.git` component"));
        }
    }
    Ok((top, rest))
}

/// Resolves `target` of the symlink at `link` (both relative to the tree
/// root) through the other symlinks of the tree; errors when it leaves
/// the tree at any point.
fn check_symlink(
    links: &HashMap<Vec<u8>, Vec<u8>>,
    shown: &[u8],
    link: &[u8],
    target: &[u8],
) -> Result<()> {
    let escape = || {
        unsafe_entry(
            shown,
            format!(
                "symlink target `{}` points outside the tree",
                String::from_utf8_lossy(target)
            ),
        )
    };
    if target.first() == Some(&b'/') {
        return Err(escape());
    }
    let mut stack: Vec<Vec<u8>> = link.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
    stack.pop();
    let mut queue: VecDeque<Vec<u8>> = target.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
    let mut hops = 0;
    while let Some(part) = queue.pop_front() {
        if part.is_empty() || part == b"." {
            continue;
        }
        if part == b".." {
            if stack.pop().is_none() {
                return Err(escape());
            }
            continue;
        }
        stack.push(part);
        let here = stack.join(&b'/');
        if let Some(next) = links.get(&here) {
            hops += 1;
            if hops > 40 {
                return Err(unsafe_entry(shown, "too many levels of symbolic links"));
            }
            if next.first() == Some(&b'/') {
                return Err(escape());
            }
            stack.pop();
            for part in next.split(|&b| b == b'/').rev() {
                queue.push_front(part.to_vec());
            }
        }
    }
    Ok(())
}

fn version_from_top(top: &[u8]) -> Option<String> {
    let top = std::str::from_utf8(top).ok()?;
    let version = top.strip_prefix("linux-").unwrap_or(top);
    super::validate_version(version).ok()?;
    Some(version.to_string())
}

/// Imports `req.tarball` as described in the module docs.
pub fn import_tarball(req: &ImportRequest) -> Result<Imported> {
    if !req.tarball.is_file() {
        bail!(
            "tarball {} does not exist (or is not a file)",
            req.tarball.display()
        );
    }
    let parent = super::dest_parent(req.dest)?;
    let tmp = super::scratch_dir(&parent, "import")?;
    let work = tmp.path().to_path_buf();
    let repo = git2::Repository::init(&work).context("git init")?;
    let git_dir = repo.path().to_path_buf();
    let started = std::time::Instant::now();

    let Extracted {
        streamed,
        stats,
        packed,
    } = extract(req, &work, &git_dir)?;
    let top = streamed
        .top_dir
        .ok_or_else(|| anyhow!("{} contains no files", req.tarball.display()))?;
    check_links(&streamed.links, &top)?;
    let version = import_version(req, &top)?;
    let objects = write_objects(req, &git_dir, &version, &streamed.entries, &stats, packed)?;
    if let Some(expected) = &req.expected_tree {
        if objects.tree.to_string() != *expected {
            bail!(
                "importing {} gave tree {}, but series.toml expects {expected}; nothing was written",
                req.tarball.display(),
                objects.tree
            );
        }
    }
    set_refs(&repo, objects.commit, &version)?;
    drop(repo);

    let files = streamed.entries.len();
    let meta = super::Meta {
        version: version.clone(),
        source: req.source.clone(),
        tree: objects.tree.to_string(),
    };
    meta.write(&git_dir)?;
    super::move_into_place(tmp, req.dest)?;
    if req.progress {
        eprintln!(
            "imported {files} files into {} in {:.1} s",
            req.dest.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Imported {
        path: req.dest.to_path_buf(),
        version,
        commit: objects.commit,
        tree: objects.tree,
        files,
    })
}

/// The job queues of the two worker threads.
struct Jobs {
    disk: SyncSender<DiskJob>,
    pack: SyncSender<PackJob>,
}

fn worker_stopped() -> anyhow::Error {
    anyhow!("an import worker stopped early")
}

impl Jobs {
    fn disk(&self, job: DiskJob) -> Result<()> {
        self.disk.send(job).map_err(|_| worker_stopped())
    }

    fn pack(&self, job: PackJob) -> Result<()> {
        self.pack.send(job).map_err(|_| worker_stopped())
    }
}

/// The disk and pack threads with their queues.
struct Workers {
    jobs: Jobs,
    disk: thread::JoinHandle<Result<Vec<Option<Stat>>>>,
    packer: thread::JoinHandle<Result<Packed>>,
}

/// Blobs written so far, by entry index, and the pack still open for the
/// trees and the commit.
struct Packed {
    pack: PackWriter,
    blob_ids: HashMap<usize, RawOid>,
}

/// What the streaming pass leaves behind: the checked entries and what
/// the workers made of them.
struct Extracted {
    streamed: Streamed,
    /// Stat data by entry index, for the index.
    stats: Vec<Option<Stat>>,
    packed: Packed,
}

impl Workers {
    fn spawn(git_dir: &Path, level: u32) -> Result<Self> {
        let (disk_tx, disk_rx) = sync_channel::<DiskJob>(64);
        let (pack_tx, pack_rx) = sync_channel::<PackJob>(64);
        let disk = thread::Builder::new()
            .name("import-disk".into())
            .spawn(move || disk_worker(disk_rx))
            .context("spawning a thread")?;
        let pack_git_dir = git_dir.to_path_buf();
        let packer = thread::Builder::new()
            .name("import-pack".into())
            .spawn(move || pack_worker(&pack_git_dir, level, pack_rx))
            .context("spawning a thread")?;
        Ok(Workers {
            jobs: Jobs {
                disk: disk_tx,
                pack: pack_tx,
            },
            disk,
            packer,
        })
    }

    /// Closes the queues and joins both threads, whatever `streamed` says.
    fn finish(self, streamed: Result<Streamed>) -> Result<Extracted> {
        let Workers { jobs, disk, packer } = self;
        drop(jobs);
        let disk_result = disk
            .join()
            .map_err(|_| anyhow!("the import disk thread panicked"))?;
        let pack_result = packer
            .join()
            .map_err(|_| anyhow!("the import pack thread panicked"))?;
        // The first real error wins: a refused entry, else a worker's failure
        // (which makes the stream fail too, less helpfully).
        let streamed = match streamed {
            Err(e) if e.is::<UnsafeEntry>() => return Err(e),
            other => other,
        };
        let stats = disk_result?;
        let packed = pack_result?;
        Ok(Extracted {
            streamed: streamed?,
            stats,
            packed,
        })
    }
}

/// The streaming pass: decode, check and hand every entry to the workers.
fn extract(req: &ImportRequest, work: &Path, git_dir: &Path) -> Result<Extracted> {
    let total = fs::metadata(req.tarball)?.len();
    let count = Arc::new(AtomicU64::new(0));
    let bar = super::progress_bar(req.progress, total, "extract + import");
    let mut archive = tar::Archive::new(DecodedStream::spawn(open_decoded(
        req.tarball,
        count.clone(),
    )?)?);
    let workers = Workers::spawn(git_dir, req.compression)?;
    let streamed = (|| -> Result<Streamed> {
        let mut extractor = Extractor::new(work, req.tarball, &workers.jobs);
        let iter = archive
            .entries()
            .with_context(|| format!("reading {}", req.tarball.display()))?;
        for (n, item) in iter.enumerate() {
            let mut item = item.with_context(|| format!("reading {}", req.tarball.display()))?;
            extractor.entry(&mut item)?;
            if n % 256 == 0 {
                bar.set_position(count.load(Ordering::Relaxed));
            }
        }
        Ok(extractor.into_streamed())
    })();
    let extracted = workers.finish(streamed)?;
    bar.set_position(total);
    bar.finish_and_clear();
    Ok(extracted)
}

/// The checked entries of a tarball, in archive order.
struct Streamed {
    entries: Vec<Entry>,
    /// Symlink path -> target, both relative to the tree root.
    links: HashMap<Vec<u8>, Vec<u8>>,
    top_dir: Option<Vec<u8>>,
}

/// Checks entries one by one as they stream past and queues the writes.
struct Extractor<'a> {
    work: &'a Path,
    tarball: &'a Path,
    jobs: &'a Jobs,
    nodes: HashMap<Vec<u8>, Node>,
    made_dirs: HashSet<Vec<u8>>,
    streamed: Streamed,
}

impl<'a> Extractor<'a> {
    fn new(work: &'a Path, tarball: &'a Path, jobs: &'a Jobs) -> Self {
        Extractor {
            work,
            tarball,
            jobs,
            nodes: HashMap::new(),
            made_dirs: HashSet::new(),
            streamed: Streamed {
                entries: Vec::new(),
                links: HashMap::new(),
                top_dir: None,
            },
        }
    }

    fn into_streamed(self) -> Streamed {
        self.streamed
    }

    fn entry<R: Read>(&mut self, item: &mut tar::Entry<R>) -> Result<()> {
        let kind = item.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            return Ok(());
        }
        let raw = item.path_bytes().into_owned();
        let (top, rest) = split_path(&raw)?;
        self.check_top(&raw, top)?;
        if rest.is_empty() {
            if kind.is_dir() {
                return Ok(());
            }
            return Err(unsafe_entry(
                &raw,
                "the top level of the archive must be one directory",
            ));
        }
        let rel = rest.join(&b'/');
        self.check_ancestors(&raw, &rest)?;
        match self.nodes.get(&rel) {
            None => {}
            Some(Node::Dir) if kind.is_dir() => return Ok(()),
            Some(_) => return Err(unsafe_entry(&raw, "duplicate entry")),
        }
        let dest = self.work.join(OsStr::from_bytes(&rel));
        if kind.is_dir() {
            fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
            self.nodes.insert(rel.clone(), Node::Dir);
            self.made_dirs.insert(rel);
            return Ok(());
        }
        self.make_parents(&rest)?;
        if kind.is_file() || kind == tar::EntryType::Continuous {
            self.add_file(item, &raw, rel, dest)
        } else if kind.is_symlink() {
            self.add_symlink(item, &raw, rel, dest)
        } else if kind.is_hard_link() {
            self.add_hard_link(item, &raw, rel, dest)
        } else {
            Err(unsafe_entry(
                &raw,
                format!("unsupported entry type {kind:?}"),
            ))
        }
    }

    /// Every entry must be under the same top-level directory.
    fn check_top(&mut self, raw: &[u8], top: &[u8]) -> Result<()> {
        match &self.streamed.top_dir {
            None => self.streamed.top_dir = Some(top.to_vec()),
            Some(t) if t.as_slice() == top => {}
            Some(t) => {
                return Err(unsafe_entry(
                    raw,
                    format!(
                        "not under the top-level directory `{}/`",
                        String::from_utf8_lossy(t)
                    ),
                ))
            }
        }
        Ok(())
    }

    /// Nothing may be written through a symlink, nor replace an entry.
    fn check_ancestors(&self, raw: &[u8], rest: &[&[u8]]) -> Result<()> {
        for depth in 1..rest.len() {
            let ancestor = rest[..depth].join(&b'/');
            match self.nodes.get(&ancestor) {
                Some(Node::Symlink) => {
                    return Err(unsafe_entry(
                        raw,
                        format!(
                            "goes through the symlink `{}`",
                            String::from_utf8_lossy(&ancestor)
                        ),
                    ))
                }
                Some(Node::File { .. }) => {
                    return Err(unsafe_entry(
                        raw,
                        format!(
                            "`{}` is a file, not a directory",
                            String::from_utf8_lossy(&ancestor)
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Creates the directories above a non-directory entry (tarballs need
    /// not list them) and records them.
    fn make_parents(&mut self, rest: &[&[u8]]) -> Result<()> {
        let parent = &rest[..rest.len() - 1];
        if parent.is_empty() {
            return Ok(());
        }
        let parent = parent.join(&b'/');
        if self.made_dirs.contains(&parent) {
            return Ok(());
        }
        let dir = self.work.join(OsStr::from_bytes(&parent));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for depth in 1..rest.len() {
            let d = rest[..depth].join(&b'/');
            self.nodes.entry(d.clone()).or_insert(Node::Dir);
            self.made_dirs.insert(d);
        }
        Ok(())
    }

    fn add_file<R: Read>(
        &mut self,
        item: &mut tar::Entry<R>,
        raw: &[u8],
        rel: Vec<u8>,
        dest: PathBuf,
    ) -> Result<()> {
        let idx = self.streamed.entries.len();
        let exec = item.header().mode().unwrap_or(0o644) & 0o111 != 0;
        let mut data = Vec::with_capacity(item.size() as usize);
        item.read_to_end(&mut data).with_context(|| {
            format!(
                "reading `{}` from {}",
                String::from_utf8_lossy(raw),
                self.tarball.display()
            )
        })?;
        let data = Arc::new(data);
        self.streamed.entries.push(Entry {
            path: rel.clone(),
            mode: if exec { MODE_EXEC } else { MODE_FILE },
            same_as: None,
        });
        self.nodes.insert(rel, Node::File { idx });
        self.jobs.disk(DiskJob::File {
            idx,
            path: dest,
            data: data.clone(),
            exec,
        })?;
        self.jobs.pack(PackJob { idx, data })
    }

    fn add_symlink<R: Read>(
        &mut self,
        item: &tar::Entry<R>,
        raw: &[u8],
        rel: Vec<u8>,
        dest: PathBuf,
    ) -> Result<()> {
        let idx = self.streamed.entries.len();
        let target = link_target(item, raw, "symlink without a target")?;
        check_symlink(&self.streamed.links, raw, &rel, &target)?;
        self.streamed.links.insert(rel.clone(), target.clone());
        self.streamed.entries.push(Entry {
            path: rel.clone(),
            mode: MODE_LINK,
            same_as: None,
        });
        self.nodes.insert(rel, Node::Symlink);
        self.jobs.disk(DiskJob::Symlink {
            idx,
            path: dest,
            target: target.clone(),
        })?;
        self.jobs.pack(PackJob {
            idx,
            data: Arc::new(target),
        })
    }

    /// A hard link shares the blob of a regular file earlier in the archive;
    /// on disk it is a copy.
    fn add_hard_link<R: Read>(
        &mut self,
        item: &tar::Entry<R>,
        raw: &[u8],
        rel: Vec<u8>,
        dest: PathBuf,
    ) -> Result<()> {
        let idx = self.streamed.entries.len();
        let target = link_target(item, raw, "hard link without a target")?;
        let outside = || {
            unsafe_entry(
                raw,
                format!(
                    "hard link target `{}` points outside the tree",
                    String::from_utf8_lossy(&target)
                ),
            )
        };
        let (ttop, trest) = split_path(&target).map_err(|_| outside())?;
        if Some(ttop) != self.streamed.top_dir.as_deref() || trest.is_empty() {
            return Err(outside());
        }
        let trel = trest.join(&b'/');
        let Some(Node::File { idx: tidx }) = self.nodes.get(&trel) else {
            return Err(unsafe_entry(
                raw,
                format!(
                    "hard link target `{}` is not a regular file earlier in the archive",
                    String::from_utf8_lossy(&target)
                ),
            ));
        };
        let tidx = *tidx;
        let mode = self.streamed.entries[tidx].mode;
        self.streamed.entries.push(Entry {
            path: rel.clone(),
            mode,
            same_as: Some(tidx),
        });
        self.nodes.insert(rel, Node::File { idx });
        let from = self.work.join(OsStr::from_bytes(&trel));
        self.jobs.disk(DiskJob::Copy {
            idx,
            path: dest,
            from,
            exec: mode == MODE_EXEC,
        })
    }
}

/// Links can only be judged once all of them are known (chains).
fn check_links(links: &HashMap<Vec<u8>, Vec<u8>>, top: &[u8]) -> Result<()> {
    for (link, target) in links {
        let shown = [top, link.as_slice()].join(&b'/');
        check_symlink(links, &shown, link, target)?;
    }
    Ok(())
}

/// The version asked for, else the one the top-level directory names.
fn import_version(req: &ImportRequest, top: &[u8]) -> Result<String> {
    match req.version {
        Some(v) => Ok(v.to_string()),
        None => version_from_top(top).ok_or_else(|| {
            anyhow!(
                "cannot tell the version from the top-level directory `{}` of {}; pass --version",
                String::from_utf8_lossy(top),
                req.tarball.display()
            )
        }),
    }
}

/// The imported commit and its root tree.
struct Objects {
    commit: git2::Oid,
    tree: git2::Oid,
}

/// Writes the trees and the commit into the pack, closes it and writes the
/// index with the stat data the disk worker collected.
fn write_objects(
    req: &ImportRequest,
    git_dir: &Path,
    version: &str,
    entries: &[Entry],
    stats: &[Option<Stat>],
    packed: Packed,
) -> Result<Objects> {
    let Packed { mut pack, blob_ids } = packed;
    let oid_of = |i: usize| -> Result<RawOid> {
        let j = entries[i].same_as.unwrap_or(i);
        blob_ids
            .get(&j)
            .copied()
            .ok_or_else(|| anyhow!("internal error: no blob for entry {j}"))
    };
    let mut with_ids = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        with_ids.push((entry.path.as_slice(), entry.mode, oid_of(i)?));
    }
    let tree = pack::write_trees(&mut pack, with_ids.iter().copied())?;
    let commit = pack.add(
        Kind::Commit,
        commit_text(&tree, version, &req.origin, req.tarball)?.as_bytes(),
    )?;
    pack.finish()?;

    let mut index_entries = Vec::with_capacity(with_ids.len());
    for (i, (path, mode, oid)) in with_ids.iter().enumerate() {
        let stat = stats
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| anyhow!("internal error: no stat for entry {i}"))?;
        index_entries.push((*path, *mode, *oid, stat));
    }
    pack::write_index(git_dir, &mut index_entries)?;
    Ok(Objects {
        commit: git2::Oid::from_bytes(&commit)?,
        tree: git2::Oid::from_bytes(&tree)?,
    })
}

/// Points the branch HEAD names and the tag `v<version>` at `commit`.
fn set_refs(repo: &git2::Repository, commit: git2::Oid, version: &str) -> Result<()> {
    let branch = {
        let head = repo.find_reference("HEAD")?;
        head.symbolic_target()
            .ok()
            .flatten()
            .unwrap_or("refs/heads/master")
            .to_string()
    };
    repo.reference(&branch, commit, false, "xtask tree fetch: import")?;
    repo.reference(
        &format!("refs/tags/v{version}"),
        commit,
        false,
        "xtask tree fetch: import",
    )?;
    Ok(())
}

fn commit_text(tree: &RawOid, version: &str, origin: &str, tarball: &Path) -> Result<String> {
    // Fixed identity and date: the same tarball gives the same commit id on
    // every machine.
    let who = "xtask tree fetch <xtask@localhost> 0 +0000";
    let name = tarball
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut text = String::new();
    use std::fmt::Write as _;
    writeln!(text, "tree {}", hex::encode(tree))?;
    writeln!(text, "author {who}")?;
    writeln!(text, "committer {who}")?;
    writeln!(text)?;
    writeln!(text, "Linux {version}")?;
    writeln!(text)?;
    writeln!(text, "Pristine upstream source imported from {name}.")?;
    writeln!(text, "Source: {origin}")?;
    Ok(text)
}

/// Create `path` (it must not exist) with `data` and the regular or
/// executable mode; returns its stat data for the index.
fn write_new_file(path: &Path, data: &[u8], exec: bool) -> Result<Stat> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if exec { 0o755 } else { 0o644 })
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?;
    Ok(Stat::from_metadata(&meta))
}

fn disk_worker(rx: Receiver<DiskJob>) -> Result<Vec<Option<Stat>>> {
    let mut stats: Vec<Option<Stat>> = Vec::new();
    let mut put = |idx: usize, stat: Stat| {
        if stats.len() <= idx {
            stats.resize(idx + 1, None);
        }
        stats[idx] = Some(stat);
    };
    for job in rx {
        match job {
            DiskJob::File {
                idx,
                path,
                data,
                exec,
            } => put(idx, write_new_file(&path, &data, exec)?),
            DiskJob::Symlink { idx, path, target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .with_context(|| format!("creating symlink {}", path.display()))?;
                let meta = fs::symlink_metadata(&path)
                    .with_context(|| format!("stat {}", path.display()))?;
                put(idx, Stat::from_metadata(&meta));
            }
            DiskJob::Copy {
                idx,
                path,
                from,
                exec,
            } => {
                let data =
                    fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
                put(idx, write_new_file(&path, &data, exec)?);
            }
        }
    }
    Ok(stats)
}

fn pack_worker(git_dir: &Path, level: u32, rx: Receiver<PackJob>) -> Result<Packed> {
    let mut pack = PackWriter::create(git_dir, level)?;
    let mut blob_ids = HashMap::new();
    for job in rx {
        let oid = pack.add(Kind::Blob, &job.data)?;
        blob_ids.insert(job.idx, oid);
    }
    Ok(Packed { pack, blob_ids })
}

/// The version named by a tarball's top-level directory (`linux-6.1.176/`).
pub fn peek_version(tarball: &Path) -> Result<String> {
    let mut archive = tar::Archive::new(open_decoded(tarball, Arc::new(AtomicU64::new(0)))?);
    let entries = archive
        .entries()
        .with_context(|| format!("reading {}", tarball.display()))?;
    for item in entries {
        let item = item.with_context(|| format!("reading {}", tarball.display()))?;
        let kind = item.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let raw = item.path_bytes().into_owned();
        let (top, _) = split_path(&raw)?;
        return version_from_top(top).ok_or_else(|| {
            anyhow!(
                "cannot tell the version from the top-level directory `{}` of {}; pass --version",
                String::from_utf8_lossy(top),
                tarball.display()
            )
        });
    }
    bail!("{} contains no files", tarball.display())
}

/// The target a link entry names; an entry without one is refused.
fn link_target<R: Read>(item: &tar::Entry<R>, raw: &[u8], missing: &str) -> Result<Vec<u8>> {
    item.link_name_bytes()
        .map(|t| t.into_owned())
        .ok_or_else(|| unsafe_entry(raw, missing))
}
