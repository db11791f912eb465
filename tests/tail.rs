//! The file tailer's synchronous core, driven by explicit ticks on real files in temp dirs:
//! every rotation kind, a proptest model, checkpoints (resume, inode reuse, rotation while
//! stopped), bad input, and real `logrotate`.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logwarden::config::{SourceConfig, StartAt, TailerConfig};
use logwarden::event::Ts;
use logwarden::sources::file::{Checkpoint, Fingerprint, Tailer};
use proptest::prelude::*;

pub const ROTATE_WAIT_MS: u64 = 1000;

/// The tailer core with a fake clock and everything it read.
pub struct Core {
    pub t: Tailer,
    pub now: Ts,
    pub got: Vec<Vec<u8>>,
    pub truncated: usize,
}

impl Core {
    pub fn new(glob: &Path, start_at: StartAt, cps: Vec<Checkpoint>) -> Core {
        Core::with(glob, start_at, cps, |_| {})
    }

    pub fn with(
        glob: &Path,
        start_at: StartAt,
        cps: Vec<Checkpoint>,
        f: impl FnOnce(&mut SourceConfig),
    ) -> Core {
        let mut s = SourceConfig::files(glob.to_str().unwrap());
        s.start_at = start_at;
        s.rotate_wait = Duration::from_millis(ROTATE_WAIT_MS);
        f(&mut s);
        let t = Tailer::new(&[s], &TailerConfig::default(), cps).unwrap();
        Core {
            t,
            now: Ts::from_secs(1_800_000_000),
            got: Vec::new(),
            truncated: 0,
        }
    }

    /// One full tick (rescan), repeated while a read budget ran out.
    pub fn tick(&mut self) {
        self.poll(true);
    }

    /// A tick without rescan (an inotify data hint).
    pub fn tick_data(&mut self) {
        self.poll(false);
    }

    fn poll(&mut self, rescan: bool) {
        loop {
            let mut out = Vec::new();
            let more = self.t.poll(self.now, rescan, &mut out);
            for l in out {
                assert_eq!(l.at, self.now);
                self.truncated += usize::from(l.truncated);
                self.got.push(l.bytes.to_vec());
            }
            if !more {
                break;
            }
        }
    }

    pub fn advance(&mut self, ms: u64) {
        self.now = Ts(self.now.0 + ms);
    }

    /// Ticks past `rotate_wait` so every draining file is read to its end and closed.
    pub fn drain(&mut self) {
        self.tick();
        self.advance(ROTATE_WAIT_MS + 1);
        self.tick();
        self.tick();
    }

    pub fn text(&self) -> Vec<String> {
        self.got
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

pub fn append(path: &Path, data: &[u8]) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The world: a writer that rotates its log in every way, and what it completely wrote.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// logrotate `create`, Python RotatingFileHandler / WatchedFileHandler: rename, new file.
    RenameCreate,
    /// Rename to a name the glob also matches (`app-3.log`): followed, never re-read.
    RenameInGlob,
    /// logrotate `copytruncate` (no writes between copy and truncate: the race is measured
    /// separately).
    CopyTruncate,
    DeleteCreate,
    /// `mv staging.tmp app.log`: the new file arrives already full.
    MoveIntoPlace,
    /// rotatelogs `-L`: unlink the link, hard-link it to the new file.
    HardLinkSwap,
    /// `app.log` becomes a symlink to a new target in `data/` (swapped atomically).
    SymlinkSwap,
}

#[derive(Debug, Clone)]
pub enum Op {
    /// `n` complete lines with `pad` bytes of padding each.
    Write(usize, usize),
    /// Half a line: the rest comes with the next write.
    Partial,
    Tick,
    TickData,
    Advance(u64),
    /// Tick, then rotate; the old writer then writes `late` more lines to its old fd.
    Rotate(Kind, usize),
    /// Tick, then truncate the file in place (writer keeps its O_APPEND fd).
    Truncate,
    /// Tick, then delete the file; the writer closes it (the next write creates a new one).
    Delete,
}

pub struct World {
    pub dir: PathBuf,
    pub log: PathBuf,
    cur: Option<(File, u32)>,
    tags: u32,
    seq: u64,
    rot: u32,
    half: Option<(u32, Vec<u8>)>,
    /// (file tag, seq) of every completely written line, in write order.
    pub written: Vec<(u32, u64)>,
}

impl World {
    pub fn new(dir: &Path) -> World {
        fs::create_dir_all(dir.join("data")).unwrap();
        World {
            dir: dir.to_path_buf(),
            log: dir.join("app.log"),
            cur: None,
            tags: 0,
            seq: 0,
            rot: 0,
            half: None,
            written: Vec::new(),
        }
    }

    pub fn glob(&self) -> PathBuf {
        self.dir.join("*.log")
    }

    fn line(&mut self, tag: u32, pad: usize) -> Vec<u8> {
        self.seq += 1;
        format!("f{tag:03} seq={} {}\n", self.seq, "x".repeat(pad)).into_bytes()
    }

    fn new_tag(&mut self) -> u32 {
        self.tags += 1;
        self.tags
    }

    fn writer(&mut self) -> &mut (File, u32) {
        if self.cur.is_none() {
            let tag = self.new_tag();
            self.cur = Some((open_append(&self.log), tag));
        }
        self.cur.as_mut().unwrap()
    }

    fn finish_half(&mut self) {
        if let Some((tag, rest)) = self.half.take() {
            let (f, _) = self.writer();
            f.write_all(&rest).unwrap();
            let seq = self.seq;
            self.written.push((tag, seq));
        }
    }

    pub fn write(&mut self, n: usize, pad: usize) {
        self.finish_half();
        for _ in 0..n {
            let tag = self.writer().1;
            let l = self.line(tag, pad);
            self.writer().0.write_all(&l).unwrap();
            self.written.push((tag, self.seq));
        }
    }

    fn partial(&mut self) {
        self.finish_half();
        let tag = self.writer().1;
        let l = self.line(tag, 7);
        let cut = l.len() / 2;
        self.writer().0.write_all(&l[..cut]).unwrap();
        self.half = Some((tag, l[cut..].to_vec()));
    }

    /// Lines the old writer still writes to its old fd after a rotation.
    fn late(&mut self, old: &mut File, tag: u32, n: usize) {
        for _ in 0..n {
            let l = self.line(tag, 3);
            old.write_all(&l).unwrap();
            self.written.push((tag, self.seq));
        }
    }

    pub fn rotate(&mut self, kind: Kind, late: usize) {
        self.finish_half();
        self.writer();
        self.rot += 1;
        let r = self.rot;
        let log = self.log.clone();
        match kind {
            Kind::RenameCreate | Kind::RenameInGlob | Kind::DeleteCreate => {
                let (mut old, tag) = self.cur.take().unwrap();
                match kind {
                    Kind::RenameCreate => {
                        fs::rename(&log, self.dir.join(format!("app.log.{r}"))).unwrap()
                    }
                    Kind::RenameInGlob => {
                        fs::rename(&log, self.dir.join(format!("app-{r}.log"))).unwrap()
                    }
                    _ => fs::remove_file(&log).unwrap(),
                }
                self.late(&mut old, tag, late);
                self.writer();
            }
            Kind::CopyTruncate => {
                fs::copy(&log, self.dir.join(format!("app.log.{r}"))).unwrap();
                OpenOptions::new()
                    .write(true)
                    .open(&log)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                let (mut f, tag) = self.cur.take().unwrap();
                self.late(&mut f, tag, late);
                self.cur = Some((f, tag));
            }
            Kind::MoveIntoPlace => {
                let staging = self.dir.join("staging.tmp");
                let tag = self.new_tag();
                let mut new = open_append(&staging);
                for _ in 0..3 {
                    let l = self.line(tag, 5);
                    new.write_all(&l).unwrap();
                    self.written.push((tag, self.seq));
                }
                fs::rename(&staging, &log).unwrap();
                let (mut old, old_tag) = self.cur.replace((new, tag)).unwrap();
                self.late(&mut old, old_tag, late);
            }
            Kind::HardLinkSwap => {
                let target = self.dir.join(format!("app.{r}.txt"));
                let tag = self.new_tag();
                let mut new = open_append(&target);
                let l = self.line(tag, 1);
                new.write_all(&l).unwrap();
                self.written.push((tag, self.seq));
                fs::remove_file(&log).unwrap();
                fs::hard_link(&target, &log).unwrap();
                let (mut old, old_tag) = self.cur.replace((new, tag)).unwrap();
                self.late(&mut old, old_tag, late);
            }
            Kind::SymlinkSwap => {
                let target = self.dir.join("data").join(format!("t{r}.txt"));
                let tag = self.new_tag();
                let new = open_append(&target);
                let tmp = self.dir.join("link.tmp");
                std::os::unix::fs::symlink(&target, &tmp).unwrap();
                fs::rename(&tmp, &log).unwrap();
                let (mut old, old_tag) = self.cur.replace((new, tag)).unwrap();
                self.late(&mut old, old_tag, late);
            }
        }
    }

    pub fn truncate(&mut self) {
        self.finish_half();
        self.writer();
        OpenOptions::new()
            .write(true)
            .open(&self.log)
            .unwrap()
            .set_len(0)
            .unwrap();
    }

    pub fn delete(&mut self) {
        self.finish_half();
        if self.cur.take().is_some() {
            fs::remove_file(&self.log).unwrap();
        }
    }

    pub fn apply(&mut self, core: &mut Core, op: &Op) {
        match op {
            Op::Write(n, pad) => self.write(*n, *pad),
            Op::Partial => self.partial(),
            Op::Tick => core.tick(),
            Op::TickData => core.tick_data(),
            Op::Advance(ms) => core.advance(*ms),
            Op::Rotate(kind, late) => {
                // The tailer sees the file (and reads everything in it) before it rotates.
                self.finish_half();
                self.writer();
                core.tick();
                self.rotate(*kind, *late);
            }
            Op::Truncate => {
                // The tailer sees the file (and reads everything in it) before it rotates.
                self.finish_half();
                self.writer();
                core.tick();
                self.truncate();
            }
            Op::Delete => {
                self.finish_half();
                core.tick();
                self.delete();
            }
        }
    }

    pub fn finish(&mut self, core: &mut Core) {
        self.finish_half();
        core.drain();
    }
}

/// Parses `fNNN seq=N …` lines.
pub fn parse(got: &[Vec<u8>]) -> Vec<(u32, u64)> {
    got.iter()
        .map(|b| {
            let s = String::from_utf8_lossy(b);
            let tag = s.get(1..4).and_then(|t| t.parse().ok());
            let seq = s
                .split("seq=")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok());
            match (tag, seq) {
                (Some(t), Some(n)) => (t, n),
                _ => panic!("not a whole line: {s:?}"),
            }
        })
        .collect()
}

/// Every written line read exactly once, in order within each file.
pub fn check_exactly_once(written: &[(u32, u64)], got: &[(u32, u64)]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for g in got {
        if !seen.insert(*g) {
            return Err(format!("duplicate line {g:?}"));
        }
    }
    let want: HashSet<_> = written.iter().copied().collect();
    let missing: Vec<_> = written.iter().filter(|w| !seen.contains(w)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} lines lost, first {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if let Some(extra) = got.iter().find(|g| !want.contains(g)) {
        return Err(format!("line never written: {extra:?}"));
    }
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for (tag, seq) in got {
        if let Some(prev) = last.insert(*tag, *seq) {
            if prev > *seq {
                return Err(format!("file {tag}: seq {seq} after {prev}"));
            }
        }
    }
    Ok(())
}

fn run_script(ops: &[Op]) -> (World, Core) {
    let d = tempfile::tempdir().unwrap();
    let mut w = World::new(d.path());
    let mut core = Core::new(&w.glob(), StartAt::Beginning, Vec::new());
    for op in ops {
        w.apply(&mut core, op);
    }
    w.finish(&mut core);
    let got = parse(&core.got);
    if let Err(e) = check_exactly_once(&w.written, &got) {
        let text = core.text();
        panic!(
            "{e}\nops: {ops:?}\nread (first 50): {:?}",
            &text[..text.len().min(50)]
        );
    }
    assert_eq!(
        core.t.open_files(),
        count_open_expected(&w),
        "fds left open"
    );
    drop(d);
    (w, core)
}

/// After the final drain only files still at a glob path are open.
fn count_open_expected(w: &World) -> usize {
    let mut ids = HashSet::new();
    for e in glob::glob(w.glob().to_str().unwrap()).unwrap().flatten() {
        if let Ok(md) = fs::metadata(&e) {
            ids.insert((md.dev(), md.ino()));
        }
    }
    ids.len()
}

/// A rotation test: a numbered sequence written across two rotations of `kind`, with late
/// writes to the old file, a burst bigger than the old file right after, and ticks between.
fn rotation_kind(kind: Kind) {
    let ops = vec![
        Op::Write(20, 10),
        Op::Tick,
        Op::Write(5, 0),
        Op::Partial,
        Op::Rotate(kind, 3),
        Op::Write(400, 40), // more than the old file held, before the tailer looks
        Op::Tick,
        Op::Write(10, 300),
        Op::TickData,
        Op::Rotate(kind, 0),
        Op::Write(3, 0),
        Op::Advance(600),
        Op::Tick,
        Op::Advance(600),
        Op::Write(7, 2),
        Op::Tick,
        Op::Rotate(kind, 2),
        Op::Write(1, 0),
    ];
    let (w, core) = run_script(&ops);
    assert!(w.written.len() > 440 && core.got.len() == w.written.len());
    let st = core.t.stats();
    let rotations: u64 = st.files.iter().map(|f| f.rotations).sum();
    let truncations: u64 = st.files.iter().map(|f| f.truncations).sum();
    match kind {
        Kind::CopyTruncate => assert_eq!((rotations, truncations), (0, 3), "{st:?}"),
        _ => assert_eq!((rotations, truncations), (3, 0), "{st:?}"),
    }
}

#[test]
fn rename_create() {
    rotation_kind(Kind::RenameCreate);
}

#[test]
fn rename_within_glob_is_followed_not_reread() {
    rotation_kind(Kind::RenameInGlob);
}

#[test]
fn copytruncate() {
    rotation_kind(Kind::CopyTruncate);
}

#[test]
fn delete_recreate() {
    rotation_kind(Kind::DeleteCreate);
}

#[test]
fn move_into_place() {
    rotation_kind(Kind::MoveIntoPlace);
}

#[test]
fn hard_link_swap() {
    rotation_kind(Kind::HardLinkSwap);
}

#[test]
fn symlink_swap() {
    rotation_kind(Kind::SymlinkSwap);
}

#[test]
fn truncation_without_rotation() {
    run_script(&[
        Op::Write(30, 20),
        Op::Truncate,
        Op::Write(2, 0), // shorter than before: size < offset
        Op::Tick,
        Op::Truncate,
        Op::Write(100, 30), // longer than before the tick: caught by the head fingerprint
        Op::Tick,
        Op::Truncate,
        Op::TickData,
        Op::Write(1, 0),
    ]);
}

#[test]
fn rename_then_bigger_burst() {
    run_script(&[
        Op::Write(3, 0),
        Op::Rotate(Kind::RenameCreate, 0),
        Op::Write(5000, 20),
        Op::TickData, // a data hint alone does not rescan: the burst waits for the next scan
        Op::Tick,
    ]);
}

#[test]
fn file_that_does_not_exist_at_start_is_read_from_its_beginning() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("late.log");
    // start_at = end applies only to files present at start-up.
    let mut core = Core::new(&d.path().join("*.log"), StartAt::End, Vec::new());
    core.tick();
    core.advance(5000);
    core.tick();
    append(&log, b"first\nsecond\n");
    core.tick();
    append(&log, b"third\n");
    core.tick_data();
    assert_eq!(core.text(), ["first", "second", "third"]);
}

#[test]
fn start_at_end_skips_history_but_keeps_a_line_being_written() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("a.log");
    fs::write(&log, b"old 1\nold 2\nhalf of ").unwrap();
    let mut core = Core::new(&log, StartAt::End, Vec::new());
    core.tick();
    append(&log, b"a line\nnew\n");
    core.tick();
    assert_eq!(core.text(), ["half of a line", "new"]);
    let mut core = Core::new(&log, StartAt::Beginning, Vec::new());
    core.tick();
    assert_eq!(core.text(), ["old 1", "old 2", "half of a line", "new"]);
}

#[test]
fn vanished_file_is_drained_flushed_and_closed() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("a.log");
    let mut core = Core::new(&d.path().join("*.log"), StartAt::Beginning, Vec::new());
    let mut w = open_append(&log);
    w.write_all(b"one\n").unwrap();
    core.tick();
    fs::remove_file(&log).unwrap();
    w.write_all(b"two\nno newline").unwrap();
    core.tick();
    assert_eq!(core.text(), ["one", "two"]);
    assert_eq!(core.t.open_files(), 1, "still draining");
    core.advance(ROTATE_WAIT_MS);
    core.tick();
    assert_eq!(
        core.text(),
        ["one", "two", "no newline"],
        "partial flushed at close"
    );
    assert_eq!(core.t.open_files(), 0);
    // Closed for real: no fd of this process points at the deleted file any more.
    drop(w);
    let deleted = format!("{} (deleted)", log.display());
    let held = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .any(|t| t.to_string_lossy() == deleted);
    assert!(!held, "{deleted} is still open");
}

#[test]
fn globs_pick_up_many_files_and_labels_come_from_paths() {
    let d = tempfile::tempdir().unwrap();
    for w in ["w1", "w2"] {
        fs::create_dir_all(d.path().join(w)).unwrap();
    }
    let mut core = Core::with(
        &d.path().join("*/*.log"),
        StartAt::Beginning,
        Vec::new(),
        |s| {
            s.labels = vec![
                ("worker".into(), "{dir}".into()),
                ("file".into(), "{stem}".into()),
            ];
        },
    );
    core.tick();
    append(&d.path().join("w1/ingest.log"), b"a\n");
    append(&d.path().join("w2/ingest.log"), b"b\n");
    append(&d.path().join("w2/other.txt"), b"not matched\n");
    let mut out = Vec::new();
    core.t.poll(core.now, true, &mut out);
    let mut got: Vec<(String, String, String)> = out
        .iter()
        .map(|l| {
            (
                String::from_utf8_lossy(&l.bytes).into_owned(),
                l.labels().get("worker").unwrap().to_string(),
                l.labels().get("file").unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("a".into(), "w1".into(), "ingest".into()),
            ("b".into(), "w2".into(), "ingest".into())
        ]
    );
    let dirs = core.t.watch_dirs();
    assert!(
        dirs.contains(d.path()) && dirs.contains(&d.path().join("w1")),
        "{dirs:?}"
    );
}

#[test]
fn open_file_cap_defers_extra_files_without_losing_them() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..5 {
        append(
            &d.path().join(format!("{i}.log")),
            format!("file {i}\n").as_bytes(),
        );
    }
    let mut s = SourceConfig::files(d.path().join("*.log").to_str().unwrap());
    s.start_at = StartAt::Beginning;
    s.rotate_wait = Duration::from_millis(100);
    let cfg = TailerConfig {
        max_open_files: 3,
        ..TailerConfig::default()
    };
    let mut t = Tailer::new(&[s], &cfg, Vec::new()).unwrap();
    let mut out = Vec::new();
    t.poll(Ts(1000), true, &mut out);
    assert_eq!(t.open_files(), 3);
    assert_eq!(out.len(), 3);
    assert!(t.stats().skipped_for_cap >= 2);
    for i in 0..3 {
        fs::remove_file(d.path().join(format!("{i}.log"))).unwrap();
    }
    t.poll(Ts(2000), true, &mut out); // the removed ones drain...
    t.poll(Ts(3000), true, &mut out); // ...close, and the others get their turn
    t.poll(Ts(3000), true, &mut out);
    let mut got: Vec<_> = out
        .iter()
        .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["file 0", "file 1", "file 2", "file 3", "file 4"]);
}

#[test]
fn bad_input_is_read_as_bytes_with_bounded_lines() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("bin.log");
    let mut core = Core::with(&log, StartAt::Beginning, Vec::new(), |s| {
        s.max_line_bytes = 1024
    });
    let mut data = b"nul\x00byte\n\xff\xfe invalid utf8\n".to_vec();
    data.extend(std::iter::repeat_n(b'y', 10 << 20)); // a 10 MB line
    data.extend(b"\nafter\n");
    fs::write(&log, &data).unwrap();
    core.tick();
    assert_eq!(core.got.len(), 4);
    assert_eq!(core.got[0], b"nul\x00byte");
    assert_eq!(core.got[1], b"\xff\xfe invalid utf8");
    assert_eq!(core.got[2].len(), 1024);
    assert_eq!(core.got[3], b"after");
    assert_eq!(core.truncated, 1);
    let st = &core.t.stats().files[0];
    assert_eq!(
        (st.lines, st.truncated_lines, st.bytes),
        (4, 1, data.len() as u64)
    );
    assert!(st.binary, "NUL bytes in the first bytes");
}

#[test]
fn endless_line_without_newline_is_held_bounded_and_not_checkpointed() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("endless.log");
    let mut core = Core::with(&log, StartAt::Beginning, Vec::new(), |s| {
        s.max_line_bytes = 1024
    });
    append(&log, b"before\n");
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..10 {
        append(&log, &chunk); // 10 MB and no newline, read over ten ticks
        core.tick();
    }
    assert_eq!(core.text(), ["before"]);
    // The checkpoint stays before the unfinished line: a restart reads it again, whole.
    let cps = core.t.checkpoints();
    assert_eq!(cps[0].offset, 7);
    assert_eq!(core.t.stats().files[0].bytes, 7 + 10 * (1 << 20));
    assert!(!core.t.stats().files[0].binary);
    append(&log, b"\nafter\n");
    core.tick();
    let want = ["before".to_string(), "z".repeat(1024), "after".to_string()];
    assert_eq!(core.text(), want);
    assert_eq!(core.truncated, 1);
    // A restart from that checkpoint yields the same line, cut the same way.
    let mut again = Core::with(&log, StartAt::Beginning, cps, |s| s.max_line_bytes = 1024);
    again.tick();
    assert_eq!(again.text(), want[1..]);
    assert_eq!(again.truncated, 1);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

#[test]
fn checkpoint_resumes_exactly_including_a_partial_line() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("a.log");
    fs::write(&log, b"1\n2\nthr").unwrap();
    let mut core = Core::new(&log, StartAt::Beginning, Vec::new());
    core.tick();
    assert_eq!(core.text(), ["1", "2"]);
    let cps = core.t.checkpoints();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].offset, 4, "offset after the last complete line");
    drop(core);
    append(&log, b"ee\n4\n");
    let mut core = Core::new(&log, StartAt::End, cps);
    core.tick();
    assert_eq!(core.text(), ["three", "4"]);
}

#[test]
fn inode_reuse_with_different_content_reads_from_start() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("a.log");
    fs::write(&log, b"the new file's content\nsecond\n").unwrap();
    let md = fs::metadata(&log).unwrap();
    // A checkpoint of an older file that had this very (dev, inode), far into it.
    let stale = Checkpoint {
        source: log.to_str().unwrap().into(),
        path: log.to_str().unwrap().into(),
        dev: md.dev(),
        inode: md.ino(),
        fingerprint: Fingerprint {
            len: 20,
            hash: 0x1234,
        },
        offset: 23,
    };
    let mut core = Core::new(&log, StartAt::End, vec![stale.clone()]);
    core.tick();
    assert_eq!(core.text(), ["the new file's content", "second"]);

    // Same inode and head, but shorter than the checkpoint: truncated while stopped.
    let good = Fingerprint::of(&File::open(&log).unwrap(), md.len()).unwrap();
    let past_end = Checkpoint {
        fingerprint: good,
        offset: 10_000,
        ..stale
    };
    let mut core = Core::new(&log, StartAt::End, vec![past_end]);
    core.tick();
    assert_eq!(core.text(), ["the new file's content", "second"]);
}

#[test]
fn rotation_while_stopped_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("app.log");
    let glob = d.path().join("*.log");
    let mut w = open_append(&log);
    w.write_all(b"a1\na2\n").unwrap();
    let mut core = Core::new(&glob, StartAt::End, Vec::new());
    core.tick();
    w.write_all(b"a3\n").unwrap();
    core.tick();
    let cps = core.t.checkpoints();
    drop(core); // "killed" here
    w.write_all(b"a4\n").unwrap();
    fs::rename(&log, d.path().join("app.log.1")).unwrap();
    w.write_all(b"a5\n").unwrap();
    append(&log, b"b1\n");
    let mut core = Core::new(&glob, StartAt::End, cps);
    core.tick();
    core.advance(ROTATE_WAIT_MS);
    core.tick();
    assert_eq!(core.text(), ["a4", "a5", "b1"]);
    assert_eq!(core.t.open_files(), 1);
}

#[test]
fn start_at_applies_only_without_a_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a.log"), d.path().join("b.log"));
    fs::write(&a, b"a1\n").unwrap();
    let mut core = Core::new(&d.path().join("*.log"), StartAt::Beginning, Vec::new());
    core.tick();
    let cps = core.t.checkpoints();
    append(&a, b"a2\n");
    fs::write(&b, b"b1\n").unwrap();
    let mut core = Core::new(&d.path().join("*.log"), StartAt::End, cps);
    core.tick();
    append(&b, b"b2\n");
    core.tick();
    assert_eq!(core.text(), ["a2", "b2"]);
}

// ---------------------------------------------------------------------------------------------
// The model test

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::RenameCreate),
        Just(Kind::RenameInGlob),
        Just(Kind::CopyTruncate),
        Just(Kind::DeleteCreate),
        Just(Kind::MoveIntoPlace),
        Just(Kind::HardLinkSwap),
        Just(Kind::SymlinkSwap),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..40, prop_oneof![0usize..20, 200usize..400]).prop_map(|(n, p)| Op::Write(n, p)),
        2 => Just(Op::Partial),
        4 => Just(Op::Tick),
        2 => Just(Op::TickData),
        2 => (0u64..1500).prop_map(Op::Advance),
        3 => (kind(), 0usize..4).prop_map(|(k, l)| Op::Rotate(k, l)),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    /// Random writes, partial writes, rotations of every kind, truncations, deletions and
    /// ticks: every completely written line is read exactly once, in order per file.
    #[test]
    fn model_every_complete_line_exactly_once(ops in proptest::collection::vec(op(), 1..60)) {
        let d = tempfile::tempdir().unwrap();
        let mut w = World::new(d.path());
        let mut core = Core::new(&w.glob(), StartAt::Beginning, Vec::new());
        for op in &ops {
            w.apply(&mut core, op);
        }
        w.finish(&mut core);
        let got = parse(&core.got);
        prop_assert!(check_exactly_once(&w.written, &got).is_ok(), "{:?}", check_exactly_once(&w.written, &got));
        prop_assert_eq!(core.t.open_files(), count_open_expected(&w));
    }
}

// ---------------------------------------------------------------------------------------------
// Real logrotate

fn run_logrotate(bin: &Path, conf: &Path, state: &Path) {
    let out = Command::new(bin)
        .arg("-f")
        .arg("-s")
        .arg(state)
        .arg(conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A writer thread appends numbered lines (reopening the path for every line, like
/// WatchedFileHandler) and runs `logrotate -f` every `every` lines, each time waiting until
/// the tailer has scanned at least once since the previous rotation; the test thread ticks.
fn logrotate_scenario(directive: &str) {
    let bin = crate::common::logrotate();
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("app.log");
    fs::write(&log, b"").unwrap();
    let (conf, state) = crate::common::logrotate_conf(
        d.path(),
        &log,
        &[directive, "rotate 50", "missingok", "nocompress"],
    );
    let ticks = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    const N: u64 = 3000;
    let writer = {
        let (log, ticks, done) = (log.clone(), ticks.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last_rotation_tick = 0;
            for i in 1..=N {
                append(&log, format!("f001 seq={i} logrotate\n").as_bytes());
                if i % 300 == 0 {
                    // The tailer must have looked at the current file at least once (and, for
                    // copytruncate, read it: without this the copy/truncate race loses lines,
                    // which `copytruncate_race_is_measured` measures).
                    let t0 = ticks.load(Ordering::SeqCst);
                    while ticks.load(Ordering::SeqCst) < (t0 + 2).max(last_rotation_tick + 2) {
                        std::thread::yield_now();
                    }
                    run_logrotate(&bin, &conf, &state);
                    last_rotation_tick = ticks.load(Ordering::SeqCst);
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut core = Core::new(&log, StartAt::Beginning, Vec::new());
    while !done.load(Ordering::SeqCst) {
        core.tick();
        ticks.fetch_add(1, Ordering::SeqCst);
        core.advance(1);
        std::thread::sleep(Duration::from_micros(200)); // pacing only
    }
    writer.join().unwrap();
    core.drain();
    let written: Vec<(u32, u64)> = (1..=N).map(|i| (1, i)).collect();
    let got = parse(&core.got);
    if let Err(e) = check_exactly_once(&written, &got) {
        panic!("{directive}: {e}");
    }
    let rotated = fs::read_dir(d.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("app.log.")
        })
        .count();
    assert_eq!(rotated, 10, "logrotate rotated ten times");
}

#[test]
fn real_logrotate_create() {
    logrotate_scenario("create");
}

#[test]
fn real_logrotate_copytruncate() {
    // Writes between rotations are quiescent relative to the tailer's reads (see the writer),
    // so even copytruncate must be exact here.
    logrotate_scenario("copytruncate");
}

// ---------------------------------------------------------------------------------------------
// Real Python logging handlers

/// Python's `RotatingFileHandler` (rename chain app.log → app.log.1 → …, then reopen) or
/// `WatchedFileHandler` (someone else renames; the handler reopens when the inode changes),
/// writing while the tailer ticks. Glob `app.log*`, so rotated files are followed by inode.
fn python_handler(handler: &str) {
    // Every machine this project runs on has CPython; a missing one is a failure, not a skip.
    let python = which_python().expect("python3 is needed for the Python logging handler tests");
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("app.log");
    const N: u64 = 3000;
    let script = format!(
        r#"
import logging, logging.handlers, os, sys
log = {log:?}
if "{handler}" == "rotating":
    h = logging.handlers.RotatingFileHandler(log, maxBytes=4000, backupCount=1000)
else:
    h = logging.handlers.WatchedFileHandler(log)
h.setFormatter(logging.Formatter("%(message)s"))
l = logging.getLogger("t"); l.addHandler(h); l.setLevel(logging.INFO)
for i in range(1, {N} + 1):
    l.info("f001 seq=%d python", i)
    if "{handler}" == "watched" and i % 250 == 0:
        os.rename(log, log + ".%d" % i)
"#,
        log = log.to_str().unwrap()
    );
    let mut child = Command::new(python).arg("-c").arg(&script).spawn().unwrap();
    let mut core = Core::new(&d.path().join("app.log*"), StartAt::Beginning, Vec::new());
    loop {
        core.tick();
        core.advance(1);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(300)); // pacing only
    }
    assert!(child.wait().unwrap().success());
    core.drain();
    let written: Vec<(u32, u64)> = (1..=N).map(|i| (1, i)).collect();
    if let Err(e) = check_exactly_once(&written, &parse(&core.got)) {
        panic!("{handler}: {e}");
    }
}

fn which_python() -> Result<PathBuf, ()> {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sys; print(sys.executable)")
        .output()
        .map_err(|_| ())?;
    if !out.status.success() {
        return Err(());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[test]
fn python_rotating_file_handler() {
    python_handler("rotating");
}

#[test]
fn python_watched_file_handler() {
    python_handler("watched");
}
