//! The synchronous tailer core: no async, no timers, no threads. `poll(now, rescan, out)` is
//! one tick; tests drive it with explicit ticks and explicit times. See the module doc of
//! [`super`] for the state machine and the rotation table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use memchr::{memchr, memrchr};

use super::checkpoint::{read_full_at, Checkpoint, Fingerprint, FP_BYTES};
use crate::config::{SourceConfig, SourceInput, StartAt, TailerConfig};
use crate::event::{Labels, Line, LineBytes, Origin, Ts};
use crate::sources::{LineSplitter, SplitLine};

/// A file's identity while it is open: `(dev, inode)`. Holding the fd open keeps the inode
/// allocated, so it cannot be reused under us; across restarts the fingerprint guards reuse.
pub type FileId = (u64, u64);

/// Bytes per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// Most bytes read from one file in one tick (fairness between busy files).
pub const FILE_BUDGET: usize = 256 << 10;
/// Most bytes read in one tick over all files (bounds the memory of one tick's lines).
pub const TICK_BUDGET: usize = 1 << 20;
/// Most lines produced in one tick over all files. With short lines the byte budget alone
/// would allow ~1M lines (~90 MB of `Line`s) per tick; a line costs ~90 bytes besides its
/// text (which it shares with the other lines of its 16 KiB piece). Checked after each [`PIECE`] of a read, so a tick ends at most one piece past it.
pub const TICK_LINES: usize = 2 * crate::sources::BATCH_LINES;
/// A read is handed to the splitter in pieces of this size, so the line budget can stop a
/// tick inside a read (the rest of the read is read again on the next tick).
const PIECE: usize = 16 * 1024;
/// How many bytes at the start of a file are checked for NUL bytes (see [`FileStats::binary`]).
pub const BINARY_SNIFF: usize = 512;
/// With `start_at = "end"`, how far back from the end to look for the last line break, so a
/// line being written at start-up is read whole.
const END_WINDOW: u64 = 64 * 1024;

/// Counters for one path (a rotated file's counts stay with the path it was opened under).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Source name.
    pub source: Arc<str>,
    /// The path.
    pub path: PathBuf,
    /// Whether a file opened under this path is open now.
    pub open: bool,
    /// Offset after the last complete line of the newest file opened under this path.
    pub offset: u64,
    /// Lines read.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Lines longer than the cap (head kept).
    pub truncated_lines: u64,
    /// Times the file at this path was replaced, moved or removed.
    pub rotations: u64,
    /// Times the file shrank or its head changed in place (copytruncate, `truncate`, `> f`).
    pub truncations: u64,
    /// NUL bytes in the first [`BINARY_SNIFF`] bytes: a binary or compressed file (say a
    /// rotated `app.log.1.gz` matched by `app.log*`). It is tailed anyway, as bytes; this is
    /// logged once per path.
    pub binary: bool,
    /// Inode of the newest file opened under this path (0 before it is read).
    pub inode: u64,
    /// Its size at the last read: `size - offset` is how far the tailer lags behind.
    pub size: u64,
}

/// Counters of the whole tailer, for `/metrics` and `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailerStats {
    /// Per path, sorted by source then path.
    pub files: Vec<FileStats>,
    /// Files held open now (current and draining).
    pub open_files: usize,
    /// Files not opened because `max_open_files` was reached (counted per attempt).
    pub skipped_for_cap: u64,
    /// Failed attempts to list a directory, or to stat, open or read a file (counted per
    /// attempt; each failing path is logged once per episode).
    pub errors: u64,
    /// Directories watched with inotify now (set by the async shell; 0 from the core).
    pub watched_dirs: usize,
    /// Directories that should be watched but are not (inotify unavailable, a watch limit):
    /// they are tailed by the poll tick alone.
    pub unwatched_dirs: usize,
    /// Failed attempts to start inotify or to add a watch (counted per attempt; logged once
    /// per episode).
    pub watch_errors: u64,
    /// Checkpoint files written (set by the async shell; 0 from the core).
    pub checkpoint_writes: u64,
    /// Failed checkpoint writes (logged once per episode; set by the async shell).
    pub checkpoint_errors: u64,
}

struct TailFile {
    file: File,
    /// Where the file is now (follows renames within the glob).
    path: PathBuf,
    /// The path it was opened under: stats key.
    stats_path: PathBuf,
    /// The directory of its resolved path, when a symlink points elsewhere.
    real_dir: Option<PathBuf>,
    /// The source, this file's open sequence number (its `stream`: older files, such as a
    /// rotated-away one, are read before newer ones) and its labels; shared by its lines.
    origin: Arc<Origin>,
    /// Next byte to read.
    pos: u64,
    /// Byte after the last complete line read: the checkpoint offset.
    line_start: u64,
    /// Skip up to the first `\n` (started in the middle of an over-long line).
    discard: bool,
    splitter: LineSplitter,
    fp: Fingerprint,
    /// (size, mtime, ctime) when last read: the head is re-checked only when it changed.
    last_seen: (u64, i64, i64),
    /// Set once the file left its path: read until then, then flush and close.
    draining_until: Option<Ts>,
    /// Bytes before this offset were in the file when the daemon started: catch-up.
    catch_up_end: u64,
}

impl TailFile {
    /// Nothing new since the last read: the same size, times and offset (a truncation or a
    /// rewrite in place changes the times, so it is not quiet either).
    fn quiet(&self, md: &fs::Metadata) -> bool {
        change_key(md) == self.last_seen && md.len() == self.pos
    }
}

struct Source {
    name: Arc<str>,
    glob: String,
    base_dir: PathBuf,
    labels: Vec<(String, String)>,
    start_at: StartAt,
    rotate_wait: Duration,
    max_line: usize,
    files: HashMap<FileId, TailFile>,
    stats: BTreeMap<PathBuf, FileStats>,
    /// Paths (files or directories) that failed in the last scan: logged once per episode.
    scan_failing: HashSet<PathBuf>,
    /// Paths whose open file failed its last read: logged once per episode.
    read_failing: HashSet<PathBuf>,
}

/// Shared mutable state used while scanning one source.
struct Ctx<'a> {
    checkpoints: &'a mut Vec<Checkpoint>,
    open: &'a mut usize,
    max_open: usize,
    next_seq: &'a mut u64,
    skipped_for_cap: &'a mut u64,
    errors: &'a mut u64,
    cap_warned: &'a mut bool,
}

/// Tails the files of several sources. One call of [`Tailer::poll`] is one tick.
pub struct Tailer {
    sources: Vec<Source>,
    max_open: usize,
    checkpoints: Vec<Checkpoint>,
    scanned: bool,
    next_seq: u64,
    open: usize,
    skipped_for_cap: u64,
    errors: u64,
    cap_warned: bool,
    buf: Vec<u8>,
    /// The last tick's budget ran out: data is waiting in files no event will name again.
    behind: bool,
}

impl std::fmt::Debug for Tailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tailer")
            .field("sources", &self.sources.len())
            .field("open", &self.open)
            .finish()
    }
}

impl Tailer {
    /// A tailer for the file sources in `sources` (others are ignored), resuming from
    /// `checkpoints` (as loaded from the state file). Fails on an invalid glob.
    pub fn new(
        sources: &[SourceConfig],
        cfg: &TailerConfig,
        checkpoints: Vec<Checkpoint>,
    ) -> io::Result<Tailer> {
        let mut out = Vec::new();
        for s in sources {
            let SourceInput::Files { glob } = &s.input else {
                continue;
            };
            glob::Pattern::new(glob).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("source {:?}: invalid glob {glob:?}: {e}", s.name),
                )
            })?;
            out.push(Source {
                name: s.name.clone(),
                glob: glob.clone(),
                base_dir: glob_base(glob),
                labels: s.labels.clone(),
                start_at: s.start_at,
                rotate_wait: s.rotate_wait,
                max_line: s.max_line_bytes,
                files: HashMap::new(),
                stats: BTreeMap::new(),
                scan_failing: HashSet::new(),
                read_failing: HashSet::new(),
            });
        }
        Ok(Tailer {
            sources: out,
            max_open: cfg.max_open_files.max(1),
            checkpoints,
            scanned: false,
            next_seq: 1 << 32,
            open: 0,
            skipped_for_cap: 0,
            errors: 0,
            cap_warned: false,
            buf: vec![0; READ_CHUNK],
            behind: false,
        })
    }

    /// One tick. With `rescan` (always on the first call) globs are re-expanded and every
    /// path re-stat'ed, which is how rotation, replacement and new files are noticed; without
    /// it only open files are read (and checked for truncation). Appends the lines read to
    /// `out`, all stamped `now`. Returns true when a read budget ran out and more data is
    /// waiting (call again soon).
    pub fn poll(&mut self, now: Ts, rescan: bool, out: &mut Vec<Line>) -> bool {
        let initial = !self.scanned;
        if rescan || initial {
            for i in 0..self.sources.len() {
                let mut ctx = Ctx {
                    checkpoints: &mut self.checkpoints,
                    open: &mut self.open,
                    max_open: self.max_open,
                    next_seq: &mut self.next_seq,
                    skipped_for_cap: &mut self.skipped_for_cap,
                    errors: &mut self.errors,
                    cap_warned: &mut self.cap_warned,
                };
                self.sources[i].scan(&mut ctx, now, initial);
            }
            if initial {
                self.recover_rotated_while_stopped(now);
                self.scanned = true;
            }
        }
        self.read_files(now, None, out)
    }

    /// A tick that checks only the open files at the paths in `hint` (those inotify reported
    /// written since the last tick) and draining files, instead of an `fstat` of every open
    /// file: with 1,000 files of which 10 were written, checking only the named ones took
    /// the daemon's CPU from 0.318 to 0.244 s (`FILES=1000 ACTIVE=10 scripts/bench-steady`,
    /// 0.09 s of it start-up). Every file is checked, as by [`poll`](Tailer::poll) without `rescan`,
    /// when a path in `hint` is not one an open file is followed at (a symlink's target, a
    /// hard link's other name), when the last tick's budget left data unread, and before the
    /// first scan.
    pub fn poll_hinted(&mut self, now: Ts, hint: &HashSet<OsString>, out: &mut Vec<Line>) -> bool {
        if !self.scanned || self.behind {
            return self.poll(now, false, out);
        }
        let mut named: HashSet<&std::ffi::OsStr> = HashSet::new();
        for s in &self.sources {
            for f in s.files.values() {
                if let Some(p) = hint.get(f.path.as_os_str()) {
                    named.insert(p);
                }
            }
        }
        if named.len() < hint.len() {
            return self.poll(now, false, out);
        }
        self.read_files(now, Some(hint), out)
    }

    /// Reads the open files (`only`: those at these paths, and draining ones).
    fn read_files(
        &mut self,
        now: Ts,
        only: Option<&HashSet<OsString>>,
        out: &mut Vec<Line>,
    ) -> bool {
        let mut budget = Budget {
            bytes: TICK_BUDGET,
            lines: TICK_LINES,
        };
        let mut more = false;
        for src in &mut self.sources {
            let (m, closed, errors) = src.read(now, only, out, &mut budget, &mut self.buf);
            more |= m;
            self.open -= closed;
            self.errors += errors;
        }
        self.behind = more;
        more
    }

    /// Where every open file is: one checkpoint per open file (current and draining).
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        let mut v = Vec::new();
        for s in &self.sources {
            for (id, f) in &s.files {
                v.push(Checkpoint {
                    source: s.name.to_string(),
                    path: f.path.to_string_lossy().into_owned(),
                    dev: id.0,
                    inode: id.1,
                    fingerprint: f.fp,
                    offset: f.line_start,
                });
            }
        }
        v.sort_by(|a, b| (&a.source, &a.path, a.inode).cmp(&(&b.source, &b.path, b.inode)));
        v
    }

    /// Directories to watch: each glob's literal base, the directory of every open file and of
    /// its symlink target.
    pub fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs = BTreeSet::new();
        for s in &self.sources {
            dirs.insert(s.base_dir.clone());
            for f in s.files.values() {
                if let Some(p) = f.path.parent() {
                    dirs.insert(nonempty_dir(p));
                }
                if let Some(d) = &f.real_dir {
                    dirs.insert(d.clone());
                }
            }
        }
        dirs
    }

    /// Counts on from `prev`, the last counters of a tailer this one replaces (a config
    /// reload): per-path counts of the sources it still has (by name; a removed source's
    /// paths go) and the totals, so `/metrics` counters never go back. A carried path counts
    /// as closed until this tailer opens a file there.
    pub fn carry(&mut self, prev: &TailerStats) {
        for f in &prev.files {
            if let Some(s) = self.sources.iter_mut().find(|s| s.name == f.source) {
                let st = FileStats {
                    open: false,
                    ..f.clone()
                };
                s.stats.insert(f.path.clone(), st);
            }
        }
        self.skipped_for_cap = prev.skipped_for_cap;
        self.errors = prev.errors;
    }

    /// Counters, for `/metrics` and `/status`.
    pub fn stats(&self) -> TailerStats {
        let mut files = Vec::new();
        for s in &self.sources {
            files.extend(s.stats.values().cloned());
        }
        TailerStats {
            files,
            open_files: self.open,
            skipped_for_cap: self.skipped_for_cap,
            errors: self.errors,
            ..TailerStats::default()
        }
    }

    /// Files open now (current and draining).
    pub fn open_files(&self) -> usize {
        self.open
    }

    /// After the first scan: a checkpointed file that is no longer at its path (rotated while
    /// the daemon was down, to a name outside the glob) is looked up by inode in its old
    /// directory and drained from its checkpoint for `rotate_wait`, so a restart across a
    /// rotation loses nothing.
    fn recover_rotated_while_stopped(&mut self, now: Ts) {
        let pending = std::mem::take(&mut self.checkpoints);
        let mut keep = Vec::new();
        // Older than anything the scan opened: read first.
        let mut recovered = 0;
        for cp in pending {
            let Some(src) = self.sources.iter_mut().find(|s| *s.name == *cp.source) else {
                continue;
            };
            let id = (cp.dev, cp.inode);
            if src.files.contains_key(&id) || self.open >= self.max_open {
                keep.push(cp);
                continue;
            }
            match find_by_inode(Path::new(&cp.path), id) {
                Some(found) => match open_regular(&found) {
                    Ok((file, md)) if (md.dev(), md.ino()) == id => {
                        let size = md.len();
                        if !cp.fingerprint.matches(&file, size).unwrap_or(false) || cp.offset > size
                        {
                            keep.push(cp);
                            continue;
                        }
                        tracing::info!(
                            source = %src.name, path = %cp.path, now_at = %found.display(),
                            offset = cp.offset,
                            "file was rotated while stopped; draining it from its checkpoint"
                        );
                        let stats_path = PathBuf::from(&cp.path);
                        let labels = expand_labels(&src.labels, &stats_path);
                        let f = TailFile {
                            file,
                            path: found,
                            stats_path: stats_path.clone(),
                            real_dir: None,
                            origin: Origin::new(src.name.clone(), recovered, labels),
                            pos: cp.offset,
                            line_start: cp.offset,
                            discard: false,
                            splitter: LineSplitter::new(src.max_line),
                            fp: cp.fingerprint,
                            last_seen: change_key(&md),
                            draining_until: Some(now.plus(src.rotate_wait)),
                            catch_up_end: md.len(),
                        };
                        recovered += 1;
                        src.stat(&stats_path).rotations += 1;
                        src.files.insert(id, f);
                        self.open += 1;
                    }
                    _ => keep.push(cp),
                },
                None => keep.push(cp),
            }
        }
        self.checkpoints = keep;
    }
}

impl Source {
    fn stat(&mut self, path: &Path) -> &mut FileStats {
        let name = self.name.clone();
        self.stats
            .entry(path.to_path_buf())
            .or_insert_with(|| FileStats {
                source: name,
                path: path.to_path_buf(),
                ..FileStats::default()
            })
    }

    /// Counts a failure of `path` in this scan and logs it when it was not failing in the
    /// previous scan: one warning per episode, not one per tick.
    fn scan_failed(
        &self,
        ctx: &mut Ctx<'_>,
        failing: &mut HashSet<PathBuf>,
        path: &Path,
        what: &str,
        e: &dyn std::fmt::Display,
    ) {
        *ctx.errors += 1;
        if !self.scan_failing.contains(path) && !failing.contains(path) {
            tracing::warn!(source = %self.name, path = %path.display(), error = %e,
                "{what}; retrying on every poll tick");
        }
        failing.insert(path.to_path_buf());
    }

    /// Re-expands the glob and reconciles it with the open files.
    fn scan(&mut self, ctx: &mut Ctx<'_>, now: Ts, initial: bool) {
        let mut failing: HashSet<PathBuf> = HashSet::new();
        // Each match with its identity and modification time.
        let mut found: Vec<(PathBuf, FileId, Option<std::time::SystemTime>)> = Vec::new();
        let entries = match glob::glob(&self.glob) {
            Ok(e) => e,
            Err(e) => {
                // Unreachable in practice: `Tailer::new` validated the pattern.
                let g = PathBuf::from(&self.glob);
                self.scan_failed(ctx, &mut failing, &g, "invalid glob", &e);
                self.scan_failing = failing;
                return;
            }
        };
        for entry in entries {
            match entry {
                Ok(p) => match fs::metadata(&p) {
                    Ok(md) if md.is_file() => {
                        found.push((p, (md.dev(), md.ino()), md.modified().ok()));
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => self.scan_failed(ctx, &mut failing, &p, "cannot stat file", &e),
                },
                Err(e) => {
                    let p = e.path().to_path_buf();
                    self.scan_failed(ctx, &mut failing, &p, "cannot read directory", e.error());
                }
            }
        }
        let mut at: HashMap<FileId, Vec<&PathBuf>> = HashMap::new();
        for (p, id, _) in &found {
            at.entry(*id).or_default().push(p);
        }

        // Open files: follow a rename within the glob; otherwise the file left its path
        // (renamed away, deleted, replaced): keep draining it for `rotate_wait`.
        let mut rotated: Vec<(PathBuf, PathBuf)> = Vec::new();
        for (id, f) in self.files.iter_mut() {
            match at.get(id) {
                Some(paths) => {
                    if !paths.iter().any(|p| **p == f.path) {
                        rotated.push((f.stats_path.clone(), paths[0].clone()));
                        f.path = paths[0].clone();
                    }
                    if f.draining_until.take().is_some() {
                        tracing::debug!(path = %f.path.display(), "file is back; no longer draining");
                    }
                }
                // A directory we may not list (or search) hides its files: that is not a
                // rotation. Keep reading the fd; the next scan that can see the path decides.
                None if f.draining_until.is_none() && hidden_but_present(&f.path, *id) => {}
                None if f.draining_until.is_none() => {
                    f.draining_until = Some(now.plus(self.rotate_wait));
                    rotated.push((f.stats_path.clone(), PathBuf::new()));
                }
                None => {}
            }
        }
        for (stats_path, to) in rotated {
            self.stat(&stats_path).rotations += 1;
            if to.as_os_str().is_empty() {
                tracing::info!(source = %self.name, path = %stats_path.display(), wait = ?self.rotate_wait,
                    "file rotated or removed; draining the old one");
            } else {
                tracing::info!(source = %self.name, path = %stats_path.display(), to = %to.display(),
                    "file renamed within the glob; following it");
            }
        }

        // New identities: open them, least recently written first, since files are read in
        // the order they were opened: a file rotated away (`app.log.250`) and its successor
        // (`app.log`) that appear in the same scan are read in the order they were written,
        // not in glob order (`python_watched_file_handler` saw line 1 after line 287 when
        // the writer was quicker than the first scan).
        found.sort_by_key(|(_, _, modified)| *modified);
        for (path, id, _) in found {
            if self.files.contains_key(&id) {
                continue;
            }
            if *ctx.open >= ctx.max_open {
                // Not tried: a failing path stays in its episode (no second warning).
                if self.scan_failing.contains(&path) {
                    failing.insert(path.clone());
                }
                *ctx.skipped_for_cap += 1;
                if !*ctx.cap_warned {
                    *ctx.cap_warned = true;
                    tracing::warn!(max_open_files = ctx.max_open, path = %path.display(),
                        "open-file cap reached; more files are not tailed until others close");
                }
                continue;
            }
            match self.open_file(ctx, &path, initial) {
                Ok(Some((rid, f))) => {
                    if self.scan_failing.contains(&path) {
                        tracing::info!(source = %self.name, path = %path.display(),
                            offset = f.pos, "file is readable again");
                    }
                    self.files.insert(rid, f);
                    *ctx.open += 1;
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.scan_failed(ctx, &mut failing, &path, "cannot open file", &e),
            }
        }
        for p in self.scan_failing.difference(&failing) {
            if p.is_dir() {
                tracing::info!(source = %self.name, path = %p.display(), "directory is readable again");
            }
        }
        self.scan_failing = failing;
    }

    fn open_file(
        &mut self,
        ctx: &mut Ctx<'_>,
        path: &Path,
        initial: bool,
    ) -> io::Result<Option<(FileId, TailFile)>> {
        let (file, md) = open_regular(path)?;
        // The path may have been swapped between the glob's stat and open: trust the fd.
        let id = (md.dev(), md.ino());
        if self.files.contains_key(&id) {
            return Ok(None);
        }
        let size = md.len();
        let fp = Fingerprint::of(&file, size)?;
        let (offset, discard, how) = self.start_position(ctx, path, id, &file, size, initial)?;
        tracing::debug!(source = %self.name, path = %path.display(), offset, how, "opened file");
        let real_dir = fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| Some(d.as_path()) != path.parent());
        let labels = expand_labels(&self.labels, path);
        let seq = *ctx.next_seq;
        *ctx.next_seq += 1;
        let st = self.stat(path);
        st.open = true;
        st.offset = offset;
        Ok(Some((
            id,
            TailFile {
                file,
                path: path.to_path_buf(),
                stats_path: path.to_path_buf(),
                real_dir,
                origin: Origin::new(self.name.clone(), seq, labels),
                pos: offset,
                line_start: offset,
                discard,
                splitter: LineSplitter::new(self.max_line),
                fp,
                last_seen: change_key(&md),
                draining_until: None,
                catch_up_end: if initial { size } else { 0 },
            },
        )))
    }

    /// Where to start reading a newly opened file, and why.
    fn start_position(
        &mut self,
        ctx: &mut Ctx<'_>,
        path: &Path,
        id: FileId,
        file: &File,
        size: u64,
        initial: bool,
    ) -> io::Result<(u64, bool, &'static str)> {
        let name = &*self.name;
        if let Some(i) = ctx
            .checkpoints
            .iter()
            .position(|c| c.source == name && (c.dev, c.inode) == id)
        {
            let cp = ctx.checkpoints.swap_remove(i);
            if !cp.fingerprint.matches(file, size)? {
                return Ok((0, false, "inode reused by other content: from the start"));
            }
            if cp.offset > size {
                self.stat(path).truncations += 1;
                return Ok((0, false, "truncated while stopped: from the start"));
            }
            return Ok((cp.offset, false, "resumed from checkpoint"));
        }
        let p = path.to_string_lossy();
        if ctx
            .checkpoints
            .iter()
            .any(|c| c.source == name && c.path == p)
        {
            return Ok((0, false, "replaced while stopped: from the start"));
        }
        if !initial {
            return Ok((0, false, "new file: from the start"));
        }
        match self.start_at {
            StartAt::Beginning => Ok((0, false, "start_at = beginning")),
            StartAt::End => {
                let (o, d) = end_offset(file, size)?;
                Ok((o, d, "start_at = end"))
            }
        }
    }

    /// Reads every open file (older first). Returns (more data waiting, files closed, errors).
    fn read(
        &mut self,
        now: Ts,
        only: Option<&HashSet<OsString>>,
        out: &mut Vec<Line>,
        budget: &mut Budget,
        buf: &mut [u8],
    ) -> (bool, usize, u64) {
        let mut order: Vec<(u64, FileId)> = self
            .files
            .iter()
            .map(|(id, f)| (f.origin.stream, *id))
            .collect();
        order.sort_unstable();
        let (mut more, mut closed, mut errors) = (false, 0, 0);
        for (_, id) in order {
            if budget.spent() {
                more = true;
                break;
            }
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            // Most files of a busy host are quiet on most ticks: an fstat that shows nothing
            // new is all they cost (no read, no lookup of their counters by path).
            let steady = f.draining_until.is_none() && self.read_failing.is_empty();
            if steady && only.is_some_and(|h| !h.contains(f.path.as_os_str())) {
                continue;
            }
            let md = f.file.metadata();
            let quiet = md.as_ref().is_ok_and(|md| f.quiet(md));
            if quiet && steady {
                continue;
            }
            if !self.stats.contains_key(&f.stats_path) {
                let st = FileStats {
                    source: self.name.clone(),
                    path: f.stats_path.clone(),
                    ..FileStats::default()
                };
                self.stats.insert(f.stats_path.clone(), st);
            }
            let Some(st) = self.stats.get_mut(&f.stats_path) else {
                continue;
            };
            let res = md.and_then(|md| read_file(f, md, &self.name, st, now, out, budget, buf));
            if res.is_ok() && self.read_failing.remove(&f.stats_path) {
                tracing::info!(source = %self.name, path = %f.path.display(), "file is readable again");
            }
            let expired = f.draining_until.is_some_and(|d| now >= d);
            let close = match res {
                Ok(true) => {
                    more = true;
                    false
                }
                Ok(false) => expired,
                Err(e) => {
                    errors += 1;
                    if self.read_failing.insert(f.stats_path.clone()) {
                        tracing::warn!(source = %self.name, path = %f.path.display(), error = %e,
                            "cannot read file; retrying on every tick");
                    }
                    expired
                }
            };
            if close {
                // End of a rotated-away file after the grace period: its last line may lack
                // a newline; flush it.
                let at = now;
                let origin = &f.origin;
                f.splitter
                    .finish(|l| emit(out, st, l, None, origin, at, false));
                st.open = false;
                tracing::debug!(source = %self.name, path = %f.path.display(), "closed drained file");
                self.files.remove(&id);
                closed += 1;
            }
        }
        // A path whose newest file is still open stays "open" in the stats.
        if closed > 0 {
            for f in self.files.values() {
                if let Some(st) = self.stats.get_mut(&f.stats_path) {
                    st.open = true;
                }
            }
        }
        (more, closed, errors)
    }
}

/// What is left of one tick's read budget.
#[derive(Debug)]
struct Budget {
    /// Bytes still to read.
    bytes: usize,
    /// Lines still to produce.
    lines: usize,
}

impl Budget {
    fn spent(&self) -> bool {
        self.bytes == 0 || self.lines == 0
    }
}

/// Reads one file up to its budget. Returns true when the budget ran out first.
#[allow(clippy::too_many_arguments)]
fn read_file(
    f: &mut TailFile,
    md: fs::Metadata,
    name: &Arc<str>,
    st: &mut FileStats,
    now: Ts,
    out: &mut Vec<Line>,
    budget: &mut Budget,
    buf: &mut [u8],
) -> io::Result<bool> {
    let size = md.len();
    let seen = change_key(&md);
    // Truncated (shorter than what we read), or rewritten in place (head changed, e.g.
    // copytruncate followed by a burst at least as long as the old offset). The head is
    // re-read only when size or times changed, so quiet files cost one fstat per tick.
    let replaced_head = seen != f.last_seen && f.fp.len > 0 && !f.fp.matches(&f.file, size)?;
    if size < f.pos || replaced_head {
        st.truncations += 1;
        let recovered = finish_from_copy(f, st, now, out, buf);
        tracing::info!(source = %name, path = %f.path.display(), old_offset = f.pos, size,
            recovered_from_copy = ?recovered, "file truncated in place; reading it from the start");
        f.pos = 0;
        f.line_start = 0;
        f.discard = false;
        f.splitter.reset();
        f.fp = Fingerprint::of(&f.file, size)?;
    }
    let mut file_budget = FILE_BUDGET.min(budget.bytes);
    let mut hit = false;
    loop {
        if file_budget == 0 || budget.lines == 0 {
            hit = true;
            break;
        }
        let want = READ_CHUNK.min(file_budget).min(buf.len());
        let n = match f.file.read_at(&mut buf[..want], f.pos) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        let base = f.pos;
        if base == 0 && !st.binary && memchr(0, &buf[..n.min(BINARY_SNIFF)]).is_some() {
            st.binary = true;
            tracing::warn!(source = %name, path = %f.path.display(),
                "file starts with NUL bytes: binary or compressed? tailing it as bytes anyway");
        }
        let mut start = 0;
        if f.discard {
            match memchr(b'\n', &buf[..n]) {
                Some(i) => {
                    start = i + 1;
                    f.discard = false;
                }
                None => start = n,
            }
        }
        // Hand the read to the splitter piece by piece while the tick may produce lines; the
        // bytes after the last piece taken are read again on the next tick. (The splitter's
        // lines do not depend on how its input is cut.)
        let mut used = start;
        let (origin, catch_up) = (&f.origin, base < f.catch_up_end);
        // Room for a full tick once data comes (an idle tick allocates nothing): a tick's
        // `Line`s grown by doubling were copied about once more.
        if out.capacity() == 0 {
            out.reserve(TICK_LINES);
        }
        while used < n && budget.lines > 0 {
            let end = (used + PIECE).min(n);
            let before = out.len();
            // The piece's lines share one copy of it.
            let chunk: Arc<[u8]> = Arc::from(&buf[used..end]);
            f.splitter.push(&chunk, |l| {
                emit(out, st, l, Some(&chunk), origin, now, catch_up)
            });
            budget.lines = budget.lines.saturating_sub(out.len() - before);
            used = end;
        }
        if let Some(i) = memrchr(b'\n', &buf[..used]) {
            f.line_start = base + i as u64 + 1;
        }
        f.pos += used as u64;
        file_budget -= used;
        budget.bytes -= used;
        st.bytes += used as u64;
        if used < n {
            hit = true;
            break;
        }
    }
    f.last_seen = seen;
    let known = size.max(f.pos);
    if (f.fp.len as usize) < FP_BYTES && known > u64::from(f.fp.len) {
        f.fp = Fingerprint::of(&f.file, known)?;
    }
    st.offset = f.line_start;
    st.inode = md.ino();
    st.size = size;
    Ok(hit)
}

/// Counts one split line and appends it to `out`, as a range of `chunk` when it lies there.
fn emit(
    out: &mut Vec<Line>,
    st: &mut FileStats,
    l: SplitLine<'_>,
    chunk: Option<&Arc<[u8]>>,
    origin: &Arc<Origin>,
    at: Ts,
    catch_up: bool,
) {
    st.lines += 1;
    st.truncated_lines += u64::from(l.truncated);
    out.push(Line {
        origin: origin.clone(),
        bytes: match chunk {
            Some(c) => LineBytes::within(c, l.bytes),
            None => LineBytes::from(l.bytes),
        },
        truncated: l.truncated,
        at,
        catch_up,
        backfill: false,
    });
}

/// copytruncate: the bytes appended after our last read but before the copy are in the copy
/// (a regular file in the same directory whose head matches our fingerprint and that is
/// longer than what we read). Reads them from there, complete lines only: the copy's last
/// partial line continued in bytes the truncate destroyed. Returns the copy's path.
fn finish_from_copy(
    f: &mut TailFile,
    st: &mut FileStats,
    now: Ts,
    out: &mut Vec<Line>,
    buf: &mut [u8],
) -> Option<PathBuf> {
    if f.fp.len == 0 {
        return None;
    }
    let dir = nonempty_dir(f.path.parent()?);
    let me = f.file.metadata().ok()?;
    let mut best: Option<(i64, PathBuf)> = None;
    for e in fs::read_dir(&dir).ok()?.flatten() {
        let Ok(md) = e.metadata() else { continue };
        if !md.is_file() || (md.dev(), md.ino()) == (me.dev(), me.ino()) || md.len() <= f.pos {
            continue;
        }
        if best.as_ref().is_none_or(|(m, _)| md.mtime() >= *m) {
            let Ok(copy) = File::open(e.path()) else {
                continue;
            };
            if f.fp.matches(&copy, md.len()).unwrap_or(false) {
                best = Some((md.mtime(), e.path()));
            }
        }
    }
    let path = best?.1;
    let copy = File::open(&path).ok()?;
    let size = copy.metadata().ok()?.len();
    let mut pos = f.pos;
    let origin = &f.origin;
    while pos < size {
        let want = buf.len().min((size - pos) as usize);
        let n = match copy.read_at(&mut buf[..want], pos) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pos += n as u64;
        st.bytes += n as u64;
        f.splitter
            .push(&buf[..n], |l| emit(out, st, l, None, origin, now, false));
    }
    Some(path)
}

/// Whether the open file `id`, which the glob did not list, may still be at `path`: it is
/// (the directory could not be listed), or `path` cannot be checked (a directory without
/// search permission). Only a missing path or another file there means it left.
fn hidden_but_present(path: &Path, id: FileId) -> bool {
    match fs::metadata(path) {
        Ok(md) => (md.dev(), md.ino()) == id,
        Err(e) => e.kind() == io::ErrorKind::PermissionDenied,
    }
}

/// What changes when a file is written or truncated: (size, mtime, ctime) in nanoseconds.
fn change_key(md: &fs::Metadata) -> (u64, i64, i64) {
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    (
        md.len(),
        ns(md.mtime(), md.mtime_nsec()),
        ns(md.ctime(), md.ctime_nsec()),
    )
}

/// Opens a regular file for reading without blocking (a FIFO swapped in must not hang us).
fn open_regular(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let md = file.metadata()?;
    if !md.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, md))
}

/// Looks in `old_path`'s directory for an entry that is the inode `id`.
fn find_by_inode(old_path: &Path, id: FileId) -> Option<PathBuf> {
    let dir = nonempty_dir(old_path.parent()?);
    for e in fs::read_dir(&dir).ok()?.flatten() {
        if let Ok(md) = e.metadata() {
            if md.is_file() && (md.dev(), md.ino()) == id {
                return Some(e.path());
            }
        }
    }
    None
}

/// The offset to start at with `start_at = "end"`: after the last line break in the last
/// [`END_WINDOW`] bytes, so a line being written now is read whole. With no line break there,
/// the start (a short file) or the end, skipping the rest of that over-long line.
fn end_offset(file: &File, size: u64) -> io::Result<(u64, bool)> {
    if size == 0 {
        return Ok((0, false));
    }
    let start = size.saturating_sub(END_WINDOW);
    let mut buf = vec![0u8; (size - start) as usize];
    let got = read_full_at(file, &mut buf, start)?;
    Ok(match memrchr(b'\n', &buf[..got]) {
        Some(i) => (start + i as u64 + 1, false),
        None if start == 0 => (0, false),
        None => (size, true),
    })
}

/// The deepest directory of `glob` that has no wildcard: always watched, even before any
/// file matches.
pub fn glob_base(glob: &str) -> PathBuf {
    let comps: Vec<_> = Path::new(glob).components().collect();
    let mut base = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        let s = c.as_os_str().to_string_lossy();
        if i + 1 == comps.len() || s.contains(['*', '?', '[']) {
            break;
        }
        base.push(c);
    }
    nonempty_dir(&base)
}

fn nonempty_dir(p: &Path) -> PathBuf {
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p.to_path_buf()
    }
}

/// Expands `{stem}`, `{name}` and `{dir}` in label values from `path`: for
/// `/var/log/ingest-1/app.log` they are `app`, `app.log` and `ingest-1` (the parent
/// directory's name).
pub fn expand_labels(pairs: &[(String, String)], path: &Path) -> Labels {
    let lossy = |o: Option<&std::ffi::OsStr>| {
        o.map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let name = lossy(path.file_name());
    let stem = lossy(path.file_stem());
    let dir = lossy(path.parent().and_then(Path::file_name));
    Labels::from_pairs(pairs.iter().map(|(k, v)| {
        let v = if v.contains('{') {
            v.replace("{stem}", &stem)
                .replace("{name}", &name)
                .replace("{dir}", &dir)
        } else {
            v.clone()
        };
        (k.as_str(), v)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_base_is_the_literal_prefix() {
        assert_eq!(
            glob_base("/var/log/app/*.log"),
            PathBuf::from("/var/log/app")
        );
        assert_eq!(glob_base("/var/log/*/app.log"), PathBuf::from("/var/log"));
        assert_eq!(glob_base("/var/log/app.log"), PathBuf::from("/var/log"));
        assert_eq!(glob_base("app.log"), PathBuf::from("."));
        assert_eq!(glob_base("*.log"), PathBuf::from("."));
    }

    /// A hinted tick reads the files it names (and nothing else unless it must): a named file
    /// is read, another written file waits for a tick that names it or checks all; a path
    /// no open file is followed at, or data a budget left unread, make it check all.
    #[test]
    fn a_hinted_tick_reads_the_named_files_and_all_when_it_cannot_tell() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.log"), d.path().join("b.log"));
        fs::write(&a, b"").unwrap();
        fs::write(&b, b"").unwrap();
        let src = SourceConfig::files(&d.path().join("*.log").display().to_string());
        let mut t = Tailer::new(&[src], &TailerConfig::default(), Vec::new()).unwrap();
        let mut out = Vec::new();
        t.poll(Ts(0), true, &mut out);
        assert!(out.is_empty());
        let append = |p: &Path, text: &str| {
            let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        let texts = |out: &mut Vec<Line>| -> Vec<String> {
            out.drain(..)
                .map(|l| crate::event::display_text(&l.bytes))
                .collect()
        };
        let hint = |paths: &[&Path]| -> HashSet<OsString> {
            paths.iter().map(|p| p.as_os_str().to_os_string()).collect()
        };
        append(&a, "a1\n");
        append(&b, "b1\n");
        t.poll_hinted(Ts(1), &hint(&[&a]), &mut out);
        assert_eq!(texts(&mut out), ["a1"], "only the named file");
        t.poll_hinted(Ts(2), &hint(&[]), &mut out);
        assert!(out.is_empty(), "nothing named, nothing read");
        t.poll_hinted(Ts(3), &hint(&[&b]), &mut out);
        assert_eq!(texts(&mut out), ["b1"]);
        // A path the tailer does not follow (another file in the directory, a link's target).
        append(&a, "a2\n");
        t.poll_hinted(Ts(4), &hint(&[&d.path().join("other.txt")]), &mut out);
        assert_eq!(
            texts(&mut out),
            ["a2"],
            "an unknown path: every file checked"
        );
        // A budget that ran out: the next tick reads on, named or not.
        let big: String = (0..TICK_LINES + PIECE).map(|i| format!("{i}\n")).collect();
        append(&b, &big);
        let mut more = t.poll_hinted(Ts(5), &hint(&[&b]), &mut out);
        assert!(more);
        while more {
            more = t.poll_hinted(Ts(6), &hint(&[]), &mut out);
        }
        assert_eq!(out.len(), TICK_LINES + PIECE, "the rest, unnamed");
    }

    #[test]
    fn labels_expand_path_placeholders() {
        let pairs = vec![
            ("worker".to_string(), "{dir}-{stem}".to_string()),
            ("file".to_string(), "{name}".to_string()),
            ("team".to_string(), "ops".to_string()),
        ];
        let l = expand_labels(&pairs, Path::new("/var/log/ingest-1/app.log"));
        assert_eq!(l.get("worker"), Some("ingest-1-app"));
        assert_eq!(l.get("file"), Some("app.log"));
        assert_eq!(l.get("team"), Some("ops"));
    }

    #[test]
    fn a_replacing_tailer_counts_on_from_the_stats_it_carries() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        fs::write(&p, b"one\ntwo\n").unwrap();
        let mut src = SourceConfig::files(&d.path().join("*.log").display().to_string());
        src.start_at = crate::config::StartAt::Beginning;
        let gone = SourceConfig::files("/nonexistent/*.log");
        let cfg = TailerConfig::default();
        let mut old = Tailer::new(&[src.clone(), gone.clone()], &cfg, Vec::new()).unwrap();
        let mut out = Vec::new();
        old.poll(Ts(0), true, &mut out);
        assert_eq!(out.len(), 2);
        let mut prev = old.stats();
        prev.errors = 3;
        prev.files.push(FileStats {
            source: gone.name.clone(),
            path: "/nonexistent/x.log".into(),
            lines: 9,
            ..FileStats::default()
        });

        // The new tailer (the removed source gone) resumes at the old offsets.
        let mut new = Tailer::new(&[src], &cfg, old.checkpoints()).unwrap();
        new.carry(&prev);
        fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"three\n")
            .unwrap();
        out.clear();
        new.poll(Ts(1), true, &mut out);
        assert_eq!(out.len(), 1, "resumed, not re-read");
        let st = new.stats();
        assert_eq!(st.files.len(), 1, "the removed source's paths go: {st:?}");
        let f = &st.files[0];
        assert_eq!((f.lines, f.bytes, f.open), (3, 14, true));
        assert_eq!(st.errors, 3, "carried; the new tailer had no failures");
    }

    /// Issue 7: a tick's lines are bounded in number, not only in bytes. A 1 MiB tick of
    /// empty lines would be a million `Line`s (~90 MB); the line budget stops the tick
    /// inside a read, and the rest is read on the next ticks, each line exactly once.
    #[test]
    fn a_tick_of_short_lines_is_bounded_in_lines_and_loses_nothing() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        // 300,000 lines "0".."299999" and a partial last line, in ~2 MB: within the byte
        // budgets of a few ticks, far over the line budget of one.
        let mut data: Vec<u8> = (0..300_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        data.extend_from_slice(b"partial");
        fs::write(&p, &data).unwrap();
        let mut src = SourceConfig::files(&d.path().join("*.log").display().to_string());
        src.start_at = crate::config::StartAt::Beginning;
        let mut t = Tailer::new(&[src], &TailerConfig::default(), Vec::new()).unwrap();
        let (mut next, mut ticks) = (0u64, 0);
        loop {
            let mut out = Vec::new();
            let more = t.poll(Ts(0), ticks == 0, &mut out);
            ticks += 1;
            // At most one piece past the budget: a 16 KiB piece of 2-byte lines.
            assert!(
                out.len() <= TICK_LINES + PIECE / 2,
                "tick {ticks}: {} lines",
                out.len()
            );
            for l in out {
                assert_eq!(
                    l.bytes,
                    next.to_string().into_bytes(),
                    "in order, once each"
                );
                next += 1;
            }
            if !more {
                break;
            }
        }
        assert_eq!(next, 300_000);
        assert!(ticks >= 300_000 / (TICK_LINES + PIECE / 2), "{ticks} ticks");
        let st = t.stats();
        let expect = (data.len() - b"partial".len()) as u64;
        assert_eq!((st.files[0].lines, st.files[0].offset), (300_000, expect));
        assert_eq!(st.files[0].bytes, data.len() as u64, "every byte read once");
        // The checkpoint is after the last complete line; the partial line is still held.
        assert_eq!(t.checkpoints()[0].offset, expect);
        fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b" line\n")
            .unwrap();
        let mut out = Vec::new();
        t.poll(Ts(1), false, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].bytes[..], b"partial line");
    }

    #[test]
    fn end_offset_keeps_a_partial_last_line_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"one\ntwo\nthr").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(end_offset(&f, 11).unwrap(), (8, false));
        fs::write(&p, b"no newline").unwrap();
        assert_eq!(end_offset(&f, 10).unwrap(), (0, false));
        let big = vec![b'x'; 100_000];
        fs::write(&p, &big).unwrap();
        assert_eq!(end_offset(&f, 100_000).unwrap(), (100_000, true));
    }
}
