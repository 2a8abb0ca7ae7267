//! Writing git objects straight into one pack file (plus its `.idx`), the
//! way `git fast-import` does, but without its delta search and with the
//! hashing and compression running next to the tar decoder.
//!
//! Formats: gitformat-pack(5) (pack v2, idx v2) and gitformat-index(5).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::{Compress, Compression, FlushCompress, Status};
use sha1::{Digest, Sha1};

/// The most a stored deflate block holds.
const STORED_BLOCK_MAX: usize = 0xffff;

/// A raw SHA-1 object id.
pub type RawOid = [u8; 20];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Commit = 1,
    Tree = 2,
    Blob = 3,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Tree => "tree",
            Kind::Blob => "blob",
        }
    }
}

/// The object id git gives `data` stored as an object of `kind`.
pub fn object_id(kind: Kind, data: &[u8]) -> RawOid {
    let mut hasher = Sha1::new();
    hasher.update(format!("{} {}\0", kind.name(), data.len()).as_bytes());
    hasher.update(data);
    hasher.finalize().into()
}

struct PackedObject {
    oid: RawOid,
    offset: u64,
    crc: u32,
}

/// Appends whole (non-delta) objects to `objects/pack/tmp-*.pack`.
/// `finish` fixes the header, writes the trailer and the `.idx`, and moves
/// both into place; until then git does not see the pack at all.
pub struct PackWriter {
    pack_dir: PathBuf,
    tmp_path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    objects: Vec<PackedObject>,
    seen: HashMap<RawOid, ()>,
    level: u32,
    deflate: Compress,
    scratch: Vec<u8>,
}

impl PackWriter {
    /// `level` is the zlib level (0 = stored, 1 = fastest compression).
    pub fn create(git_dir: &Path, level: u32) -> Result<Self> {
        let pack_dir = git_dir.join("objects").join("pack");
        fs::create_dir_all(&pack_dir)
            .with_context(|| format!("creating {}", pack_dir.display()))?;
        let tmp_path = pack_dir.join(format!("tmp-xtask-{}.pack", std::process::id()));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .with_context(|| format!("creating {}", tmp_path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // The object count is patched in by `finish`.
        out.write_all(b"PACK\0\0\0\x02\0\0\0\0")?;
        Ok(PackWriter {
            pack_dir,
            tmp_path,
            out,
            offset: 12,
            objects: Vec::new(),
            seen: HashMap::new(),
            level,
            deflate: Compress::new(Compression::new(level), true),
            scratch: Vec::new(),
        })
    }

    /// Adds an object (once: identical objects are stored once) and returns
    /// its id.
    pub fn add(&mut self, kind: Kind, data: &[u8]) -> Result<RawOid> {
        let oid = object_id(kind, data);
        if self.seen.insert(oid, ()).is_some() {
            return Ok(oid);
        }
        // Entry header: type and size, little-endian base-128.
        self.scratch.clear();
        let mut size = data.len() as u64;
        let mut byte = ((kind as u8) << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size != 0 {
            self.scratch.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        self.scratch.push(byte);
        let mut crc = crc32fast::Hasher::new();
        let written = if self.level == 0 {
            self.write_stored(data, &mut crc)?
        } else {
            self.write_deflated(data, &mut crc)?
        };
        self.objects.push(PackedObject {
            oid,
            offset: self.offset,
            crc: crc.finalize(),
        });
        self.offset += written;
        Ok(oid)
    }

    /// Writes the entry header in `scratch` and `data` as a zlib stream of
    /// stored deflate blocks (RFC 1950/1951), without copying `data`
    /// through zlib: what level 0 would give, at a fraction of the CPU.
    fn write_stored(&mut self, data: &[u8], crc: &mut crc32fast::Hasher) -> Result<u64> {
        // CMF 0x78 (deflate, 32K window), FLG 0x01 (fastest; 0x7801 % 31 == 0).
        self.scratch.extend_from_slice(&[0x78, 0x01]);
        let mut written = 0u64;
        let mut chunks = data.chunks(STORED_BLOCK_MAX).peekable();
        if chunks.peek().is_none() {
            // An empty object is one empty final block.
            self.scratch.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let len = chunk.len() as u16;
            self.scratch.push(u8::from(last));
            self.scratch.extend_from_slice(&len.to_le_bytes());
            self.scratch.extend_from_slice(&(!len).to_le_bytes());
            crc.update(&self.scratch);
            crc.update(chunk);
            self.out
                .write_all(&self.scratch)
                .context("writing pack data")?;
            self.out.write_all(chunk).context("writing pack data")?;
            written += (self.scratch.len() + chunk.len()) as u64;
            self.scratch.clear();
        }
        let mut adler = simd_adler32::Adler32::new();
        adler.write(data);
        self.scratch
            .extend_from_slice(&adler.finish().to_be_bytes());
        crc.update(&self.scratch);
        self.out
            .write_all(&self.scratch)
            .context("writing pack data")?;
        written += self.scratch.len() as u64;
        Ok(written)
    }

    /// Writes the entry header in `scratch` and `data` deflated by zlib.
    fn write_deflated(&mut self, data: &[u8], crc: &mut crc32fast::Hasher) -> Result<u64> {
        self.deflate.reset();
        self.scratch.reserve(data.len() / 2 + 64);
        loop {
            let consumed = self.deflate.total_in() as usize;
            let status = self
                .deflate
                .compress_vec(&data[consumed..], &mut self.scratch, FlushCompress::Finish)
                .context("zlib compression failed")?;
            if status == Status::StreamEnd {
                break;
            }
            self.scratch.reserve(64 << 10);
        }
        crc.update(&self.scratch);
        self.out
            .write_all(&self.scratch)
            .context("writing pack data")?;
        Ok(self.scratch.len() as u64)
    }

    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Completes the pack and its index; returns the pack's path.
    pub fn finish(mut self) -> Result<PathBuf> {
        let count = u32::try_from(self.objects.len()).context("too many objects for one pack")?;
        self.out.flush().context("writing pack")?;
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(8))?;
        file.write_all(&count.to_be_bytes())?;
        // The trailer is the SHA-1 of everything before it; the header
        // changed, so hash the file again (it is in the page cache).
        file.seek(SeekFrom::Start(0))?;
        let mut hasher = Sha1::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).context("re-reading pack")?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let pack_sum: RawOid = hasher.finalize().into();
        file.seek(SeekFrom::End(0))?;
        file.write_all(&pack_sum)?;
        drop(file);

        let name = format!("pack-{}", hex::encode(pack_sum));
        let idx = build_idx(&mut self.objects, &pack_sum);
        let idx_tmp = self
            .pack_dir
            .join(format!("tmp-xtask-{}.idx", std::process::id()));
        fs::write(&idx_tmp, idx).with_context(|| format!("writing {}", idx_tmp.display()))?;
        let pack_path = self.pack_dir.join(format!("{name}.pack"));
        fs::rename(&self.tmp_path, &pack_path)
            .with_context(|| format!("renaming {}", self.tmp_path.display()))?;
        // The .idx appearing is what makes the pack visible to git.
        fs::rename(&idx_tmp, self.pack_dir.join(format!("{name}.idx")))
            .with_context(|| format!("renaming {}", idx_tmp.display()))?;
        Ok(pack_path)
    }
}

fn build_idx(objects: &mut [PackedObject], pack_sum: &RawOid) -> Vec<u8> {
    objects.sort_unstable_by_key(|o| o.oid);
    let mut idx = Vec::with_capacity(8 + 1024 + objects.len() * 28 + 40);
    idx.extend_from_slice(b"\xfftOc\0\0\0\x02");
    let mut fanout = [0u32; 256];
    for object in objects.iter() {
        fanout[object.oid[0] as usize] += 1;
    }
    let mut running = 0u32;
    for slot in fanout.iter() {
        running += slot;
        idx.extend_from_slice(&running.to_be_bytes());
    }
    for object in objects.iter() {
        idx.extend_from_slice(&object.oid);
    }
    for object in objects.iter() {
        idx.extend_from_slice(&object.crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for object in objects.iter() {
        if object.offset < 0x8000_0000 {
            idx.extend_from_slice(&(object.offset as u32).to_be_bytes());
        } else {
            let slot = 0x8000_0000 | large.len() as u32;
            large.push(object.offset);
            idx.extend_from_slice(&slot.to_be_bytes());
        }
    }
    for offset in large {
        idx.extend_from_slice(&offset.to_be_bytes());
    }
    idx.extend_from_slice(pack_sum);
    let idx_sum: RawOid = Sha1::digest(&idx).into();
    idx.extend_from_slice(&idx_sum);
    idx
}

/// Git file modes as stored in trees and the index.
pub const MODE_FILE: u32 = 0o100644;
pub const MODE_EXEC: u32 = 0o100755;
pub const MODE_LINK: u32 = 0o120000;
const MODE_TREE: u32 = 0o40000;

#[derive(Default)]
struct Dir {
    files: Vec<(Vec<u8>, u32, RawOid)>,
    dirs: BTreeMap<Vec<u8>, Dir>,
}

/// Writes the tree objects for `entries` (path relative to the root, git
/// mode, blob id) and returns the root tree's id. Empty directories vanish,
/// as they do in git.
pub fn write_trees<'a>(
    pack: &mut PackWriter,
    entries: impl Iterator<Item = (&'a [u8], u32, RawOid)>,
) -> Result<RawOid> {
    let mut root = Dir::default();
    for (path, mode, oid) in entries {
        let mut dir = &mut root;
        let mut parts = path.split(|&b| b == b'/').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                dir.files.push((part.to_vec(), mode, oid));
            } else {
                dir = dir.dirs.entry(part.to_vec()).or_default();
            }
        }
    }
    match write_dir(pack, &root)? {
        Some(oid) => Ok(oid),
        // An empty tree is a valid (if useless) import.
        None => pack.add(Kind::Tree, b""),
    }
}

fn write_dir(pack: &mut PackWriter, dir: &Dir) -> Result<Option<RawOid>> {
    // (sort key, name, mode, id): git sorts a directory as if its name
    // ended in '/'.
    let mut items: Vec<(Vec<u8>, &[u8], u32, RawOid)> = Vec::new();
    for (name, mode, oid) in &dir.files {
        if dir.dirs.contains_key(name) {
            bail!(
                "`{}` is both a file and a directory",
                String::from_utf8_lossy(name)
            );
        }
        items.push((name.clone(), name, *mode, *oid));
    }
    for (name, sub) in &dir.dirs {
        if let Some(oid) = write_dir(pack, sub)? {
            let mut key = name.clone();
            key.push(b'/');
            items.push((key, name, MODE_TREE, oid));
        }
    }
    if items.is_empty() {
        return Ok(None);
    }
    items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut body = Vec::with_capacity(items.len() * 48);
    for (_, name, mode, oid) in items {
        body.extend_from_slice(format!("{mode:o} ").as_bytes());
        body.extend_from_slice(name);
        body.push(0);
        body.extend_from_slice(&oid);
    }
    pack.add(Kind::Tree, &body).map(Some)
}

/// The stat data git keeps per index entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stat {
    pub ctime: (u32, u32),
    pub mtime: (u32, u32),
    pub dev: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

impl Stat {
    pub fn from_metadata(meta: &fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            ctime: (meta.ctime() as u32, meta.ctime_nsec() as u32),
            mtime: (meta.mtime() as u32, meta.mtime_nsec() as u32),
            dev: meta.dev() as u32,
            ino: meta.ino() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len() as u32,
        }
    }
}

/// Writes `.git/index` (version 2) for entries whose files are already on
/// disk, with their stat data, so `git status` sees a clean tree without
/// hashing anything again.
pub fn write_index(git_dir: &Path, entries: &mut [(&[u8], u32, RawOid, Stat)]) -> Result<()> {
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(12 + entries.len() * 100);
    out.extend_from_slice(b"DIRC\0\0\0\x02");
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (path, mode, oid, stat) in entries.iter() {
        let start = out.len();
        for field in [
            stat.ctime.0,
            stat.ctime.1,
            stat.mtime.0,
            stat.mtime.1,
            stat.dev,
            stat.ino,
            *mode,
            stat.uid,
            stat.gid,
            stat.size,
        ] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.extend_from_slice(oid);
        let flags = path.len().min(0xfff) as u16;
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(path);
        // NUL-terminated and padded to a multiple of 8 bytes.
        let len = out.len() - start;
        let padded = (len + 8) & !7;
        out.resize(start + padded, 0);
    }
    let sum: RawOid = Sha1::digest(&out).into();
    out.extend_from_slice(&sum);
    let tmp = git_dir.join("index.xtask-tmp");
    fs::write(&tmp, &out).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, git_dir.join("index")).context("installing .git/index")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of a pack written with `level`, decoded with zlib: the
    /// stored streams must be valid zlib and checksummed like zlib's own.
    fn round_trip(level: u32) {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [
            0usize,
            1,
            100,
            STORED_BLOCK_MAX - 1,
            STORED_BLOCK_MAX,
            STORED_BLOCK_MAX + 1,
            3 * STORED_BLOCK_MAX + 7,
        ];
        let blobs: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let mut pack = PackWriter::create(dir.path(), level).unwrap();
        let ids: Vec<RawOid> = blobs
            .iter()
            .map(|b| pack.add(Kind::Blob, b).unwrap())
            .collect();
        let mut offsets: Vec<(u64, u32)> = ids
            .iter()
            .map(|id| {
                let o = pack.objects.iter().find(|o| o.oid == *id).unwrap();
                (o.offset, o.crc)
            })
            .collect();
        let path = pack.finish().unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"PACK");
        assert_eq!(
            u32::from_be_bytes(bytes[8..12].try_into().unwrap()),
            sizes.len() as u32
        );
        let trailer = bytes.len() - 20;
        let sum: RawOid = Sha1::digest(&bytes[..trailer]).into();
        assert_eq!(sum, bytes[trailer..]);
        offsets.push((trailer as u64, 0));
        for (k, blob) in blobs.iter().enumerate() {
            let (start, crc) = offsets[k];
            let end = offsets[k + 1].0;
            let entry = &bytes[start as usize..end as usize];
            let mut h = crc32fast::Hasher::new();
            h.update(entry);
            assert_eq!(h.finalize(), crc, "crc of entry {k}");
            // Skip the type/size header (continuation bit set on all but the last byte).
            let header = entry.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
            let mut z = flate2::read::ZlibDecoder::new(&entry[header..]);
            let mut out = Vec::new();
            z.read_to_end(&mut out).unwrap();
            assert_eq!(&out, blob, "entry {k} ({} bytes)", blob.len());
            assert_eq!(
                z.total_in() as usize,
                entry.len() - header,
                "entry {k} has trailing bytes"
            );
        }
    }

    #[test]
    fn stored_entries_are_valid_zlib_streams() {
        round_trip(0);
    }

    #[test]
    fn deflated_entries_are_valid_zlib_streams() {
        round_trip(1);
    }
}
