//! Delivery: the per-receiver rate gate (governor, on our own clock so replay and tests run
//! it with simulated time), the outbox that coalesces while a receiver is slow, the history
//! of what was sent, held or failed, and the senders with deadlines and retries.

use std::collections::VecDeque;
use std::io::Write;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock as GovClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::InMemoryState;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::event::Ts;
use crate::notify::config::{Format, ReceiverConfig, ReceiverKind, Tls, WebhookMode};
use crate::notify::core::{Body, Item, Message};
use crate::notify::format::{self, Render};
use crate::notify::journal::{Done, Journal};

// ---------------------------------------------------------------------------------------------
// Rate gate

/// A governor clock that reads a time we set: the daemon's clock, or replay's log time.
#[derive(Debug, Clone, Default)]
pub struct TsClock(Arc<AtomicU64>);

impl TsClock {
    fn set(&self, t: Ts) {
        self.0
            .store(t.0.saturating_mul(1_000_000), Ordering::Relaxed);
    }
}

impl GovClock for TsClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.0.load(Ordering::Relaxed))
    }
}

type Limiter =
    RateLimiter<governor::state::NotKeyed, InMemoryState, TsClock, NoOpMiddleware<Nanos>>;

/// Most held items listed in a digest.
const DIGEST_LINES: usize = 20;

/// One receiver's rate limit and the digest of what it held back.
pub struct Gate {
    limiter: Option<Limiter>,
    clock: TsClock,
    digest_wait: Duration,
    held: u64,
    since: Option<Ts>,
    lines: Vec<String>,
    more: u64,
    /// The limit denied the digest until this time.
    retry_at: Option<Ts>,
}

impl Gate {
    /// A gate for `rc`.
    pub fn new(rc: &ReceiverConfig) -> Gate {
        let clock = TsClock::default();
        let limiter = rc.rate.map(|r| {
            let burst = NonZeroU32::new(r.burst.max(1)).expect("nonzero");
            let q = Quota::with_period(r.period.max(Duration::from_millis(1)))
                .expect("nonzero period")
                .allow_burst(burst);
            RateLimiter::direct_with_clock(q, clock.clone())
        });
        Gate {
            limiter,
            clock,
            digest_wait: rc.digest_wait,
            held: 0,
            since: None,
            lines: Vec::new(),
            more: 0,
            retry_at: None,
        }
    }

    fn allow(&self, now: Ts) -> bool {
        self.clock.set(now);
        self.limiter.as_ref().is_none_or(|l| l.check().is_ok())
    }

    /// Passes `m` if the limit allows it; otherwise holds it for the digest and returns
    /// `None`. A digest waiting to go out keeps later messages behind it (order).
    pub fn offer(&mut self, m: Message, now: Ts) -> Option<Message> {
        if self.held == 0 && self.allow(now) {
            return Some(m);
        }
        self.held += 1;
        self.since.get_or_insert(now);
        for line in m.describe() {
            self.list(line);
        }
        None
    }

    /// Lists `line` in the digest, or counts it past `DIGEST_LINES`.
    fn list(&mut self, line: String) {
        if self.lines.len() < DIGEST_LINES {
            self.lines.push(line);
        } else {
            self.more += 1;
        }
    }

    /// The digest, once `digest_wait` has passed since the first held message and the limit
    /// allows one more message (or at once when draining).
    pub fn poll(&mut self, m_receiver: (usize, &str), now: Ts, drain: bool) -> Option<Message> {
        let since = self.since?;
        if !drain {
            if now < since.plus(self.digest_wait) {
                return None;
            }
            self.clock.set(now);
            if let Some(Err(not_until)) = self.limiter.as_ref().map(|l| l.check()) {
                let wait = not_until.wait_time_from(self.clock.now());
                self.retry_at = Some(now.plus(wait.max(Duration::from_millis(1))));
                return None;
            }
        }
        self.retry_at = None;
        let mut lines = std::mem::take(&mut self.lines);
        if self.more > 0 {
            lines.push(format!("… and {} more", self.more));
        }
        let held = std::mem::take(&mut self.held);
        self.since = None;
        self.more = 0;
        Some(Message {
            receiver: m_receiver.0,
            receiver_name: m_receiver.1.to_string(),
            group: String::new(),
            at: now,
            body: Body::Digest { held, since, lines },
        })
    }

    /// What the gate holds for its digest, to save across a restart (`None`: nothing).
    pub fn held_digest(&self) -> Option<HeldDigest> {
        Some(HeldDigest {
            held: self.held,
            since: self.since?,
            lines: self.lines.clone(),
            more: self.more,
        })
    }

    /// Adds what a previous run held for this receiver's digest: the next digest lists it
    /// (and is due `digest_wait` after the earlier of the two first holds).
    pub fn restore_held(&mut self, h: HeldDigest) {
        self.held += h.held;
        self.since = Some(self.since.map_or(h.since, |s| s.min(h.since)));
        for line in h.lines {
            self.list(line);
        }
        self.more += h.more;
    }

    /// When a held digest could go out.
    pub fn next_due(&self) -> Option<Ts> {
        self.since
            .map(|s| s.plus(self.digest_wait).max(self.retry_at.unwrap_or(s)))
    }
}

/// A gate's held-back messages, as saved in the notification state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldDigest {
    /// Messages held.
    pub held: u64,
    /// When the first was held.
    pub since: Ts,
    /// Their one-line descriptions (at most `DIGEST_LINES`).
    pub lines: Vec<String>,
    /// Descriptions beyond those.
    pub more: u64,
}

// ---------------------------------------------------------------------------------------------
// History

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Delivered.
    Sent,
    /// Held back by the rate limit (goes out in a digest).
    Held,
    /// Given up after retries, or refused.
    Failed,
}

/// One notification-log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// When (RFC 3339).
    pub at: String,
    /// Receiver name.
    pub receiver: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Group labels.
    pub group: String,
    /// One line per item.
    pub what: Vec<String>,
    /// Delivery attempts.
    pub attempts: u32,
    /// Why it failed (never contains a secret).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// Per-receiver counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverCounts {
    /// Messages delivered.
    pub sent: u64,
    /// Messages held back by the rate limit.
    pub held: u64,
    /// Messages that failed.
    pub failed: u64,
    /// Retries (attempts after the first).
    pub retries: u64,
    /// Messages merged into a queued one for the same group while the receiver was busy.
    pub coalesced: u64,
    /// The receiver's last delivery failed.
    pub down: bool,
}

/// The notification log and per-receiver counters, shared by the notify task and workers.
#[derive(Debug, Default)]
pub struct History {
    /// Latest entries, oldest first.
    pub entries: VecDeque<Entry>,
    /// Counters by receiver name.
    pub counts: std::collections::BTreeMap<String, ReceiverCounts>,
    cap: usize,
    /// Changed since last saved.
    pub dirty: bool,
}

/// Shared history handle.
pub type SharedHistory = Arc<Mutex<History>>;

impl History {
    /// An empty log keeping `cap` entries.
    pub fn new(cap: usize) -> History {
        History {
            cap: cap.max(1),
            ..History::default()
        }
    }

    /// Keeps at most `cap` entries from now on (a reload changed `notify.history`).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        while self.entries.len() > self.cap {
            self.entries.pop_front();
        }
    }

    /// Appends an entry for `m` and counts it.
    pub fn record(&mut self, m: &Message, outcome: Outcome, attempts: u32, error: Option<String>) {
        self.push(Entry {
            at: m.at.rfc3339(),
            receiver: m.receiver_name.clone(),
            outcome,
            group: m.group.clone(),
            what: m.describe(),
            attempts,
            error,
        });
    }

    /// Appends an entry and counts it.
    pub fn push(&mut self, e: Entry) {
        let (outcome, attempts) = (e.outcome, e.attempts);
        let c = self.counts.entry(e.receiver.clone()).or_default();
        match outcome {
            Outcome::Sent => {
                c.sent += 1;
                c.down = false;
            }
            Outcome::Held => c.held += 1,
            Outcome::Failed => {
                c.failed += 1;
                c.down = true;
            }
        }
        c.retries += u64::from(attempts.saturating_sub(1));
        if self.entries.len() == self.cap {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
        self.dirty = true;
    }
}

// ---------------------------------------------------------------------------------------------
// Outbox

/// Messages waiting for one receiver's worker. While the worker is busy (retrying a dead
/// receiver), a new message for a group that already has one queued is merged into it, so the
/// queue holds at most one message per group and counting never waits.
///
/// Every message gets an id, and every change to the queue is written to the
/// [`Journal`] under the queue's lock, so the journal's order is the queue's order.
pub struct Outbox {
    queue: Mutex<OutboxState>,
    wake: tokio::sync::Notify,
    journal: Arc<Journal>,
}

impl Default for Outbox {
    /// An outbox without a journal.
    fn default() -> Outbox {
        Outbox::new(Arc::new(Journal::disabled(0)))
    }
}

#[derive(Default)]
struct OutboxState {
    /// (id, message)
    queue: VecDeque<(String, Message)>,
    closed: bool,
    /// After close, no retry may sleep past this.
    deadline: Option<tokio::time::Instant>,
    /// After close: what the receiver has not taken by the deadline stays queued (in the
    /// journal, for the next start) instead of being recorded failed.
    keep: bool,
}

/// Most queued messages per receiver; older ones are dropped (and recorded failed).
const OUTBOX_CAP: usize = 1000;

/// The error recorded for a message dropped from a full outbox.
pub const OUTBOX_FULL: &str = "outbox full: the receiver is far behind";

impl Outbox {
    /// An empty outbox journaling to `journal`.
    pub fn new(journal: Arc<Journal>) -> Outbox {
        Outbox {
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            journal,
        }
    }

    /// Queues `m`, merging it into a queued message of the same group. Returns a message
    /// dropped because the queue was full (recorded failed in the journal), and whether `m`
    /// was merged.
    pub fn push(&self, m: Message) -> (Option<Message>, bool) {
        let id = self.journal.next_id();
        self.push_as(id, m, false)
    }

    /// Queues a message read back from the journal under its old id (no new `queued` record).
    pub fn push_recovered(&self, id: String, m: Message) -> (Option<Message>, bool) {
        self.push_as(id, m, true)
    }

    fn push_as(&self, id: String, m: Message, journaled: bool) -> (Option<Message>, bool) {
        let mut st = self.queue.lock().expect("outbox lock");
        if let Body::Alerts { items } = &m.body {
            if let Some((qid, q)) = st.queue.iter_mut().find(|(_, q)| {
                q.group == m.group && matches!(q.body, Body::Alerts { .. }) && !m.group.is_empty()
            }) {
                if let Body::Alerts { items: qi } = &mut q.body {
                    merge_items(qi, items.clone());
                }
                q.at = m.at;
                self.journal.queued(qid, q);
                self.journal.done(&id, Done::Coalesced, Some(qid), None);
                return (None, true);
            }
        }
        if !journaled {
            self.journal.queued(&id, &m);
        }
        st.queue.push_back((id, m));
        let dropped = (st.queue.len() > OUTBOX_CAP)
            .then(|| st.queue.pop_front())
            .flatten()
            .map(|(id, m)| {
                self.journal
                    .done(&id, Done::Failed, None, Some(OUTBOX_FULL));
                m
            });
        drop(st);
        self.wake.notify_one();
        (dropped, false)
    }

    /// Records how the message `id` left the outbox (after the worker's last attempt).
    fn done(&self, id: &str, outcome: Outcome, error: Option<&str>) {
        let d = match outcome {
            Outcome::Sent => Done::Sent,
            Outcome::Held | Outcome::Failed => Done::Failed,
        };
        self.journal.done(id, d, None, error);
    }

    /// Closes the outbox: the worker finishes what is queued, retrying until `deadline`.
    pub fn close(&self, deadline: tokio::time::Instant) {
        self.close_as(deadline, false);
    }

    /// Closes the outbox for a shutdown: as [`close`](Self::close), except that when the
    /// journal is durable, a message the receiver cannot take by `deadline` (it is down, and
    /// the next retry would come later) is not recorded failed: it and everything behind it
    /// stay queued in the journal, and the next start delivers them.
    pub fn close_for_restart(&self, deadline: tokio::time::Instant) {
        self.close_as(deadline, self.journal.durable());
    }

    fn close_as(&self, deadline: tokio::time::Instant, keep: bool) {
        let mut st = self.queue.lock().expect("outbox lock");
        st.closed = true;
        st.deadline = Some(deadline);
        st.keep = keep;
        drop(st);
        self.wake.notify_one();
    }

    fn keeps(&self) -> bool {
        self.queue.lock().expect("outbox lock").keep
    }

    /// Takes everything still queued, journaled as failed with `error` (a receiver replaced
    /// by a reload, at its deadline).
    pub fn take_failed(&self, error: &str) -> Vec<Message> {
        let mut st = self.queue.lock().expect("outbox lock");
        st.queue
            .drain(..)
            .map(|(id, m)| {
                self.journal.done(&id, Done::Failed, None, Some(error));
                m
            })
            .collect()
    }

    async fn pop(&self) -> Option<(String, Message)> {
        loop {
            let notified = self.wake.notified();
            {
                let mut st = self.queue.lock().expect("outbox lock");
                if let Some(m) = st.queue.pop_front() {
                    return Some(m);
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.queue.lock().expect("outbox lock").deadline
    }
}

/// Merges `newer` into `items`: an item for the same alert and change is replaced by the
/// newer one (events add their counts); others are appended.
fn merge_items(items: &mut Vec<Item>, newer: Vec<Item>) {
    for n in newer {
        match items
            .iter_mut()
            .find(|i| i.alert.rule == n.alert.rule && i.alert.labels == n.alert.labels)
        {
            Some(i) if i.change == n.change && n.change == crate::notify::core::Change::Event => {
                let occ = i.occurrences + n.occurrences;
                *i = n;
                i.occurrences = occ;
            }
            Some(i) => *i = n,
            None => items.push(n),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Senders

/// Why an attempt failed.
#[derive(Debug)]
pub enum SendError {
    /// Worth retrying (timeout, connection error, 5xx, 429), after `after` if the server said.
    Retry {
        /// Server-requested wait (`Retry-After`).
        after: Option<Duration>,
        /// What happened (no secrets).
        reason: String,
    },
    /// Retrying will not help (4xx other than 429, a refused address).
    Permanent(String),
}

/// A configured destination.
pub enum Sender {
    /// stdout (or any writer, in tests).
    Stdout {
        /// Text or JSON.
        format: Format,
        /// Where.
        out: Mutex<Box<dyn Write + Send>>,
    },
    /// Slack incoming webhook.
    Slack {
        /// HTTP client.
        client: reqwest::Client,
        /// Webhook URL (secret).
        url: String,
        /// Send blocks too.
        blocks: bool,
    },
    /// JSON webhook or Alertmanager.
    Webhook {
        /// HTTP client.
        client: reqwest::Client,
        /// URL (secret).
        url: String,
        /// Body shape.
        mode: WebhookMode,
    },
    /// SMTP.
    Email {
        /// Transport.
        transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
        /// Sender.
        from: lettre::message::Mailbox,
        /// Recipients.
        to: Vec<lettre::message::Mailbox>,
    },
}

impl Sender {
    /// Builds the sender for `rc`; `stdout` is where stdout receivers write.
    pub fn new(
        rc: &ReceiverConfig,
        stdout: impl FnOnce() -> Box<dyn Write + Send>,
    ) -> anyhow::Result<Sender> {
        let http = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5).min(rc.timeout))
                .timeout(rc.timeout)
                .user_agent(concat!("logwarden/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(match &rc.kind {
            ReceiverKind::Stdout { format } => Sender::Stdout {
                format: *format,
                out: Mutex::new(stdout()),
            },
            ReceiverKind::Slack { url, blocks } => Sender::Slack {
                client: http()?,
                url: url.expose().to_string(),
                blocks: *blocks,
            },
            ReceiverKind::Webhook { url, mode } => Sender::Webhook {
                client: http()?,
                url: match mode {
                    WebhookMode::Json => url.expose().to_string(),
                    WebhookMode::Alertmanager => {
                        format!("{}/api/v2/alerts", url.expose().trim_end_matches('/'))
                    }
                },
                mode: *mode,
            },
            ReceiverKind::Email {
                host,
                port,
                tls,
                username,
                password,
                from,
                to,
            } => {
                use lettre::transport::smtp::authentication::Credentials;
                use lettre::AsyncSmtpTransport as T;
                let mut b = match tls {
                    Tls::Implicit => T::<lettre::Tokio1Executor>::relay(host)?,
                    Tls::StartTls => T::<lettre::Tokio1Executor>::starttls_relay(host)?,
                    Tls::None => T::<lettre::Tokio1Executor>::builder_dangerous(host),
                }
                .port(*port)
                .timeout(Some(rc.timeout));
                if let (Some(u), Some(p)) = (username, password) {
                    b = b.credentials(Credentials::new(u.clone(), p.expose().to_string()));
                }
                Sender::Email {
                    transport: b.build(),
                    from: from.parse()?,
                    to: to.iter().map(|t| t.parse()).collect::<Result<_, _>>()?,
                }
            }
        })
    }

    /// One attempt. Callers wrap it in a deadline (`timeout`, also given to HTTP). `id` is the
    /// message's journal id, sent to HTTP receivers as [`MESSAGE_ID_HEADER`].
    pub async fn send(
        &self,
        id: &str,
        m: &Message,
        r: &Render<'_>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        match self {
            Sender::Stdout { format, out } => {
                let lines = match format {
                    Format::Text => format::stdout_lines(m, r),
                    Format::Json => format::stdout_json(m, r),
                };
                let mut w = out.lock().expect("stdout lock");
                let res = lines
                    .iter()
                    .try_for_each(|l| writeln!(w, "{l}"))
                    .and_then(|()| w.flush());
                res.map_err(|e| SendError::Permanent(format!("cannot write: {e}")))
            }
            Sender::Slack {
                client,
                url,
                blocks,
            } => post(client, url, id, &format::slack_body(m, r, *blocks), timeout).await,
            Sender::Webhook { client, url, mode } => {
                let body = match mode {
                    WebhookMode::Json => format::webhook_json(m, r),
                    WebhookMode::Alertmanager => match format::alertmanager_json(m, r) {
                        Some(b) => b,
                        None => return Ok(()),
                    },
                };
                post(client, url, id, &body, timeout).await
            }
            Sender::Email {
                transport,
                from,
                to,
            } => {
                use lettre::AsyncTransport;
                let (subject, body) = format::email(m, r);
                let mut b = lettre::Message::builder()
                    .from(from.clone())
                    .subject(subject)
                    .header(lettre::message::header::ContentType::TEXT_PLAIN);
                for t in to {
                    b = b.to(t.clone());
                }
                let msg = b
                    .body(body)
                    .map_err(|e| SendError::Permanent(format!("cannot build the email: {e}")))?;
                match transport.send(msg).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("SMTP: {e}"))),
                    Err(e) => Err(SendError::Retry {
                        after: None,
                        reason: format!("SMTP: {e}"),
                    }),
                }
            }
        }
    }
}

/// The header that carries a message's id on HTTP deliveries. The id is the same when a
/// message is sent again after a crash (see [`crate::notify::journal`]), so a receiver can
/// drop the duplicate.
pub const MESSAGE_ID_HEADER: &str = "X-Logwarden-Message-Id";

async fn post(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<(), SendError> {
    let resp = client
        .post(url)
        .header(MESSAGE_ID_HEADER, id)
        .json(body)
        .send()
        .await
        .map_err(|e| SendError::Retry {
            after: None,
            // Never print the URL: it is a secret.
            reason: if e.is_timeout() {
                format!("no answer within {timeout:?}")
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                format!("HTTP: {}", e.without_url())
            },
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let reason = format!("HTTP {status}: {}", text.trim());
    if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
        Err(SendError::Retry { after, reason })
    } else {
        Err(SendError::Permanent(reason))
    }
}

/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Backoff before attempt `n + 1` (n ≥ 1): 1 s, 2 s, 4 s … capped at 30 s, ±25% jitter.
pub fn backoff(n: u32, seed: u64) -> Duration {
    let base =
        Duration::from_secs(1u64 << (n.saturating_sub(1)).min(5)).min(Duration::from_secs(30));
    // xorshift: jitter without a rand dependency.
    let mut x = seed ^ (u64::from(n) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let frac = (x % 1000) as f64 / 1000.0; // 0..1
    base.mul_f64(0.75 + 0.5 * frac)
}

/// Everything a worker needs.
pub struct Worker {
    /// Receiver config.
    pub rc: ReceiverConfig,
    /// The sender.
    pub sender: Sender,
    /// Its outbox.
    pub outbox: Arc<Outbox>,
    /// The log.
    pub history: SharedHistory,
    /// Rendering settings.
    pub hostname: String,
    /// Redaction.
    pub redact: Vec<regex::Regex>,
    /// Evidence lines.
    pub evidence_lines: usize,
    /// The daemon clock, for history times.
    pub clock: Clock,
}

impl Worker {
    /// Delivers queued messages until the outbox closes and empties.
    pub async fn run(self) {
        let render = Render {
            hostname: &self.hostname,
            redact: &self.redact,
            evidence_lines: self.evidence_lines,
        };
        let mut was_down = false;
        while let Some((id, m)) = self.outbox.pop().await {
            let Some((outcome, attempts, error)) = self.deliver(&id, &m, &render).await else {
                // Shutting down with the receiver down: no `done` record, so this message
                // and those behind it stay queued in the journal for the next start.
                return;
            };
            // The journal first: it decides what a restart sends again.
            self.outbox.done(&id, outcome, error.as_deref());
            match (outcome, was_down) {
                (Outcome::Failed, false) => {
                    tracing::warn!(receiver = %self.rc.name, attempts, error = error.as_deref().unwrap_or(""), "notification failed; receiver marked down");
                    was_down = true;
                }
                (Outcome::Sent, true) => {
                    tracing::info!(receiver = %self.rc.name, "receiver delivers again");
                    was_down = false;
                }
                _ => {}
            }
            self.history
                .lock()
                .expect("history lock")
                .record(&m, outcome, attempts, error);
        }
    }

    /// Attempts `m` until it is sent, refused, out of attempts, or (`None`) left queued for
    /// the next start because the outbox closed for a restart and the next retry would come
    /// after its deadline.
    async fn deliver(
        &self,
        id: &str,
        m: &Message,
        r: &Render<'_>,
    ) -> Option<(Outcome, u32, Option<String>)> {
        let seed = m.at.0 ^ (self.rc.name.len() as u64).rotate_left(17);
        let mut last_err = String::new();
        for attempt in 1..=self.rc.max_attempts {
            let res = match tokio::time::timeout(
                self.rc.timeout + Duration::from_millis(200),
                self.sender.send(id, m, r, self.rc.timeout),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(SendError::Retry {
                    after: None,
                    reason: format!("no answer within {:?}", self.rc.timeout),
                }),
            };
            let wait = match res {
                Ok(()) => return Some((Outcome::Sent, attempt, None)),
                Err(SendError::Permanent(e)) => return Some((Outcome::Failed, attempt, Some(e))),
                Err(SendError::Retry { after, reason }) => {
                    last_err = reason;
                    after
                        .map(|a| a.min(MAX_RETRY_AFTER))
                        .unwrap_or_else(|| backoff(attempt, seed))
                }
            };
            if attempt == self.rc.max_attempts {
                break;
            }
            if let Some(d) = self.outbox.deadline() {
                if tokio::time::Instant::now() + wait >= d {
                    if self.outbox.keeps() {
                        tracing::warn!(receiver = %self.rc.name, attempts = attempt, error = %last_err, "receiver down at shutdown: its notifications stay in the outbox journal for the next start");
                        return None;
                    }
                    return Some((
                        Outcome::Failed,
                        attempt,
                        Some(format!("{last_err}; shutting down before the next retry")),
                    ));
                }
            }
            tracing::debug!(receiver = %self.rc.name, attempt, ?wait, error = %last_err, "retrying");
            tokio::time::sleep(wait).await;
        }
        Some((
            Outcome::Failed,
            self.rc.max_attempts,
            Some(format!(
                "{last_err} (after {} attempts)",
                self.rc.max_attempts
            )),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testing;

    use crate::notify::config::RateLimit;

    use crate::rules::{Alert, AlertState, Severity};

    fn t(s: u64) -> Ts {
        Ts::from_secs(1_795_428_000 + s)
    }

    fn msg(group: &str, worker: &str, at: Ts) -> Message {
        let alert = Alert {
            value: 1.0,
            threshold: 0.0,
            window_secs: Some(60),
            count: 1,
            ..testing::alert(
                "errors",
                AlertState::Firing,
                Severity::Warning,
                &[("worker", worker)],
                at,
            )
        };
        testing::message(group, alert)
    }

    fn slack_rc() -> ReceiverConfig {
        let mut rc = ReceiverConfig::stdout(Format::Text);
        rc.name = "slack".into();
        rc.rate = Some(RateLimit {
            period: Duration::from_secs(1),
            burst: 3,
        });
        rc.digest_wait = Duration::from_secs(30);
        rc
    }

    #[test]
    fn storm_passes_the_burst_then_one_digest() {
        let mut g = Gate::new(&slack_rc());
        let mut passed = 0;
        let mut digests = Vec::new();
        // 1,000 messages in 10 s (a storm), each a different group.
        for i in 0..1000u64 {
            let now = Ts(t(0).0 + i * 10);
            if g.offer(msg(&format!("g{i}"), "w", now), now).is_some() {
                passed += 1;
            }
            digests.extend(g.poll((0, "slack"), now, false));
        }
        // The burst of 3, then one per second for ~10 s; everything else is held.
        assert!((3..=14).contains(&passed), "{passed}");
        assert!(digests.is_empty(), "the digest waits digest_wait");
        let d = g.poll((0, "slack"), t(40), false).expect("digest");
        let Body::Digest { held, lines, .. } = &d.body else {
            panic!()
        };
        assert_eq!(*held, 1000 - passed);
        assert_eq!(
            lines.len(),
            DIGEST_LINES + 1,
            "capped, with an '… and N more' line"
        );
        assert!(lines.last().unwrap().starts_with("… and "));
        assert!(g.poll((0, "slack"), t(80), false).is_none(), "one digest");
        assert!(
            g.offer(msg("x", "w", t(81)), t(81)).is_some(),
            "flows again"
        );
    }

    #[test]
    fn outbox_coalesces_per_group_while_busy() {
        let ob = Outbox::default();
        assert!(!ob.push(msg("{rule=\"errors\"}", "w1", t(0))).1);
        assert!(ob.push(msg("{rule=\"errors\"}", "w2", t(1))).1);
        assert!(ob.push(msg("{rule=\"errors\"}", "w1", t(2))).1);
        assert!(!ob.push(msg("{rule=\"other\"}", "w1", t(3))).1);
        let st = ob.queue.lock().unwrap();
        assert_eq!(st.queue.len(), 2);
        let Body::Alerts { items } = &st.queue[0].1.body else {
            panic!()
        };
        assert_eq!(items.len(), 2, "w1 replaced by its newer state, w2 added");
        assert_eq!(items[0].alert.at, t(2));
    }

    #[tokio::test]
    async fn the_journal_follows_the_outbox_through_coalescing_delivery_and_drops() {
        use crate::notify::journal;
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 9, Vec::new());
        let ob = Outbox::new(Arc::new(j));
        let pending = || {
            let r = journal::read(dir.path()).unwrap();
            r.pending
                .into_iter()
                .map(|p| (p.id, p.message.unwrap()))
                .collect::<Vec<_>>()
        };
        ob.push(msg("{rule=\"errors\"}", "w1", t(0)));
        ob.push(msg("{rule=\"errors\"}", "w2", t(1))); // merged into 9-1
        ob.push(msg("{rule=\"other\"}", "w1", t(2)));
        let p = pending();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, "9-1");
        let Body::Alerts { items } = &p[0].1.body else {
            panic!()
        };
        assert_eq!(items.len(), 2, "the journal holds the merged content");
        let text = std::fs::read_to_string(dir.path().join(journal::FILE)).unwrap();
        assert!(
            text.contains(r#"{"op":"done","id":"9-2","outcome":"coalesced","into":"9-1"}"#),
            "{text}"
        );

        let (id, _) = ob.pop().await.unwrap();
        assert_eq!(id, "9-1");
        ob.done(&id, Outcome::Sent, None);
        assert_eq!(pending().len(), 1);
        let (id, _) = ob.pop().await.unwrap();
        ob.done(&id, Outcome::Failed, Some("HTTP 500"));
        assert!(pending().is_empty());

        for i in 0..=OUTBOX_CAP {
            let (dropped, _) = ob.push(msg(&format!("g{i}"), "w", t(3)));
            assert_eq!(dropped.is_some(), i == OUTBOX_CAP);
        }
        let p = pending();
        assert_eq!(p.len(), OUTBOX_CAP, "the dropped one is done (failed)");
        assert_ne!(p[0].1.group, "g0");
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b: Vec<Duration> = (1..=8).map(|n| backoff(n, 42)).collect();
        assert!(b[0] >= Duration::from_millis(750) && b[0] <= Duration::from_millis(1250));
        assert!(b[3] >= Duration::from_secs(6) && b[3] <= Duration::from_secs(10));
        assert!(b[7] <= Duration::from_millis(37_500));
        assert_ne!(backoff(3, 1), backoff(3, 2), "jitter depends on the seed");
    }
}
