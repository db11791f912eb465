//! The poller of one `[[queue]]`: a task that polls Redis on an interval and sends
//! [`SampleBatch`]es and [`Health`] transitions to the counters stage.
//!
//! Round trips: each poll is **one** pipeline (`ignore_errors`, so a `WRONGTYPE` answer sinks
//! only its own key) holding, per key, the size command its cached type calls for (`LLEN`,
//! `ZCARD`, `SCARD`, `HLEN`, `XLEN` + `XINFO GROUPS`), the oldest-job probe where the layout
//! records enqueue times, and `TYPE` for keys that are missing or changed type (a missing key
//! reads as depth 0; once `TYPE` names a type, the next poll sizes it). Discovery (SCAN globs,
//! preset queue names) and the `TYPE` of every key run at start and every `rescan_every`
//! polls: a few more round trips, rarely. Two phases on every poll would double the latency
//! for nothing, since key types almost never change.
//!
//! Failure: the connection is a lazy `ConnectionManager` (the daemon starts while Redis is
//! down) with connection and response timeouts, and each poll also runs under our own
//! `tokio::time::timeout`, so a frozen server (SIGSTOP) costs one timeout per tick, never a
//! hang. Health changes are logged once per transition, not once per poll.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::presets::{self, AgeProbe, Discovery, KeySpec};
use super::{label, series_labels, Health, Metric, QueueConfig, Sample, SampleBatch};
use crate::clock::Clock;
use crate::counters::CounterInput;
use crate::event::Ts;

/// The type of a key as `TYPE` reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    /// Not known yet, or it answered `WRONGTYPE`: ask `TYPE` in the next poll.
    Unknown,
    /// The key does not exist: depth 0.
    Missing,
    /// LLEN.
    List,
    /// ZCARD.
    Zset,
    /// SCARD.
    Set,
    /// HLEN.
    Hash,
    /// XLEN and XINFO GROUPS.
    Stream,
    /// A type with no depth (`string`, module types): skipped, with one warning.
    Other(String),
}

impl KeyType {
    fn parse(s: &str) -> KeyType {
        match s {
            "none" => KeyType::Missing,
            "list" => KeyType::List,
            "zset" => KeyType::Zset,
            "set" => KeyType::Set,
            "hash" => KeyType::Hash,
            "stream" => KeyType::Stream,
            other => KeyType::Other(other.to_string()),
        }
    }

    fn size_command(&self) -> Option<&'static str> {
        match self {
            KeyType::List => Some("LLEN"),
            KeyType::Zset => Some("ZCARD"),
            KeyType::Set => Some("SCARD"),
            KeyType::Hash => Some("HLEN"),
            KeyType::Stream => Some("XLEN"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Watched {
    spec: KeySpec,
    ty: KeyType,
}

/// What one reply in the poll pipeline answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Size(usize),
    Type(usize),
    Groups(usize),
    Age(usize),
    /// `HEXISTS meta paused` for a BullMQ `wait` list: its jobs are paused, not waiting.
    Paused(usize),
    /// Nothing to size (no key matched yet): the poll still proves Redis answers.
    Ping,
}

/// Counters of one poller, for logs, `logwarden queues` and the benchmark.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollStats {
    /// Polls that returned samples.
    pub polls: u64,
    /// Polls that failed (connection, timeout).
    pub failed: u64,
    /// Per-key errors inside good polls (`WRONGTYPE`, script errors).
    pub key_errors: u64,
    /// Discovery + TYPE passes.
    pub rescans: u64,
}

/// The state of one `[[queue]]`'s polling: the keys, their cached types, when to rescan.
pub struct Poller {
    cfg: QueueConfig,
    keys: Vec<Watched>,
    polls_since_scan: u32,
    scanned: bool,
    warned: HashSet<String>,
    /// The poll pipeline, rebuilt only when a key's type changes or after a rescan.
    cached: Option<(redis::Pipeline, Vec<Slot>)>,
    /// A reply changed a cached type: the pipeline must be rebuilt.
    retyped: bool,
    /// Counters.
    pub stats: PollStats,
}

impl Poller {
    /// A poller for `cfg`; nothing is sent to Redis until [`poll`](Self::poll).
    pub fn new(cfg: QueueConfig) -> Poller {
        Poller {
            cfg,
            keys: Vec::new(),
            polls_since_scan: 0,
            scanned: false,
            warned: HashSet::new(),
            cached: None,
            retyped: false,
            stats: PollStats::default(),
        }
    }

    /// The config.
    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    /// Keys watched after the last scan.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// A lazy connection manager: no I/O until the first command, so this succeeds while
    /// Redis is down. Reconnection is the manager's (in the background, after a failed call).
    pub fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        if self.cfg.url.starts_with("rediss://") {
            // redis-rs builds its rustls config with the process default provider; make it
            // aws-lc-rs (the one TLS provider of the daemon). Already installed is fine.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = redis::Client::open(self.cfg.url.as_str())?;
        let mgr = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.cfg.connect_timeout))
            .set_response_timeout(Some(self.cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        client.get_connection_manager_lazy(mgr)
    }

    /// One poll at `now` (wall time, for job ages): a rescan first when one is due, then one
    /// pipelined round trip. Every step is bounded by the configured timeout.
    pub async fn poll(
        &mut self,
        con: &mut ConnectionManager,
        now: Ts,
    ) -> Result<Vec<Sample>, String> {
        if !self.scanned || self.polls_since_scan >= self.cfg.rescan_every {
            // Discovery may take several SCAN pages on a big keyspace: a larger budget.
            let budget = self.cfg.timeout * 5;
            match tokio::time::timeout(budget, self.rescan(con)).await {
                Ok(Ok(())) => {
                    self.cached = None;
                    self.scanned = true;
                    self.polls_since_scan = 0;
                    self.stats.rescans += 1;
                }
                Ok(Err(e)) => return Err(format!("rescan: {e}")),
                Err(_) => return Err(format!("rescan timed out after {budget:?}")),
            }
        }
        self.polls_since_scan += 1;
        let (pipe, slots) = match self.cached.take() {
            Some(c) => c,
            None => self.pipeline(),
        };
        let result =
            tokio::time::timeout(self.cfg.timeout, pipe.query_async::<Vec<Value>>(con)).await;
        let replies = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.cached = Some((pipe, slots));
                return Err(e.to_string());
            }
            Err(_) => {
                self.cached = Some((pipe, slots));
                return Err(format!("poll timed out after {:?}", self.cfg.timeout));
            }
        };
        self.retyped = false;
        let samples = self.read(&slots, replies, now);
        if !self.retyped {
            self.cached = Some((pipe, slots));
        }
        Ok(samples)
    }

    /// Finds the keys to watch (explicit keys, SCAN globs, preset queues) and their types.
    async fn rescan(&mut self, con: &mut ConnectionManager) -> redis::RedisResult<()> {
        let cfg = &self.cfg;
        let mut specs: Vec<KeySpec> = cfg
            .keys
            .iter()
            .map(|k| KeySpec {
                key: k.key.clone(),
                labels: series_labels(&k.queue, &k.key, &k.part),
                age: None,
                paused_flag: None,
            })
            .collect();
        let mut scanned = Vec::new();
        for glob in &cfg.scan {
            scan(con, glob, &mut scanned).await?;
        }
        for key in scanned {
            specs.push(KeySpec {
                labels: series_labels(&key, &key, &cfg.scan_part),
                key,
                age: None,
                paused_flag: None,
            });
        }
        if let Some(preset) = cfg.preset {
            let prefix = cfg.prefix.as_deref();
            let mut names: Vec<String> = Vec::new();
            match &cfg.queues {
                Some(q) => names.extend(q.iter().cloned()),
                None => {
                    names.extend(preset.implied_queues().iter().map(|s| s.to_string()));
                    let found = match preset.discovery(prefix) {
                        Discovery::Members(set) => smembers(con, &[set]).await?,
                        Discovery::Scan(glob) => {
                            let mut keys = Vec::new();
                            scan(con, &glob, &mut keys).await?;
                            if preset == presets::Preset::Celery {
                                // Binding sets are named after the exchange; their members
                                // name the queue.
                                smembers(con, &keys)
                                    .await?
                                    .iter()
                                    .filter_map(|m| presets::celery_binding_queue(m))
                                    .collect()
                            } else {
                                keys
                            }
                        }
                    };
                    for item in found {
                        match preset {
                            presets::Preset::Celery => names.push(item),
                            p => names.extend(p.queue_from(prefix, &item)),
                        }
                    }
                }
            }
            names.sort();
            names.dedup();
            for q in &names {
                specs.extend(preset.queue_keys(prefix, q));
            }
            specs.extend(preset.global_keys(prefix));
        }
        // SCAN may return a key twice, and a glob may match a preset's key: first one wins.
        let mut seen = HashSet::new();
        specs.retain(|s| seen.insert(s.key.clone()));
        for s in &mut specs {
            for (k, v) in self.cfg.labels.iter() {
                s.labels.insert(Arc::from(k), Arc::from(v));
            }
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for s in &specs {
            pipe.cmd("TYPE").arg(&s.key);
        }
        let types: Vec<Value> = if specs.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(con).await?
        };
        self.keys = specs
            .into_iter()
            .zip(types.into_iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(spec, t)| Watched {
                ty: t
                    .as_ref()
                    .and_then(text)
                    .map_or(KeyType::Unknown, |t| KeyType::parse(&t)),
                spec,
            })
            .collect();
        for w in &self.keys {
            if let KeyType::Other(t) = &w.ty {
                if self.warned.insert(w.spec.key.clone()) {
                    tracing::warn!(queue = %self.cfg.name, key = %w.spec.key, r#type = %t,
                        "key is not a list, set, zset, hash or stream; it is not polled");
                }
            }
        }
        Ok(())
    }

    fn pipeline(&self) -> (redis::Pipeline, Vec<Slot>) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut slots = Vec::with_capacity(self.keys.len() + 8);
        for (i, w) in self.keys.iter().enumerate() {
            match &w.ty {
                KeyType::Unknown | KeyType::Missing => {
                    pipe.cmd("TYPE").arg(&w.spec.key);
                    slots.push(Slot::Type(i));
                }
                KeyType::Other(_) => {}
                ty => {
                    if let Some(meta) = &w.spec.paused_flag {
                        // Before the size, so the flag is known when the size is read.
                        pipe.cmd("HEXISTS").arg(meta).arg("paused");
                        slots.push(Slot::Paused(i));
                    }
                    if let Some(cmd) = ty.size_command() {
                        pipe.cmd(cmd).arg(&w.spec.key);
                        slots.push(Slot::Size(i));
                    }
                    if *ty == KeyType::Stream {
                        pipe.cmd("XINFO").arg("GROUPS").arg(&w.spec.key);
                        slots.push(Slot::Groups(i));
                    }
                    if *ty == KeyType::List {
                        match &w.spec.age {
                            Some(AgeProbe::JsonField { index, .. }) => {
                                pipe.cmd("LINDEX").arg(&w.spec.key).arg(*index);
                                slots.push(Slot::Age(i));
                            }
                            Some(AgeProbe::JobHash {
                                index,
                                prefix,
                                field,
                            }) => {
                                pipe.cmd("EVAL")
                                    .arg(presets::JOB_HASH_SCRIPT)
                                    .arg(1)
                                    .arg(&w.spec.key)
                                    .arg(*index)
                                    .arg(prefix)
                                    .arg(*field);
                                slots.push(Slot::Age(i));
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        if slots.is_empty() {
            pipe.cmd("PING");
            slots.push(Slot::Ping);
        }
        (pipe, slots)
    }

    /// Turns the replies of one poll into samples, updating cached types.
    fn read(&mut self, slots: &[Slot], replies: Vec<Value>, now: Ts) -> Vec<Sample> {
        let mut out = Vec::with_capacity(slots.len());
        let mut paused: Option<usize> = None;
        for (slot, reply) in slots.iter().zip(replies) {
            let i = match *slot {
                Slot::Size(i) | Slot::Type(i) | Slot::Groups(i) | Slot::Age(i) => i,
                Slot::Paused(i) => {
                    if int(&reply) == Some(1) {
                        paused = Some(i);
                    }
                    continue;
                }
                Slot::Ping => continue,
            };
            if let Value::ServerError(e) = &reply {
                self.stats.key_errors += 1;
                let w = &mut self.keys[i];
                if e.code() == "WRONGTYPE" {
                    // The key changed type since it was typed: ask again in the next poll.
                    w.ty = KeyType::Unknown;
                    self.retyped = true;
                } else if self.warned.insert(format!("{}\0{}", w.spec.key, e.code())) {
                    tracing::warn!(queue = %self.cfg.name, key = %w.spec.key, error = %e,
                        "redis answered an error for one key; the others are unaffected");
                }
                continue;
            }
            let w = &mut self.keys[i];
            let labels = if paused == Some(i) {
                let mut l = w.spec.labels.clone();
                l.insert(Arc::from(label::PART), Arc::from("paused"));
                l
            } else {
                w.spec.labels.clone()
            };
            let sample = |metric, value: f64| Sample {
                labels: labels.clone(),
                metric,
                value,
            };
            match *slot {
                Slot::Size(_) => {
                    if let Some(n) = int(&reply) {
                        out.push(sample(Metric::Depth, n as f64));
                    }
                }
                Slot::Type(_) => {
                    let ty = text(&reply).map_or(KeyType::Unknown, |t| KeyType::parse(&t));
                    if ty == KeyType::Missing {
                        out.push(sample(Metric::Depth, 0.0));
                        // A drained queue's key is gone: its oldest job is 0 s old, so an age
                        // alert resolves instead of losing its series.
                        if w.spec.age.is_some() {
                            out.push(sample(Metric::Age, 0.0));
                        }
                    }
                    if let KeyType::Other(t) = &ty {
                        if self.warned.insert(w.spec.key.clone()) {
                            tracing::warn!(queue = %self.cfg.name, key = %w.spec.key, r#type = %t,
                                "key is not a list, set, zset, hash or stream; it is not polled");
                        }
                    }
                    if w.ty != ty {
                        w.ty = ty;
                        self.retyped = true;
                    }
                }
                Slot::Groups(_) => {
                    for (group, pending, lag) in stream_groups(&reply) {
                        let mut labels = w.spec.labels.clone();
                        labels.insert(Arc::from(label::GROUP), Arc::from(group.as_str()));
                        out.push(Sample {
                            labels: labels.clone(),
                            metric: Metric::Pending,
                            value: pending as f64,
                        });
                        if let Some(lag) = lag {
                            out.push(Sample {
                                labels,
                                metric: Metric::Lag,
                                value: lag as f64,
                            });
                        }
                    }
                }
                Slot::Age(_) => {
                    let enqueued = match (&reply, &w.spec.age) {
                        (Value::Nil, _) => None,
                        (v, Some(AgeProbe::JsonField { field, .. })) => {
                            bytes(v).and_then(|b| presets::json_enqueued_ms(b, field))
                        }
                        (v, Some(AgeProbe::JobHash { .. })) => {
                            text(v).and_then(|t| presets::parse_enqueued_ms(&t))
                        }
                        (_, None) => None,
                    };
                    match (&reply, enqueued) {
                        // An empty queue has no waiting job: its oldest job is 0 s old.
                        (Value::Nil, _) => out.push(sample(Metric::Age, 0.0)),
                        (_, Some(ms)) => {
                            out.push(sample(Metric::Age, ((now.0 as f64 - ms) / 1000.0).max(0.0)))
                        }
                        (_, None) => {}
                    }
                }
                Slot::Ping | Slot::Paused(_) => {}
            }
        }
        out
    }
}

async fn scan(
    con: &mut ConnectionManager,
    glob: &str,
    out: &mut Vec<String>,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(glob)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        // Keys that are not UTF-8 cannot be labels; no library here writes them.
        out.extend(keys.into_iter().filter_map(|k| String::from_utf8(k).ok()));
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

async fn smembers(con: &mut ConnectionManager, sets: &[String]) -> redis::RedisResult<Vec<String>> {
    if sets.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for s in sets {
        pipe.cmd("SMEMBERS").arg(s);
    }
    let replies: Vec<Value> = pipe.query_async(con).await?;
    let mut out = Vec::new();
    for r in replies {
        if let Value::Array(items) | Value::Set(items) = r {
            out.extend(items.iter().filter_map(text));
        }
    }
    Ok(out)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::SimpleString(s) => Some(s.clone()),
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other).and_then(|t| t.parse().ok()),
    }
}

/// `(name, pending, lag)` of each group in an `XINFO GROUPS` reply (RESP2 flat pairs or RESP3
/// maps). `lag` is absent before Redis 7 and nil when Redis cannot tell.
fn stream_groups(v: &Value) -> Vec<(String, i64, Option<i64>)> {
    let Value::Array(groups) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for g in groups {
        let pairs: Vec<(&Value, &Value)> = match g {
            Value::Array(flat) => flat.chunks_exact(2).map(|c| (&c[0], &c[1])).collect(),
            Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
            _ => continue,
        };
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| text(k).as_deref() == Some(name))
                .map(|(_, v)| *v)
        };
        let Some(name) = get("name").and_then(text) else {
            continue;
        };
        let pending = get("pending").and_then(int).unwrap_or(0);
        out.push((name, pending, get("lag").and_then(int)));
    }
    out
}

/// What a poller task did, returned when it stops.
#[derive(Debug, Default, Clone)]
pub struct PollerReport {
    /// The `[[queue]]` name.
    pub name: String,
    /// Counters.
    pub stats: PollStats,
}

/// The poller task: polls every `interval` until `cancel`, sending samples and health
/// transitions to `tx`, and its state after every poll to `hub` (for `/health`, `/metrics`).
pub async fn run(
    cfg: QueueConfig,
    tx: mpsc::Sender<CounterInput>,
    cancel: CancellationToken,
    clock: Clock,
    hub: std::sync::Arc<crate::ops::Hub>,
) -> PollerReport {
    let name = cfg.name.clone();
    let url = cfg.redacted_url();
    let (interval, down_after) = (cfg.interval, cfg.down_after);
    let mut poller = Poller::new(cfg);
    let mut con: Option<ConnectionManager> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // None until the first poll; then whether the last poll worked.
    let mut up: Option<bool> = None;
    let mut down_since: Option<(Ts, Instant, u64)> = None;
    let mut key_errors_published = 0;
    tracing::info!(queue = %name, url = %url, interval = ?interval, "polling redis queue depths");
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = clock.now();
        let started = Instant::now();
        let result = match con.as_mut() {
            Some(c) => poll_cancellable(&mut poller, c, now, &cancel).await,
            None => match poller.connect() {
                Ok(mut c) => {
                    let r = poll_cancellable(&mut poller, &mut c, now, &cancel).await;
                    con = Some(c);
                    r
                }
                Err(e) => Some(Err(format!("cannot set up the connection: {e}"))),
            },
        };
        let Some(result) = result else { break };
        let latency = started.elapsed().as_secs_f64();
        let key_errors = poller.stats.key_errors - key_errors_published;
        key_errors_published = poller.stats.key_errors;
        publish(&hub, &name, key_errors, now, latency, &result);
        let health = match result {
            Ok(samples) => {
                poller.stats.polls += 1;
                tracing::debug!(queue = %name, samples = samples.len(), "polled");
                let batch = SampleBatch {
                    source: name.clone(),
                    at: now,
                    samples,
                    complete: true,
                };
                if tx.send(CounterInput::Samples(batch)).await.is_err() {
                    break; // counters is gone: we are shutting down
                }
                let back = match (up, down_since.take()) {
                    (Some(false), Some((_, since, failed))) => {
                        tracing::info!(queue = %name, url = %url, down_for = ?since.elapsed(),
                            failed_polls = failed, "redis queue source is reachable again");
                        true
                    }
                    (None, _) => {
                        tracing::info!(queue = %name, keys = poller.key_count(), "redis queue source is up");
                        false
                    }
                    _ => false,
                };
                up = Some(true);
                back.then(|| Health {
                    source: name.clone(),
                    up: true,
                    at: now,
                    down_after,
                    error: None,
                })
            }
            Err(e) => {
                poller.stats.failed += 1;
                if let Some((_, _, failed)) = down_since.as_mut() {
                    *failed += 1;
                }
                if up == Some(false) {
                    None
                } else {
                    tracing::warn!(queue = %name, url = %url, error = %e,
                        "redis queue source is down; retrying every interval");
                    up = Some(false);
                    down_since = Some((now, Instant::now(), 1));
                    Some(Health {
                        source: name.clone(),
                        up: false,
                        at: now,
                        down_after,
                        error: Some(e),
                    })
                }
            }
        };
        if let Some(h) = health {
            if tx.send(CounterInput::Health(h)).await.is_err() {
                break;
            }
        }
    }
    PollerReport {
        name: name.to_string(),
        stats: poller.stats,
    }
}

/// Records one poll's outcome in the hub (once per poll). The hub's counters are added to,
/// not set: a poller restarted by a reload counts on from its predecessor's totals.
fn publish(
    hub: &crate::ops::Hub,
    name: &str,
    key_errors: u64,
    now: Ts,
    latency: f64,
    result: &Result<Vec<Sample>, String>,
) {
    hub.queue(name, |q| {
        q.last_attempt = Some(now);
        q.key_errors += key_errors;
        match result {
            Ok(samples) => {
                q.up = Some(true);
                q.last_ok = Some(now);
                q.last_error = None;
                q.latency_seconds = Some(latency);
                q.latency.observe(latency);
                q.polls += 1;
                q.series = samples
                    .iter()
                    .map(|s| (s.labels.clone(), s.metric.as_str(), s.value))
                    .collect();
            }
            Err(e) => {
                q.up = Some(false);
                q.last_error = Some(e.clone());
                q.failed += 1;
            }
        }
    });
}

/// A poll that gives up at once when shutdown starts (`None`).
async fn poll_cancellable(
    poller: &mut Poller,
    con: &mut ConnectionManager,
    now: Ts,
    cancel: &CancellationToken,
) -> Option<Result<Vec<Sample>, String>> {
    tokio::select! {
        () = cancel.cancelled() => None,
        r = poller.poll(con, now) => Some(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queues::validate;

    fn poller(keys: &[&str]) -> Poller {
        let list: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        let raw = toml::from_str(&format!(
            "url = \"redis://127.0.0.1:1\"\nkeys = [{}]",
            list.join(",")
        ))
        .unwrap();
        let mut p = Poller::new(validate(0, raw).unwrap());
        p.keys = p
            .cfg
            .keys
            .iter()
            .map(|k| Watched {
                spec: KeySpec {
                    key: k.key.clone(),
                    labels: series_labels(&k.queue, &k.key, &k.part),
                    age: None,
                    paused_flag: None,
                },
                ty: KeyType::Unknown,
            })
            .collect();
        p
    }

    fn err(code: &str) -> Value {
        redis::parse_redis_value(format!("-{code} x\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn one_command_per_key_by_cached_type() {
        let mut p = poller(&["a", "b", "c", "d"]);
        p.keys[0].ty = KeyType::List;
        p.keys[1].ty = KeyType::Stream;
        p.keys[2].ty = KeyType::Missing;
        p.keys[3].ty = KeyType::Other("string".into());
        let (pipe, slots) = p.pipeline();
        assert_eq!(
            slots,
            vec![Slot::Size(0), Slot::Size(1), Slot::Groups(1), Slot::Type(2)]
        );
        assert_eq!(pipe.len(), 4);
    }

    #[test]
    fn wrongtype_marks_key_for_retyping_and_spares_the_rest() {
        let mut p = poller(&["a", "b"]);
        p.keys[0].ty = KeyType::List;
        p.keys[1].ty = KeyType::Zset;
        let (_, slots) = p.pipeline();
        let got = p.read(&slots, vec![err("WRONGTYPE"), Value::Int(7)], Ts(0));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value, 7.0);
        assert_eq!(got[0].labels.get("key"), Some("b"));
        assert_eq!(p.keys[0].ty, KeyType::Unknown);
        assert_eq!(p.stats.key_errors, 1);
        // Next poll asks TYPE for it; "none" reads as depth 0.
        let (_, slots) = p.pipeline();
        assert_eq!(slots[0], Slot::Type(0));
        let got = p.read(
            &slots,
            vec![Value::SimpleString("none".into()), Value::Int(7)],
            Ts(0),
        );
        assert_eq!(got[0].value, 0.0);
        assert_eq!(p.keys[0].ty, KeyType::Missing);
    }

    #[test]
    fn a_drained_queue_reports_age_zero() {
        let mut p = poller(&["queue:default"]);
        p.keys[0].spec.age = Some(AgeProbe::JsonField {
            index: -1,
            field: "enqueued_at",
        });
        p.keys[0].ty = KeyType::Missing;
        let (_, slots) = p.pipeline();
        let got = p.read(&slots, vec![Value::SimpleString("none".into())], Ts(0));
        let metrics: Vec<(Metric, f64)> = got.iter().map(|s| (s.metric, s.value)).collect();
        assert_eq!(metrics, vec![(Metric::Depth, 0.0), (Metric::Age, 0.0)]);
    }

    #[test]
    fn stream_groups_resp2_and_resp3() {
        let bs = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![Value::Array(vec![
            bs("name"),
            bs("workers"),
            bs("pending"),
            Value::Int(3),
            bs("lag"),
            Value::Int(5),
        ])]);
        assert_eq!(stream_groups(&resp2), vec![("workers".into(), 3, Some(5))]);
        let resp3 = Value::Array(vec![Value::Map(vec![
            (bs("name"), bs("g")),
            (bs("pending"), Value::Int(1)),
            (bs("lag"), Value::Nil),
        ])]);
        assert_eq!(stream_groups(&resp3), vec![("g".into(), 1, None)]);
    }
}
