//! File sources: tail the files matching each source's glob through every kind of rotation,
//! losing and duplicating nothing, and resume exactly after a restart.
//!
//! # Shape
//!
//! - [`tailer::Tailer`] is the synchronous core: `poll(now, rescan, &mut out)` is one tick.
//!   It owns the open files, reads them with `pread`, splits lines with the shared
//!   [`LineSplitter`](crate::sources::LineSplitter) and decides rotation. Tests drive it with
//!   explicit ticks and explicit times; it never sleeps or reads a clock.
//! - [`run`] is the async shell: it wakes on an inotify hint (a `notify` watch on each
//!   *directory*, NonRecursive, coalesced into one [`tokio::sync::Notify`]) or on the poll tick
//!   (`tailer.poll_interval`, mandatory: NFS, missed events, `Rescan`, watch limits), runs one
//!   tick inside `spawn_blocking`, sends the lines with `send().await` (backpressure, never a
//!   drop) and writes checkpoints. A directory event (create, remove, rename, overflow) sets a
//!   `rescan` flag so the next tick re-expands globs; a data event only reads open files, and
//!   its paths are remembered: the next tick ([`Tailer::poll_hinted`]) checks only the files
//!   at those paths (every file when one is not a path a file is followed at, a symlink's
//!   target say, or a budget left data unread). The poll tick checks every file.
//! - [`checkpoint`] persists `{source, path, dev, inode, fingerprint, offset}` atomically.
//!
//! # Per-file state machine
//!
//! ```text
//!            glob match, new (dev,ino)             (dev,ino) seen again at a glob path
//!   (none) ───────────────────────────▶ CURRENT ◀──────────────────────────────┐
//!                                        │  │ read to EOF every tick             │
//!                                        │  │ size < pos or head changed:        │
//!                                        │  │   truncation → pos = 0             │
//!      (dev,ino) at no glob path any more│  └─ renamed within glob: follow path  │
//!      (renamed away, deleted, replaced) ▼                                       │
//!                                     DRAINING (until now ≥ rotated_at + rotate_wait)
//!                                        │ last read to EOF, flush partial line
//!                                        ▼
//!                                     CLOSED (fd dropped)
//! ```
//!
//! A file is keyed by `(dev, inode)` of its open fd. Because the fd stays open while the file
//! is tracked, the inode cannot be freed and reused under us, so within one run `(dev, inode)`
//! alone is a safe identity; the fingerprint (FNV-1a of the first ≤ 256 bytes, extended as a
//! short file grows) protects restarts, where inodes may have been reused, and detects a file
//! rewritten in place. Offsets: `pos` is the next byte to read; `line_start` (the byte after
//! the last `\n` read) is what checkpoints store, so a partial line is re-read after a restart.
//!
//! Every tick, for each source: with `rescan`, expand the glob and `stat` each match (following
//! symlinks), then reconcile: an open file whose identity is still at some glob path follows
//! it; one that is at none starts DRAINING; an identity not open yet is opened (subject to
//! `max_open_files`). Then read every open file, older (lower open sequence) first, so a
//! rotated-away file is drained before its successor is read in the same tick. A file whose
//! `fstat` shows nothing new since its last read (same size, times and offset) costs only
//! that `fstat`: reading every file to its end each tick made 1,000 idle files cost 1.2 % of
//! a core, now 0.5–0.6 % (`PARTS=c QUICK=1 scripts/bench-memory`). Reads are
//! bounded per file (256 KiB) and per tick (1 MiB and [`tailer::TICK_LINES`] lines, checked
//! every 16 KiB, so a file of short lines cannot make a tick of a million `Line`s); when a
//! budget runs out the shell ticks again at once, after sending the tick's lines (a full
//! channel therefore stops reading). (Small ticks keep a tick's lines in memory small and
//! let classify start on them sooner: 16 MiB ticks cost ~15% more CPU in
//! `scripts/bench-tail`, mostly page faults.)
//!
//! Where a newly opened file starts: a checkpoint with the same `(dev, inode)` and a matching
//! fingerprint resumes at its offset (0 if the file is now shorter); same inode but different
//! head (inode reuse) → 0; a checkpoint for the same *path* but another file (replaced while
//! stopped) → 0; no checkpoint, found by the first scan → `start_at` (`end` = after the last
//! line break, so a line being written is read whole; `beginning` = 0); found later → 0.
//! After the first scan a checkpointed file that left its path while the daemon was down is
//! searched by inode in its old directory and drained from its checkpoint.
//!
//! # Rotation handling
//!
//! | kind | what the tailer sees | handling |
//! |---|---|---|
//! | rename + create (logrotate `create`, Python `RotatingFileHandler`, `WatchedFileHandler`) | path → new inode; old inode at no glob path (or followed to `app.log.1` if the glob matches it) | old fd drained for `rotate_wait`, new file read from 0 |
//! | rename, then a burst bigger than the old file | same; sizes are never compared across files | as above (linemux loses this) |
//! | move into place (`mv staging.log app.log`) | path → new inode, already full | new file from 0; if the staging name matched the glob, its inode is followed, not re-read |
//! | delete + recreate | path missing, then a new inode | old (unlinked) fd drained; new from 0 |
//! | symlink swap (`ln -s b.log tmp; mv -T tmp current.log`) | `stat` follows the link → new inode | old target drained, new from 0; the target's directory is watched too |
//! | hard-link swap (`rotatelogs -L`) | path → new inode (remove + create) | as rename + create; an inode seen under two names is opened once |
//! | copytruncate / `truncate` / `> f` | same inode, `size < pos`, or head fingerprint changed | read from 0, `truncations += 1` |
//! | file absent at start | nothing matches | base directory watched; read from 0 when it appears |
//! | file vanishes | at no glob path | drained for `rotate_wait`, flushed, closed |
//! | watched directory deleted and recreated | a `Remove(Folder)` event for it (ext4 gives the new directory the *same* inode number, so identity alone cannot tell) | old files drained; the directory is watched again on the next full tick (`watched_directory_deleted_and_recreated_is_watched_again`) |
//!
//! **copytruncate race**: logrotate copies the file, then truncates it. Bytes appended after
//! the copy and before the truncate are in neither file: no tailer can read them. Bytes
//! appended after our last read but before the copy *are* in the copy: when a truncation is
//! detected the tailer looks in the directory for the copy (a regular file whose head matches
//! the fingerprint and that is longer than our offset) and reads its complete lines past our
//! offset first, so our own read→truncate window loses nothing. Measured by
//! `tests/tail_run.rs::copytruncate_race_is_measured` (async `run`, inotify + 1 s poll, a writer
//! appending a line every ~100 µs (~3,000 lines/s here), `logrotate -f` with copytruncate 20
//! times in 1.5 s): 17 of 4,894 lines lost (~0.85 per rotation), all in logrotate's own
//! copy→truncate window, 0 in ours, 0 duplicates. Everything else is exactly-once. A writer
//! without `O_APPEND` keeps writing at its old offset after a truncate (a sparse file of NULs):
//! those NULs are read as bytes of a line.
//!
//! Other limits: a file renamed away and still written after `rotate_wait` loses those later
//! lines (size `rotate_wait` for your writers); a file truncated and rewritten with an
//! identical head at least as long as our offset is indistinguishable from an append; with
//! more files than `max_open_files`, the extra files wait (counted in `skipped_for_cap`) and are
//! read from 0 when a slot frees up.
//!
//! # Bad input and a hostile system
//!
//! Nothing here stops the tailer; each failure is **logged once per episode** (when a path
//! starts failing, and `info` when it works again), **counted per attempt** in
//! [`TailerStats`], and retried on every poll tick. The totals are logged when the tailer
//! stops (`tailer stopped files=… errors=… watch_errors=…`); `/metrics` carries them live.
//!
//! | input | handling | test (`tests/tail_hostile.rs` unless noted) |
//! |---|---|---|
//! | file cannot be opened (mode 000, wrong owner after `create 0600 root root`) | `errors` counted, others keep being tailed; once readable it is read from 0 (a file that appeared meanwhile), so nothing is lost | `tail_unreadable_file_and_directory_are_logged_once_and_lose_nothing` (as an unprivileged uid when run as root) |
//! | file made unreadable while open | nothing happens: the open fd keeps reading (permissions are checked at open) | same |
//! | directory that cannot be listed or searched | `errors` counted; its open files are **not** treated as rotated (that would re-read them later) but keep being read through their fds | same |
//! | inotify cannot start (`EMFILE`: `max_user_instances`) or add a watch (`ENOSPC`: `max_user_watches`) | poll tick alone; `watch_errors` counted, `unwatched_dirs` shown, retried every tick: inotify comes back by itself | `tail_inotify_instance_limit_falls_back_to_polling_and_recovers` (`EMFILE`, the limit really reached for a dedicated uid; `ENOSPC` takes the same path but needs ~190k watched inodes to reproduce, so it is not) |
//! | binary or compressed file (NUL bytes in its first 512 bytes) | tailed as bytes; `FileStats::binary`, one warning per path; classify counts lines that are not UTF-8 | `tail_binary_file_and_endless_line_are_survived_and_counted` |
//! | NUL bytes, invalid UTF-8, over-long lines | bytes; lines capped at `max_line_bytes` (head kept, `truncated_lines`) | `tail.rs::bad_input_is_read_as_bytes_with_bounded_lines` |
//! | a 10 MB line with no newline | held bounded (the cap, not the line), not checkpointed past its start; emitted truncated when it ends, or flushed when its file is closed | `tail.rs::endless_line_without_newline_is_held_bounded_and_not_checkpointed` |
//!
//! # Checkpoints and crash safety
//!
//! Every `checkpoint_interval` the shell snapshots the offsets, and writes that snapshot once
//! it is at least 2 s old (longer than the records timeout) *and* the line channel has been
//! seen empty, so a checkpoint only covers lines that classify has received; on shutdown it
//! writes the current offsets after the last send. After a SIGKILL the lines since the last
//! written snapshot are read again: duplicates are bounded by about `checkpoint_interval` +
//! 2 s of input, and nothing is lost (at-least-once). Measured by
//! `tests/tail_run.rs::sigkill_and_restart_lose_nothing_and_duplicate_little` (real binary,
//! `checkpoint_interval = "1s"` so the lag is 1 s, ~750 lines/s, SIGKILL mid-stream, the file
//! rotated while the daemon was down): 0 lost, 805–888 duplicates (≈ 1.1 s of input).
//! A checkpoint identical to the last one written is not rewritten. See [`checkpoint`] for the
//! format.

pub mod checkpoint;
pub mod tailer;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::notify::event::{EventKind, ModifyKind, RemoveKind};
use ::notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{SourceConfig, TailerConfig};
use crate::event::Line;
pub use checkpoint::{Checkpoint, CheckpointStore, Fingerprint};
pub use tailer::{FileStats, Tailer, TailerStats};

/// How old a checkpoint snapshot must be before it is written (see the module doc).
const CHECKPOINT_LAG: Duration = Duration::from_secs(2);

/// Tails every file source until cancelled (after a final read and checkpoint) or until the
/// receiver is gone.
pub async fn run(
    sources: Vec<SourceConfig>,
    tailer: TailerConfig,
    state_dir: Option<PathBuf>,
    tx: mpsc::Sender<Vec<Line>>,
    cancel: CancellationToken,
    clock: Clock,
) -> std::io::Result<()> {
    run_with_stats(sources, tailer, state_dir, tx, cancel, clock, None).await
}

/// [`run`], publishing [`TailerStats`] after every rescan when `stats` is given.
pub async fn run_with_stats(
    sources: Vec<SourceConfig>,
    cfg: TailerConfig,
    state_dir: Option<PathBuf>,
    tx: mpsc::Sender<Vec<Line>>,
    cancel: CancellationToken,
    clock: Clock,
    stats: Option<watch::Sender<TailerStats>>,
) -> std::io::Result<()> {
    run_resuming(sources, cfg, state_dir, tx, cancel, clock, stats, None)
        .await
        .map(|_| ())
}

/// What a config reload hands from a stopped tailer to the one that replaces it.
#[derive(Debug, Default, Clone)]
pub struct Handover {
    /// The old tailer's final offsets, so the new one resumes exactly even without a
    /// `state_dir`; `None` (it failed): read the checkpoint file, as at start-up.
    pub checkpoints: Option<Vec<Checkpoint>>,
    /// Its last counters: the new tailer counts on from them ([`Tailer::carry`]), so the
    /// `/metrics` counters never go back.
    pub stats: TailerStats,
}

/// [`run_with_stats`], taking over from a stopped tailer when `resume` is given, and
/// returning the final checkpoints for the next one.
#[allow(clippy::too_many_arguments)]
pub async fn run_resuming(
    sources: Vec<SourceConfig>,
    cfg: TailerConfig,
    state_dir: Option<PathBuf>,
    tx: mpsc::Sender<Vec<Line>>,
    cancel: CancellationToken,
    clock: Clock,
    stats: Option<watch::Sender<TailerStats>>,
    resume: Option<Handover>,
) -> std::io::Result<Vec<Checkpoint>> {
    let (store, saved) = match &state_dir {
        Some(dir) => {
            let (s, saved) = CheckpointStore::open(dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("state_dir {}: {e}", dir.display()))
            })?;
            (Some(Arc::new(s)), saved)
        }
        None => (None, Vec::new()),
    };
    let (saved, carried) = match resume {
        Some(h) => (h.checkpoints.unwrap_or(saved), h.stats),
        None => (saved, TailerStats::default()),
    };
    let mut core = Tailer::new(&sources, &cfg, saved)?;
    core.carry(&carried);
    let wake = Arc::new(Notify::new());
    let rescan = Arc::new(AtomicBool::new(true));
    let mut dirs = DirWatcher::new(wake.clone(), rescan.clone());
    dirs.errors = carried.watch_errors;
    // Watch before the first scan, so nothing that happens after the scan goes unnoticed.
    dirs.sync(&core.watch_dirs());
    let lag = CHECKPOINT_LAG.min(cfg.checkpoint_interval);
    let mut next_poll = Instant::now();
    let mut next_ckpt = Instant::now() + cfg.checkpoint_interval;
    let mut pending: Option<(Instant, Vec<Checkpoint>)> = None;
    let mut saved: Vec<Checkpoint> = Vec::new();
    let (mut writes, mut failing) = (carried.checkpoint_writes, false);
    let mut write_errors = carried.checkpoint_errors;
    loop {
        let stopping = cancel.is_cancelled();
        let t = Instant::now();
        // (A timer may fire a hair early: treat "almost due" as due.)
        let full = rescan.swap(false, Ordering::SeqCst)
            || t + Duration::from_millis(2) >= next_poll
            || stopping;
        if full {
            next_poll = t + cfg.poll_interval;
        }
        let at = clock.now();
        // The paths inotify reported written since the last tick (a full tick checks all).
        let hint = dirs.hints.take();
        let hint = hint.filter(|_| !full);
        let (c, lines, more) = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let more = match &hint {
                Some(h) => core.poll_hinted(at, h, &mut out),
                None => core.poll(at, full, &mut out),
            };
            (core, out, more)
        })
        .await
        .map_err(std::io::Error::other)?;
        core = c;
        if !crate::sources::send_batches(&tx, lines).await {
            // Downstream gone: shutting down.
            log_stopped(&stats_of(&core, &dirs, (writes, write_errors)));
            return Ok(core.checkpoints());
        }
        if full {
            // A directory watched only now may have changed between the scan and the watch:
            // scan once more.
            if dirs.sync(&core.watch_dirs()) {
                rescan.store(true, Ordering::SeqCst);
            }
            if let Some(s) = &stats {
                s.send_replace(stats_of(&core, &dirs, (writes, write_errors)));
            }
        }
        if stopping {
            break;
        }
        if let Some(store) = &store {
            let t = Instant::now();
            let ready = pending.as_ref().is_some_and(|(due, _)| t >= *due)
                && tx.capacity() == tx.max_capacity();
            if ready {
                if let Some((_, cps)) = pending.take() {
                    match save(store, &cps, &mut saved, &mut failing).await {
                        Some(true) => writes += 1,
                        Some(false) => write_errors += 1,
                        None => {}
                    }
                }
            }
            if pending.is_none() && t >= next_ckpt {
                pending = Some((t + lag, core.checkpoints()));
                next_ckpt = t + cfg.checkpoint_interval;
            }
        }
        if more {
            tokio::task::yield_now().await;
            continue;
        }
        let mut deadline = next_poll;
        if let Some((due, _)) = &pending {
            deadline = deadline.min(*due);
        }
        tokio::select! {
            () = cancel.cancelled() => {}
            () = wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    if let Some(store) = &store {
        match save(store, &core.checkpoints(), &mut saved, &mut failing).await {
            Some(true) => writes += 1,
            Some(false) => write_errors += 1,
            None => {}
        }
    }
    let last = stats_of(&core, &dirs, (writes, write_errors));
    log_stopped(&last);
    if let Some(s) = &stats {
        s.send_replace(last);
    }
    Ok(core.checkpoints())
}

/// The core's counters plus the watcher's.
fn stats_of(core: &Tailer, dirs: &DirWatcher, checkpoints: (u64, u64)) -> TailerStats {
    TailerStats {
        watched_dirs: dirs.watched.len(),
        unwatched_dirs: dirs.unwatched,
        watch_errors: dirs.errors,
        checkpoint_writes: checkpoints.0,
        checkpoint_errors: checkpoints.1,
        ..core.stats()
    }
}

/// One line with the totals when the tailer stops (`/metrics` carries them live).
fn log_stopped(s: &TailerStats) {
    let sum = |f: fn(&FileStats) -> u64| s.files.iter().map(f).sum::<u64>();
    tracing::info!(
        files = s.files.len(),
        lines = sum(|f| f.lines),
        bytes = sum(|f| f.bytes),
        truncated_lines = sum(|f| f.truncated_lines),
        rotations = sum(|f| f.rotations),
        truncations = sum(|f| f.truncations),
        binary_files = s.files.iter().filter(|f| f.binary).count(),
        errors = s.errors,
        skipped_for_cap = s.skipped_for_cap,
        watch_errors = s.watch_errors,
        unwatched_dirs = s.unwatched_dirs,
        "tailer stopped"
    );
}

/// Writes `cps` unless they equal the last written ones (`None`); `Some(written)` otherwise.
/// A failure is logged when writing starts failing and when it works again, not per attempt.
async fn save(
    store: &Arc<CheckpointStore>,
    cps: &[Checkpoint],
    last: &mut Vec<Checkpoint>,
    failing: &mut bool,
) -> Option<bool> {
    if cps == last.as_slice() {
        return None;
    }
    let (s, v) = (store.clone(), cps.to_vec());
    let res = tokio::task::spawn_blocking(move || s.save(&v)).await;
    match res {
        Ok(Ok(())) => {
            *last = cps.to_vec();
            if std::mem::take(failing) {
                tracing::info!(file = %store.path().display(), "checkpoints are written again");
            }
            return Some(true);
        }
        Ok(Err(e)) if !*failing => {
            tracing::warn!(file = %store.path().display(), error = %e, "cannot write checkpoints; retrying every interval");
        }
        Err(e) if !*failing => tracing::warn!(error = %e, "checkpoint writer panicked"),
        _ => {}
    }
    *failing = true;
    Some(false)
}

/// Watches directories (never files: a file watch follows the inode after a rename) and turns
/// events into wake-up hints.
///
/// When inotify cannot be started (`EMFILE`: the per-user `max_user_instances` is reached) or
/// a watch cannot be added (`ENOSPC`: `max_user_watches`), the directories concerned are
/// tailed by the poll tick alone: that is logged once per episode, counted in
/// `watch_errors`, shown in `unwatched_dirs`, and retried on every poll tick, so inotify
/// comes back by itself once the limit is no longer hit.
struct DirWatcher {
    inner: Option<RecommendedWatcher>,
    wake: Arc<Notify>,
    rescan: Arc<AtomicBool>,
    /// Directory → its `(dev, inode)` when the watch was added (a recreated directory needs a
    /// new watch).
    watched: HashMap<PathBuf, (u64, u64)>,
    /// Directories reported deleted: inotify dropped their watch. ext4 hands a directory
    /// recreated at once the same inode number, so `(dev, inode)` alone cannot tell.
    deleted: Arc<Mutex<Vec<PathBuf>>>,
    /// Existing directories wanted but not watched after the last `sync`.
    unwatched: usize,
    /// Failed attempts to start inotify or add a watch.
    errors: u64,
    /// A fallback episode is on (it was logged; its end will be).
    degraded: bool,
    /// Paths written since the last tick, from data events.
    hints: Hints,
}

/// The paths of the data events since the last tick, for [`Tailer::poll_hinted`]; past
/// [`HINTS_CAP`] paths (or with the lock poisoned), every file is checked instead.
#[derive(Debug, Clone, Default)]
struct Hints(Arc<Mutex<(HashSet<OsString>, bool)>>);

/// Most paths remembered between two ticks.
const HINTS_CAP: usize = 4096;

impl Hints {
    fn add(&self, paths: &[PathBuf]) {
        if let Ok(mut h) = self.0.lock() {
            let (set, all) = &mut *h;
            for p in paths {
                if *all || set.contains(p.as_os_str()) {
                    continue;
                }
                if set.len() >= HINTS_CAP {
                    *all = true;
                    set.clear();
                } else {
                    // A file written again before the tick allocates nothing more.
                    set.insert(p.as_os_str().to_os_string());
                }
            }
        }
    }

    /// The paths gathered since the last call, or `None` when every file must be checked.
    fn take(&self) -> Option<HashSet<OsString>> {
        let mut h = self.0.lock().ok()?;
        let (set, all) = &mut *h;
        let all = std::mem::take(all);
        let set = std::mem::take(set);
        (!all).then_some(set)
    }
}

impl DirWatcher {
    fn new(wake: Arc<Notify>, rescan: Arc<AtomicBool>) -> DirWatcher {
        DirWatcher {
            inner: None,
            wake,
            rescan,
            watched: HashMap::new(),
            deleted: Arc::new(Mutex::new(Vec::new())),
            unwatched: 0,
            errors: 0,
            degraded: false,
            hints: Hints::default(),
        }
    }

    fn start(&self) -> ::notify::Result<RecommendedWatcher> {
        let (wake, rescan) = (self.wake.clone(), self.rescan.clone());
        let deleted = self.deleted.clone();
        let hints = self.hints.clone();
        let handler = move |res: ::notify::Result<::notify::Event>| {
            if let Ok(ev) = &res {
                if ev.kind == EventKind::Remove(RemoveKind::Folder) {
                    // Rare (directories only), and drained at the next full tick.
                    if let Ok(mut d) = deleted.lock() {
                        d.extend(ev.paths.iter().cloned());
                    }
                }
            }
            let data_only = match &res {
                Ok(ev) => {
                    !ev.need_rescan()
                        && matches!(
                            ev.kind,
                            EventKind::Modify(ModifyKind::Data(_))
                                | EventKind::Modify(ModifyKind::Metadata(_))
                                | EventKind::Access(_)
                        )
                }
                Err(_) => false,
            };
            match &res {
                Ok(ev) if data_only => hints.add(&ev.paths),
                _ => rescan.store(true, Ordering::SeqCst),
            }
            wake.notify_one();
        };
        ::notify::recommended_watcher(handler)
    }

    /// Counts a failure and logs the first of an episode.
    fn failed(&mut self, what: &str, dir: Option<&Path>, e: &::notify::Error) {
        self.errors += 1;
        if !self.degraded {
            self.degraded = true;
            let dir = dir.map(|d| d.display().to_string()).unwrap_or_default();
            tracing::warn!(dir, error = %e,
                "{what} (inotify limit?); tailing by the poll tick alone until it works again");
        }
    }

    /// Watches exactly the existing directories of `want` (re-watching recreated ones),
    /// starting inotify first if it is not running. True when a watch was added.
    fn sync(&mut self, want: &BTreeSet<PathBuf>) -> bool {
        let existing: Vec<(&PathBuf, (u64, u64))> = want
            .iter()
            .filter_map(|d| match std::fs::metadata(d) {
                Ok(md) if md.is_dir() => Some((d, (md.dev(), md.ino()))),
                _ => None,
            })
            .collect();
        if self.inner.is_none() {
            match self.start() {
                Ok(w) => self.inner = Some(w),
                Err(e) => {
                    self.unwatched = existing.len();
                    self.failed("cannot start inotify", None, &e);
                    return false;
                }
            }
        }
        let Some(w) = self.inner.as_mut() else {
            return false;
        };
        let deleted = match self.deleted.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => Vec::new(),
        };
        for d in deleted {
            self.watched.remove(&d);
        }
        let mut failures = Vec::new();
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(d, id)| !existing.iter().any(|(e, eid)| e == d && eid == *id))
            .map(|(d, _)| d.clone())
            .collect();
        for d in stale {
            // The directory is gone or was recreated: its old watch may already be gone too.
            let _ = w.unwatch(&d);
            self.watched.remove(&d);
        }
        let mut added = false;
        let mut unwatched = 0;
        for (d, id) in existing {
            if self.watched.contains_key(d) {
                continue;
            }
            match w.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(d.clone(), id);
                    added = true;
                }
                Err(e) => {
                    unwatched += 1;
                    failures.push((d.clone(), e));
                }
            }
        }
        for (d, e) in failures {
            self.failed("cannot watch directory", Some(&d), &e);
        }
        self.unwatched = unwatched;
        if self.degraded && unwatched == 0 {
            self.degraded = false;
            tracing::info!(
                dirs = self.watched.len(),
                "inotify works again; every directory is watched"
            );
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to 5 s for a wake-up hint.
    async fn woken(wake: &Notify) -> bool {
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .is_ok()
    }

    /// A watched directory removed and created again before the next `sync` gets the same
    /// inode number on ext4; the deletion event still makes `sync` watch the new one.
    #[tokio::test]
    async fn directory_recreated_with_the_same_inode_is_watched_again() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("w");
        std::fs::create_dir(&dir).unwrap();
        let (wake, rescan) = (Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        let mut w = DirWatcher::new(wake.clone(), rescan);
        let want = BTreeSet::from([dir.clone()]);
        assert!(w.sync(&want));
        let before = std::fs::metadata(&dir).unwrap().ino();
        std::fs::remove_dir(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let same = std::fs::metadata(&dir).unwrap().ino() == before;
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while w.deleted.lock().unwrap().is_empty() && std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!w.deleted.lock().unwrap().is_empty(), "no deletion event");
        assert!(w.sync(&want), "not watched again (same inode: {same})");
        while tokio::time::timeout(Duration::from_millis(50), wake.notified())
            .await
            .is_ok()
        {} // drain the hints of the deletion
        std::fs::write(dir.join("a.log"), b"x\n").unwrap();
        assert!(woken(&wake).await, "no event from the recreated directory");
        assert_eq!((w.watched.len(), w.unwatched, w.errors), (1, 0, 0));
    }

    /// Without inotify (as when the instance limit is reached) `sync` watches nothing, counts
    /// each failed start and reports the directories as unwatched.
    #[test]
    fn failed_start_counts_and_reports_unwatched_directories() {
        let d = tempfile::tempdir().unwrap();
        let mut w = DirWatcher::new(Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        let want = BTreeSet::from([d.path().to_path_buf(), d.path().join("missing")]);
        let e = ::notify::Error::io(std::io::Error::from_raw_os_error(libc::EMFILE));
        w.unwatched = 1;
        w.failed("cannot start inotify", None, &e);
        w.failed("cannot start inotify", None, &e);
        assert_eq!((w.errors, w.degraded), (2, true));
        // inotify is available here: the next sync starts it and ends the episode.
        w.sync(&want);
        assert_eq!((w.watched.len(), w.unwatched, w.degraded), (1, 0, false));
    }
}
