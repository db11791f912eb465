//! The outbox journal: a write-ahead log of the messages handed to the receivers' outboxes, so
//! a message that sits in an outbox when the daemon is killed is delivered after the restart
//! instead of being lost (the notification state may already say its alert was announced).
//!
//! `state_dir/outbox.jsonl`, one JSON record per line, appended:
//!
//! ```text
//! {"op":"queued","id":"1795428000123-7","message":{…}}   entered an outbox
//! {"op":"done","id":"1795428000123-7","outcome":"sent"}  left it: sent | failed | coalesced
//! ```
//!
//! A later `queued` record for an id replaces the earlier one: when a message is merged into
//! one already queued for the same group, the queued one is written again with the merged
//! content and the merged message is recorded `done` as `coalesced` (with `into`). Ids are
//! `<start-up ms>-<sequence>`, unique across restarts without a counter on disk; they go to
//! HTTP receivers as `X-Logwarden-Message-Id`, so a receiver can drop the one duplicate a crash
//! may cause.
//!
//! **Durability.** Every record is one `write(2)` as it happens, so it survives a SIGKILL (the
//! kernel has it). `fdatasync` is group-committed: [`Journal::commit`] runs after each
//! dispatch that queued messages and *before* the notification state, which may mark their
//! alerts announced, is saved; so after a power loss too, a message whose alert the state file
//! calls announced is in the journal. `done` records are not synced on their own (the next
//! commit syncs them): losing one to a power cut re-sends a message, never loses one.
//!
//! **Delivery is at least once.** A message queued and not done is re-queued at start-up
//! (before any new message). A duplicate happens only when the daemon dies between the
//! receiver's 2xx and the `done` write: at most one message per receiver per crash, since a
//! worker sends one message at a time.
//!
//! **Failure degrades.** A journal that cannot be written (read-only `state_dir`, a full disk,
//! a file-size limit) is logged once per episode and counted; messages are then delivered
//! from memory as before the journal existed. Nothing here awaits or panics. A partial write
//! is cut back, so later records start on a line of their own.
//!
//! **Compaction** rewrites the file with the live `queued` records (tmp + fsync + rename) at
//! start-up and when the file passes [`COMPACT_BYTES`] and is mostly done records.
//!
//! The stored messages carry log evidence, redacted as it would be when sent (never a
//! webhook URL or a password: receivers are referred to by name).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::notify::core::{Body, Message};
use crate::notify::format::redact;

/// File name under `state_dir`.
pub const FILE: &str = "outbox.jsonl";

/// The journal is compacted once it is larger than this and over half of it is records of
/// messages already done.
pub const COMPACT_BYTES: u64 = 1 << 20;

/// How a message left its outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Done {
    /// The receiver accepted it.
    Sent,
    /// Given up (retries exhausted, refused, outbox full, receiver gone).
    Failed,
    /// Merged into another queued message (`into`).
    Coalesced,
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum RecordOut<'a> {
    Queued {
        id: &'a str,
        message: &'a Message,
    },
    Done {
        id: &'a str,
        outcome: Done,
        #[serde(skip_serializing_if = "Option::is_none")]
        into: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    },
}

#[derive(Deserialize)]
struct RecordIn {
    op: String,
    id: String,
    #[serde(default)]
    message: Option<serde_json::Value>,
}

/// A message queued and not done, read back from the journal.
#[derive(Debug)]
pub struct Pending {
    /// Its id.
    pub id: String,
    /// The message, or why it cannot be read back (a corrupt record, a newer format).
    pub message: Result<Message, Unreadable>,
    /// The record's line, without the newline.
    line: String,
}

/// A queued record whose message does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The receiver name, when the record still shows it.
    pub receiver: String,
    /// The group, when the record still shows it.
    pub group: String,
    /// The parse error.
    pub error: String,
}

/// What a journal file holds.
#[derive(Debug, Default)]
pub struct Replay {
    /// Queued and not done, in the order they were first queued.
    pub pending: Vec<Pending>,
    /// Records read.
    pub records: usize,
    /// The last line was cut short (a crash or a failed write): ignored.
    pub torn_tail: bool,
    /// Lines before the last that do not parse: the file is corrupt.
    pub corrupt_lines: usize,
}

/// Reads journal bytes: the messages still pending. Pure; tolerates anything.
pub fn replay(bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    // id → (index into `order`, line)
    let mut live: HashMap<String, (usize, String, Option<serde_json::Value>)> = HashMap::new();
    let mut next = 0usize;
    let mut lines = bytes.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let rec = std::str::from_utf8(line)
            .ok()
            .and_then(|s| serde_json::from_str::<RecordIn>(s).ok().map(|r| (s, r)));
        let Some((text, rec)) = rec else {
            if last {
                out.torn_tail = true;
            } else {
                out.corrupt_lines += 1;
            }
            continue;
        };
        out.records += 1;
        match rec.op.as_str() {
            "queued" => match live.get_mut(&rec.id) {
                Some(e) => {
                    e.1 = text.to_string();
                    e.2 = rec.message;
                }
                None => {
                    live.insert(rec.id, (next, text.to_string(), rec.message));
                    next += 1;
                }
            },
            "done" => {
                live.remove(&rec.id);
            }
            // An op from a newer version: nothing to do with it.
            _ => {}
        }
    }
    let mut pending: Vec<(usize, Pending)> = live
        .into_iter()
        .map(|(id, (i, line, msg))| {
            let message = decode(msg);
            (i, Pending { id, message, line })
        })
        .collect();
    pending.sort_by_key(|(i, _)| *i);
    out.pending = pending.into_iter().map(|(_, p)| p).collect();
    out
}

fn decode(msg: Option<serde_json::Value>) -> Result<Message, Unreadable> {
    let v = msg.unwrap_or(serde_json::Value::Null);
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let (receiver, group) = (field("receiver_name"), field("group"));
    serde_json::from_value::<Message>(v).map_err(|e| Unreadable {
        receiver,
        group,
        error: e.to_string(),
    })
}

/// Reads the journal in `dir` without changing anything (for `logwarden history`). A missing
/// file is empty.
pub fn read(dir: &Path) -> std::io::Result<Replay> {
    match std::fs::read(dir.join(FILE)) {
        Ok(b) => Ok(replay(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Replay::default()),
        Err(e) => Err(e),
    }
}

/// What the journal did, for measurement and `/status`-like reporting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JournalStats {
    /// Records appended.
    pub records: u64,
    /// Bytes appended.
    pub bytes: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Time spent in them.
    pub sync_time: Duration,
    /// Failed writes, syncs and compactions.
    pub errors: u64,
    /// Compactions done.
    pub compactions: u64,
}

/// The journal of one daemon run: appends records, group-commits, compacts. Shared by the
/// notify task (queued, commit) and the workers (done) behind one lock; I/O under it is one
/// short write per record (and, rarely, a compaction). The fdatasync runs outside it, so a
/// worker recording an outcome never waits for the disk.
pub struct Journal {
    inner: Mutex<Inner>,
    boot: u64,
    seq: AtomicU64,
    redact: Vec<regex::Regex>,
}

struct Inner {
    /// `None`: no `state_dir`, nothing is written (ids are still handed out).
    path: Option<PathBuf>,
    file: Option<Arc<File>>,
    /// Bytes in the file, as far as we wrote them.
    len: u64,
    /// The file may end inside a line: the next record starts with a newline.
    torn: bool,
    /// Live queued records: id → (order, line).
    live: HashMap<String, (u64, String)>,
    live_bytes: u64,
    order: u64,
    /// Queued records written since the last fdatasync.
    unsynced: bool,
    /// In a failure episode (logged once when it starts, once when it ends).
    failing: bool,
    /// Compact when the file is at least this long.
    compact_at: u64,
    stats: JournalStats,
}

impl Journal {
    /// A journal that writes nothing (no `state_dir`): it only hands out ids.
    pub fn disabled(boot_ms: u64) -> Journal {
        Journal::with(None, boot_ms, Vec::new())
    }

    fn with(path: Option<PathBuf>, boot_ms: u64, redact: Vec<regex::Regex>) -> Journal {
        Journal {
            inner: Mutex::new(Inner {
                path,
                file: None,
                len: 0,
                torn: false,
                live: HashMap::new(),
                live_bytes: 0,
                order: 0,
                unsynced: false,
                failing: false,
                compact_at: COMPACT_BYTES,
                stats: JournalStats::default(),
            }),
            boot: boot_ms,
            seq: AtomicU64::new(0),
            redact,
        }
    }

    /// Opens the journal in `dir` and returns the messages it holds that were queued and not
    /// done. A corrupt file (a bad line before the last) is renamed aside with a warning; what
    /// parsed in it is still returned. `redact` is applied to stored evidence and summaries.
    /// Call [`Journal::compact`] once the pending messages are re-queued.
    pub fn open(dir: &Path, boot_ms: u64, redact: Vec<regex::Regex>) -> (Journal, Vec<Pending>) {
        let path = dir.join(FILE);
        let j = Journal::with(Some(path.clone()), boot_ms, redact);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                let mut inner = j.lock();
                inner.fail(&e, "cannot read the outbox journal");
                // Unread, so never compacted away: it may hold messages.
                inner.compact_at = u64::MAX;
                drop(inner);
                return (j, Vec::new());
            }
        };
        let r = replay(&bytes);
        if r.corrupt_lines > 0 {
            let aside = path.with_extension(format!("jsonl.corrupt-{}", std::process::id()));
            let moved = std::fs::rename(&path, &aside);
            tracing::warn!(file = %path.display(), bad_lines = r.corrupt_lines, records = r.records,
                pending = r.pending.len(), set_aside = %aside.display(), moved = moved.is_ok(),
                "outbox journal is corrupt; set aside, re-queueing what could be read");
        } else if r.torn_tail {
            tracing::info!(file = %path.display(), "outbox journal ends in a cut-off record (a crash while writing); ignored");
        }
        {
            let mut inner = j.lock();
            inner.len = bytes.len() as u64;
            inner.torn = !bytes.is_empty() && !bytes.ends_with(b"\n");
            for p in &r.pending {
                inner.add_live(&p.id, format!("{}\n", p.line));
            }
        }
        (j, r.pending)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("journal lock")
    }

    /// A new message id, unique across restarts: `<start-up ms>-<n>`.
    pub fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.boot,
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// Records that `m` entered an outbox as `id` (or, for an id already queued, that its
    /// content is now `m`). Durable against a crash at once, against power loss at the next
    /// [`Journal::commit`].
    pub fn queued(&self, id: &str, m: &Message) {
        if self.lock().path.is_none() {
            return;
        }
        let m = self.redacted(m);
        let rec = RecordOut::Queued { id, message: &m };
        let line = match serde_json::to_string(&rec) {
            Ok(l) => l + "\n",
            Err(e) => {
                // Messages are plain data; this is not expected. Deliver from memory.
                tracing::error!(error = %e, "cannot encode a message for the outbox journal");
                return;
            }
        };
        let mut inner = self.lock();
        inner.add_live(id, line.clone());
        inner.unsynced = true;
        inner.append(&line);
    }

    /// Records that `id` left its outbox.
    pub fn done(&self, id: &str, outcome: Done, into: Option<&str>, error: Option<&str>) {
        let mut inner = self.lock();
        if inner.path.is_none() {
            return;
        }
        if let Some((_, l)) = inner.live.remove(id) {
            inner.live_bytes -= l.len() as u64;
        }
        let rec = RecordOut::Done {
            id,
            outcome,
            into,
            error,
        };
        let line = serde_json::to_string(&rec).expect("a done record encodes") + "\n";
        inner.append(&line);
    }

    /// Makes the queued records written so far durable (fdatasync; nothing when none were
    /// written since the last commit), then compacts when the file has grown. Call it before
    /// saving the notification state.
    pub fn commit(&self) {
        let file = {
            let mut inner = self.lock();
            std::mem::take(&mut inner.unsynced)
                .then(|| inner.file.clone())
                .flatten()
        };
        // Records appended meanwhile are synced too, or by the next commit. A compaction
        // meanwhile syncs its own file; syncing the replaced one is then merely redundant.
        let synced = file.map(|f| {
            let t = Instant::now();
            (f.sync_data(), t.elapsed())
        });
        let mut inner = self.lock();
        if let Some((res, took)) = synced {
            inner.stats.syncs += 1;
            inner.stats.sync_time += took;
            if let Err(e) = res {
                inner.fail(&e, "cannot write the outbox journal");
            }
        }
        if inner.len >= inner.compact_at && inner.len > 2 * inner.live_bytes {
            inner.compact();
        }
    }

    /// Rewrites the file with only the live queued records (start-up; see the module doc).
    pub fn compact(&self) {
        let mut inner = self.lock();
        let exists = inner.path.as_deref().is_some_and(Path::exists);
        // After a corrupt file was set aside there is no file, but records to keep.
        if (exists || !inner.live.is_empty()) && inner.compact_at != u64::MAX {
            inner.compact();
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JournalStats {
        self.lock().stats.clone()
    }

    /// Logs the counters (debug): called when the notify task ends.
    pub fn report(&self) {
        let st = self.stats();
        if st.records > 0 {
            tracing::debug!(
                records = st.records,
                bytes = st.bytes,
                syncs = st.syncs,
                sync_us = st.sync_time.as_micros() as u64,
                errors = st.errors,
                compactions = st.compactions,
                "outbox journal"
            );
        }
    }

    /// True when queued records reach the file: a message left queued at shutdown is then
    /// delivered after the next start (no `state_dir`, or a failure episode: it would be lost).
    pub fn durable(&self) -> bool {
        let inner = self.lock();
        inner.path.is_some() && !inner.failing
    }

    /// Ids queued and not done, oldest first.
    pub fn live(&self) -> Vec<String> {
        let inner = self.lock();
        let mut v: Vec<(&u64, &String)> = inner.live.iter().map(|(id, (o, _))| (o, id)).collect();
        v.sort();
        v.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// `m` with evidence and summaries redacted as rendering would (the journal never holds
    /// more than a receiver gets).
    fn redacted<'a>(&self, m: &'a Message) -> std::borrow::Cow<'a, Message> {
        let Body::Alerts { items } = &m.body else {
            return std::borrow::Cow::Borrowed(m);
        };
        if self.redact.is_empty() || items.is_empty() {
            return std::borrow::Cow::Borrowed(m);
        }
        let mut m = m.clone();
        if let Body::Alerts { items } = &mut m.body {
            for i in items {
                for l in &mut i.alert.evidence {
                    *l = redact(l, &self.redact);
                }
                if let Some(s) = &mut i.alert.summary {
                    *s = redact(s, &self.redact);
                }
            }
        }
        std::borrow::Cow::Owned(m)
    }
}

/// Opens `path` for appending (and reading its last byte), private to the daemon's user: it
/// holds log text.
fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

impl Inner {
    fn add_live(&mut self, id: &str, line: String) {
        self.live_bytes += line.len() as u64;
        match self.live.get_mut(id) {
            Some(e) => {
                self.live_bytes -= e.1.len() as u64;
                e.1 = line;
            }
            None => {
                self.order += 1;
                self.live.insert(id.to_string(), (self.order, line));
            }
        }
    }

    /// Appends one record; a failure starts (or continues) an episode and the record is lost.
    fn append(&mut self, line: &str) {
        let Some(path) = self.path.clone() else {
            return;
        };
        match self.try_append(&path, line) {
            Ok(()) => {
                self.stats.records += 1;
                self.stats.bytes += line.len() as u64;
                if std::mem::take(&mut self.failing) {
                    tracing::info!(file = %path.display(), "the outbox journal is written again");
                }
            }
            Err(e) => {
                // Cut a partial record back off, so the next one starts on its own line.
                let cut = self.file.as_ref().map(|f| f.set_len(self.len));
                if !matches!(cut, Some(Ok(()))) {
                    self.torn = true;
                    self.file = None; // reopen (and re-measure) next time
                }
                self.fail(&e, "cannot write the outbox journal");
            }
        }
    }

    fn try_append(&mut self, path: &Path, line: &str) -> std::io::Result<()> {
        if self.file.is_none() {
            let f = open_append(path)?;
            self.len = f.metadata()?.len();
            if self.len > 0 {
                let mut last = [0u8];
                f.read_exact_at(&mut last, self.len - 1)?;
                self.torn = last[0] != b'\n';
            }
            self.file = Some(Arc::new(f));
        }
        let mut f: &File = self.file.as_deref().expect("opened above");
        if self.torn {
            f.write_all(b"\n")?;
            self.len += 1;
            self.torn = false;
        }
        f.write_all(line.as_bytes())?;
        self.len += line.len() as u64;
        Ok(())
    }

    fn fail(&mut self, e: &std::io::Error, what: &str) {
        self.stats.errors += 1;
        if !self.failing {
            self.failing = true;
            let file = self.path.as_deref().unwrap_or(Path::new("")).display();
            tracing::warn!(file = %file, error = %e, "{what}; notifications are delivered from memory until it works again");
        }
    }

    /// tmp + fsync + rename + directory fsync; then appends go to the new file.
    fn compact(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut live: Vec<&(u64, String)> = self.live.values().collect();
        live.sort_by_key(|(o, _)| *o);
        let tmp = path.with_extension("jsonl.tmp");
        let res = (|| -> std::io::Result<File> {
            let _ = std::fs::remove_file(&tmp); // a stale one from a crash; absence is fine
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut buf = Vec::with_capacity(self.live_bytes as usize);
            for (_, l) in &live {
                buf.extend_from_slice(l.as_bytes());
            }
            f.write_all(&buf)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                // The rename is durable once the directory is; a failure here only weakens
                // that, so it is not an error.
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(f)
        })();
        match res {
            Ok(f) => {
                self.file = Some(Arc::new(f));
                self.len = self.live_bytes;
                self.torn = false;
                self.unsynced = false;
                self.stats.compactions += 1;
                self.compact_at = COMPACT_BYTES.max(4 * self.live_bytes);
            }
            Err(e) => {
                // Best effort: a tmp file left in a full directory is removed.
                let _ = std::fs::remove_file(&tmp);
                // Keep appending to the old file; try again once it has doubled.
                self.compact_at = self.len.saturating_mul(2).max(COMPACT_BYTES);
                self.fail(&e, "cannot compact the outbox journal");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Ts;
    use crate::notify::testing;

    use crate::rules::{Alert, AlertState, Severity};

    fn msg(marker: &str, evidence: &str) -> Message {
        let alert = Alert {
            threshold: 0.0,
            window_secs: Some(60),
            summary: Some("errors on {{ worker }}".into()),
            evidence: vec![evidence.into()],
            context: vec!["error 3 in 5m".into()],
            ..testing::alert(
                "errors",
                AlertState::Firing,
                Severity::Critical,
                &[("marker", marker)],
                Ts(1_795_428_000_123),
            )
        };
        testing::message(&format!("{{marker=\"{marker}\"}}"), alert)
    }

    fn res() -> Vec<regex::Regex> {
        testing::redactions()
    }

    fn ids(p: &[Pending]) -> Vec<&str> {
        p.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn a_message_reads_back_as_written() {
        let m = msg("m1", "boom");
        let back: Message = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let d = Message {
            body: Body::Digest {
                held: 3,
                since: Ts(5),
                lines: vec!["x".into()],
            },
            ..m.clone()
        };
        let back: Message = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn appended_records_replay_to_what_is_not_done() {
        let dir = tempfile::tempdir().unwrap();
        let (j, pending) = Journal::open(dir.path(), 1000, Vec::new());
        assert!(pending.is_empty());
        let (a, b, c) = (j.next_id(), j.next_id(), j.next_id());
        assert_eq!((a.as_str(), b.as_str()), ("1000-1", "1000-2"));
        j.queued(&a, &msg("a", "x"));
        j.queued(&b, &msg("b", "x"));
        j.queued(&c, &msg("c", "x"));
        j.done(&b, Done::Sent, None, None);
        j.commit();
        assert_eq!(j.live(), [a.clone(), c.clone()]);
        let st = j.stats();
        assert_eq!((st.records, st.syncs), (4, 1));
        drop(j);

        let (j2, pending) = Journal::open(dir.path(), 2000, Vec::new());
        assert_eq!(ids(&pending), [a.as_str(), c.as_str()], "queue order kept");
        assert_eq!(pending[0].message.as_ref().unwrap(), &msg("a", "x"));
        assert_eq!(j2.next_id(), "2000-1", "a new run's ids cannot collide");
    }

    #[test]
    fn a_later_queued_record_replaces_and_coalesced_is_done() {
        let (a, b) = ("1-1", "1-2");
        let rec = |r: RecordOut<'_>| serde_json::to_string(&r).unwrap() + "\n";
        let (m1, m2) = (msg("g", "first"), msg("g", "merged"));
        let text = [
            rec(RecordOut::Queued {
                id: a,
                message: &m1,
            }),
            rec(RecordOut::Queued {
                id: a,
                message: &m2,
            }),
            rec(RecordOut::Done {
                id: b,
                outcome: Done::Coalesced,
                into: Some(a),
                error: None,
            }),
        ]
        .concat();
        let r = replay(text.as_bytes());
        assert_eq!(ids(&r.pending), [a]);
        assert_eq!(r.pending[0].message.as_ref().unwrap(), &m2);
        assert_eq!((r.records, r.torn_tail, r.corrupt_lines), (3, false, 0));
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let m = msg("a", "x");
        let full = serde_json::to_string(&RecordOut::Queued {
            id: "1-1",
            message: &m,
        })
        .unwrap();
        let torn = format!("{full}\n{}", &full[..full.len() / 2]);
        let r = replay(torn.as_bytes());
        assert_eq!(ids(&r.pending), ["1-1"]);
        assert!(r.torn_tail);
        assert_eq!(r.corrupt_lines, 0);
        // No newline after a complete record: still a record.
        let r = replay(full.as_bytes());
        assert_eq!((ids(&r.pending), r.torn_tail), (vec!["1-1"], false));
        assert!(replay(b"").pending.is_empty());
        assert!(replay(b"\n\n").pending.is_empty());
    }

    #[test]
    fn an_unreadable_message_is_pending_with_its_receiver_name() {
        let text =
            r#"{"op":"queued","id":"1-1","message":{"receiver_name":"mail","group":"g","body":7}}"#;
        let r = replay(text.as_bytes());
        let u = r.pending[0].message.as_ref().unwrap_err();
        assert_eq!((u.receiver.as_str(), u.group.as_str()), ("mail", "g"));
        assert!(!u.error.is_empty());
        // Unknown ops (a newer version's) are skipped, not corrupt.
        let r = replay(br#"{"op":"checkpoint","id":"x"}"#);
        assert_eq!((r.records, r.corrupt_lines), (1, 0));
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_what_parsed_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let m = msg("a", "x");
        let good = serde_json::to_string(&RecordOut::Queued {
            id: "1-1",
            message: &m,
        })
        .unwrap();
        std::fs::write(dir.path().join(FILE), format!("\x00\x01garbage\n{good}\n")).unwrap();
        let (j, pending) = Journal::open(dir.path(), 5, Vec::new());
        assert_eq!(ids(&pending), ["1-1"]);
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("corrupt"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        // Compaction writes the recovered record into a fresh journal.
        j.compact();
        let r = read(dir.path()).unwrap();
        assert_eq!((ids(&r.pending), r.corrupt_lines), (vec!["1-1"], 0));
    }

    #[test]
    fn compaction_keeps_only_live_records_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 1, Vec::new());
        let mut keep = Vec::new();
        for i in 0..400 {
            let id = j.next_id();
            j.queued(&id, &msg(&format!("m{i}"), &"e".repeat(2500)));
            if i % 100 == 0 {
                keep.push(id);
            } else {
                j.done(&id, Done::Sent, None, None);
            }
        }
        let before = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(before > COMPACT_BYTES, "{before}");
        j.commit();
        let after = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(after < before / 10, "{before} → {after}");
        assert_eq!(j.stats().compactions, 1);
        let id = j.next_id();
        j.queued(&id, &msg("late", "x"));
        keep.push(id);
        let r = read(dir.path()).unwrap();
        assert_eq!(
            ids(&r.pending),
            keep.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(!dir.path().join("outbox.jsonl.tmp").exists());
    }

    #[test]
    fn stored_evidence_is_redacted_and_the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 1, res());
        let id = j.next_id();
        j.queued(&id, &msg("a", "login failed password=hunter2 user=bob"));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("password=[REDACTED]"), "{text}");
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn after_a_torn_write_the_next_record_starts_on_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 1, Vec::new());
        j.queued("1-1", &msg("a", "x"));
        // A partial record, as a write cut short by a full disk would leave.
        {
            let mut inner = j.lock();
            let mut f: &File = inner.file.as_deref().unwrap();
            f.write_all(b"{\"op\":\"queued\",\"id\":\"1-2\",\"mess")
                .unwrap();
            inner.torn = true;
        }
        j.queued("1-3", &msg("c", "x"));
        let r = read(dir.path()).unwrap();
        assert_eq!(ids(&r.pending), ["1-1", "1-3"]);
        assert_eq!(r.corrupt_lines, 1, "the fragment is its own line");
    }

    #[test]
    fn an_unwritable_directory_is_one_episode_and_ids_still_flow() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not-a-dir");
        std::fs::write(&missing, "a file where the state directory should be").unwrap();
        let (j, pending) = Journal::open(&missing, 1, Vec::new());
        assert!(pending.is_empty());
        for _ in 0..3 {
            let id = j.next_id();
            j.queued(&id, &msg("a", "x"));
            j.commit();
            j.done(&id, Done::Sent, None, None);
        }
        let st = j.stats();
        assert_eq!(st.records, 0);
        assert_eq!(st.errors, 7, "the read and every write, counted");
        assert!(j.lock().failing);
    }

    #[test]
    fn without_a_state_dir_nothing_is_written() {
        let j = Journal::disabled(7);
        let id = j.next_id();
        j.queued(&id, &msg("a", "x"));
        j.done(&id, Done::Sent, None, None);
        j.commit();
        assert_eq!(j.stats(), JournalStats::default());
        assert_eq!(id, "7-1");
    }
}
