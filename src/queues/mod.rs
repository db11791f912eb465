//! Queue depth: Redis keys polled on an interval and turned into [`Sample`]s for the counters
//! stage, where they land in the same rule engine as the log events.
//!
//! ```text
//!  redis ─▶ queues::run (one task per [[queue]]) ─CounterInput::Samples/Health─▶ counters
//! ```
//!
//! - [`QueueConfig`] is one validated `[[queue]]`: a Redis URL, an interval and what to watch:
//!   explicit `keys`, `scan` globs (SCAN MATCH, never KEYS) and/or a `preset` (see
//!   [`presets`]: Celery/kombu, RQ, Sidekiq, BullMQ key layouts).
//! - [`poller`] owns the connection (a lazy `ConnectionManager`, so the daemon starts while
//!   Redis is down) and does one pipelined round trip per poll. Key types are learnt by a
//!   `TYPE` pipeline at (re)scan time; a key that changed type is re-typed in the next poll.
//! - [`csv`] reads a recorded depth series (`time,key,depth`) for `logwarden replay`.
//!
//! The poller never blocks the rest of the daemon: every call has a timeout, failures are
//! reported as health transitions (logged once per transition) and polling retries on its
//! next tick.

pub mod csv;
pub mod poller;
pub mod presets;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::event::{Labels, Ts};

pub use poller::run;

/// What a sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Jobs in the key (LLEN, ZCARD, SCARD, XLEN, HLEN; 0 for a missing key).
    Depth,
    /// Age in seconds of the oldest waiting job, where the layout records when it was enqueued
    /// (Sidekiq, RQ, BullMQ).
    Age,
    /// Entries delivered to a stream consumer group but not acknowledged (`XINFO GROUPS`).
    Pending,
    /// Entries of a stream not yet delivered to a consumer group (`XINFO GROUPS` lag, Redis 7).
    Lag,
}

impl Metric {
    /// Lower-case name, as written in rules (`metric = "depth"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Depth => "depth",
            Metric::Age => "age",
            Metric::Pending => "pending",
            Metric::Lag => "lag",
        }
    }
}

/// One measured value of one series (a key, or a stream's consumer group).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `queue` (the application's queue name), `key` (the Redis key), `part` (`waiting`,
    /// `active`, `scheduled`, `retry`, `failed`, `paused`, `deferred`), and `group` for stream
    /// consumer-group metrics.
    pub labels: Labels,
    /// What is measured.
    pub metric: Metric,
    /// The value.
    pub value: f64,
}

/// The samples of one poll of one `[[queue]]` (or of one time step of a replayed CSV).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleBatch {
    /// The `[[queue]]` name (or the CSV file's name in replay), used like an event's source.
    pub source: Arc<str>,
    /// When the poll was made.
    pub at: Ts,
    /// The values.
    pub samples: Vec<Sample>,
    /// True when the batch holds every series of `source` (a poll): series of the source that
    /// are not in it are gone. False for replayed CSV rows, which update only their own series.
    pub complete: bool,
}

/// A change of a queue source's reachability, sent once per transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The `[[queue]]` name.
    pub source: Arc<str>,
    /// Polling works (true) or fails (false).
    pub up: bool,
    /// When the transition happened (the first failed or first good poll).
    pub at: Ts,
    /// How long it must stay down before `queue_source_down` fires.
    pub down_after: Duration,
    /// The error of the first failed poll.
    pub error: Option<String>,
}

/// Label names on samples.
pub mod label {
    /// The application's queue name (`default`, `celery`, `emails`).
    pub const QUEUE: &str = "queue";
    /// The Redis key.
    pub const KEY: &str = "key";
    /// The role of the key in its library's layout.
    pub const PART: &str = "part";
    /// A stream consumer group.
    pub const GROUP: &str = "group";
}

/// Builds the `{queue, key, part}` labels of a series.
pub fn series_labels(queue: &str, key: &str, part: &str) -> Labels {
    Labels::from_pairs([
        (label::QUEUE, queue),
        (label::KEY, key),
        (label::PART, part),
    ])
}

/// `part` values: the role of a key whatever library wrote it.
pub const PARTS: &[&str] = &[
    "waiting",
    "paused",
    "active",
    "scheduled",
    "deferred",
    "retry",
    "failed",
    "other",
];

/// A key to watch, as written in `keys = [...]`: a name, or a table with its labels.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawKey {
    /// `"llm_tasks"`: `queue` = the key, `part` = `waiting`.
    Name(String),
    /// `{ key = "llm_tasks:processing", queue = "llm_tasks", part = "active" }`.
    Table(RawKeyTable),
}

/// The table form of a key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyTable {
    key: String,
    queue: Option<String>,
    part: Option<String>,
}

/// One `[[queue]]` as written in TOML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    name: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    #[serde(default, with = "crate::config::opt_duration")]
    interval: Option<Duration>,
    #[serde(default, with = "crate::config::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, with = "crate::config::opt_duration")]
    connect_timeout: Option<Duration>,
    rescan_every: Option<u32>,
    #[serde(default, with = "crate::config::opt_duration")]
    down_after: Option<Duration>,
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    scan: Vec<String>,
    scan_part: Option<String>,
    preset: Option<String>,
    queues: Option<Vec<String>>,
    prefix: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// An explicit key with its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyConfig {
    /// The Redis key.
    pub key: String,
    /// `queue` label. Default: the key.
    pub queue: String,
    /// `part` label. Default: `waiting`.
    pub part: String,
}

/// One validated `[[queue]]`.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Name in samples (`source`), alerts and logs. Default: the preset's name, else `redis`.
    pub name: Arc<str>,
    /// `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS) or `unix:///path`.
    pub url: String,
    /// Poll interval. Default: 5s.
    pub interval: Duration,
    /// Deadline of one poll (and of each Redis response). Default: 2s.
    pub timeout: Duration,
    /// Deadline of one connection attempt. Default: 1s.
    pub connect_timeout: Duration,
    /// SCAN globs and preset discovery run again every this many polls. Default: 12.
    pub rescan_every: u32,
    /// `queue_source_down` fires once polling has failed for this long. Default: 30s.
    pub down_after: Duration,
    /// Explicit keys.
    pub keys: Vec<KeyConfig>,
    /// SCAN MATCH globs.
    pub scan: Vec<String>,
    /// `part` of keys found by `scan`. Default: `waiting`.
    pub scan_part: String,
    /// A library's key layout.
    pub preset: Option<presets::Preset>,
    /// The preset's queue names; `None` = discover them at every rescan.
    pub queues: Option<Vec<String>>,
    /// Key prefix of the preset (kombu `global_keyprefix`, a Sidekiq namespace `ns:`, BullMQ's
    /// `prefix`). Default: none, `bull` for BullMQ.
    pub prefix: Option<String>,
    /// Static labels added to every sample.
    pub labels: Labels,
    /// The URL was written in the config file (not `url_env`) and carries a password.
    pub password_in_config: bool,
}

impl QueueConfig {
    /// The URL with any password replaced by `***`, for logs and messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        None => url.to_string(),
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            let sep = if rest[..at].contains(':') {
                ":***"
            } else {
                "***"
            };
            let user = if sep == "***" { "" } else { user };
            format!("{}{user}{sep}{}", &url[..scheme_end], &rest[at..])
        }
    }
}

/// Validates `[[queue]]` number `i`; errors are `(field path, message)`.
pub fn validate(i: usize, q: RawQueue) -> Result<QueueConfig, (String, String)> {
    let preset = match q.preset.as_deref() {
        None => None,
        Some(p) => Some(presets::Preset::parse(p).ok_or_else(|| {
            (
                at_field(i, &q.name, "preset"),
                format!(
                    "unknown preset {p:?} (expected \"celery\", \"rq\", \"sidekiq\" or \"bullmq\")"
                ),
            )
        })?),
    };
    let name = q
        .name
        .clone()
        .unwrap_or_else(|| preset.map_or("redis", |p| p.as_str()).to_string());
    let field = |f: &str| at_field(i, &q.name, f);
    if name.trim().is_empty() {
        return Err((field("name"), "must not be empty".into()));
    }
    let url_in_config = q.url.is_some();
    let url = match (q.url, q.url_env) {
        (Some(u), None) => u,
        (None, Some(var)) => std::env::var(&var).map_err(|_| {
            (
                field("url_env"),
                format!("environment variable {var:?} is not set"),
            )
        })?,
        (Some(_), Some(_)) => {
            return Err((field("url"), "set either url or url_env, not both".into()))
        }
        (None, None) => {
            return Err((
                field("url"),
                "is required, e.g. url = \"redis://127.0.0.1:6379/0\"".into(),
            ))
        }
    };
    let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok {
        return Err((
            field("url"),
            format!(
                "invalid Redis URL {:?}: expected redis://, rediss:// or unix://",
                redact_url(&url)
            ),
        ));
    }
    if let Err(e) = redis::Client::open(url.as_str()) {
        return Err((
            field("url"),
            format!("invalid Redis URL {:?}: {e}", redact_url(&url)),
        ));
    }
    let dur = |f: &str, v: Option<Duration>, d: Duration| -> Result<Duration, (String, String)> {
        match v.unwrap_or(d) {
            z if z.is_zero() => Err((field(f), "must be longer than 0s".into())),
            v => Ok(v),
        }
    };
    let interval = dur("interval", q.interval, Duration::from_secs(5))?;
    let timeout = dur("timeout", q.timeout, Duration::from_secs(2))?;
    let connect_timeout = dur("connect_timeout", q.connect_timeout, Duration::from_secs(1))?;
    let down_after = q.down_after.unwrap_or(Duration::from_secs(30));
    let rescan_every = match q.rescan_every.unwrap_or(12) {
        0 => return Err((field("rescan_every"), "must be at least 1, got 0".into())),
        n => n,
    };
    let part = |f: &str, p: Option<String>| -> Result<String, (String, String)> {
        match p {
            None => Ok("waiting".into()),
            Some(p) if PARTS.contains(&p.as_str()) => Ok(p),
            Some(p) => Err((
                field(f),
                format!("unknown part {p:?} (expected one of {})", PARTS.join(", ")),
            )),
        }
    };
    let mut keys = Vec::new();
    for (k, raw) in q.keys.into_iter().enumerate() {
        let (key, queue, p) = match raw {
            RawKey::Name(key) => (key, None, None),
            RawKey::Table(t) => (t.key, t.queue, t.part),
        };
        if key.is_empty() {
            return Err((field(&format!("keys[{k}]")), "empty key".into()));
        }
        keys.push(KeyConfig {
            queue: queue.unwrap_or_else(|| key.clone()),
            part: part(&format!("keys[{k}].part"), p)?,
            key,
        });
    }
    for (k, g) in q.scan.iter().enumerate() {
        if g.is_empty() {
            return Err((field(&format!("scan[{k}]")), "empty glob".into()));
        }
    }
    let scan_part = part("scan_part", q.scan_part)?;
    if preset.is_none() {
        for (f, set) in [
            ("queues", q.queues.is_some()),
            ("prefix", q.prefix.is_some()),
        ] {
            if set {
                return Err((field(f), "only applies with a preset".into()));
            }
        }
    }
    if keys.is_empty() && q.scan.is_empty() && preset.is_none() {
        return Err((
            at_field(i, &q.name, ""),
            "needs keys = [...], scan = [\"glob\"] or preset = \"celery\"|\"rq\"|\"sidekiq\"|\"bullmq\""
                .into(),
        ));
    }
    for k in q.labels.keys() {
        if !crate::config::valid_label_name(k)
            || ["queue", "key", "part", "group"].contains(&k.as_str())
        {
            return Err((
                field("labels"),
                format!("invalid or reserved label name {k:?}"),
            ));
        }
    }
    Ok(QueueConfig {
        name: Arc::from(name.as_str()),
        password_in_config: url_in_config && redact_url(&url) != url,
        url,
        interval,
        timeout,
        connect_timeout,
        rescan_every,
        down_after,
        keys,
        scan: q.scan,
        scan_part,
        preset,
        queues: q.queues,
        prefix: q.prefix,
        labels: Labels::from_pairs(q.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    })
}

fn at_field(i: usize, name: &Option<String>, f: &str) -> String {
    let at = match name {
        Some(n) => format!("queue[{i}] {n:?}"),
        None => format!("queue[{i}]"),
    };
    if f.is_empty() {
        at
    } else {
        format!("{at}.{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawQueue {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://:s3cret@h:6379/1"),
            "redis://:***@h:6379/1"
        );
        assert_eq!(redact_url("rediss://u:p@h/0"), "rediss://u:***@h/0");
        assert_eq!(redact_url("redis://tok@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn defaults_and_key_forms() {
        let q = validate(
            0,
            raw(r#"url = "redis://127.0.0.1:6379/2"
                   keys = ["llm_tasks", { key = "llm_tasks:processing", part = "active", queue = "llm_tasks" }]"#),
        )
        .unwrap();
        assert_eq!(q.name.as_ref(), "redis");
        assert_eq!(q.interval, Duration::from_secs(5));
        assert_eq!(q.rescan_every, 12);
        assert_eq!(q.down_after, Duration::from_secs(30));
        assert_eq!(q.keys[0].part, "waiting");
        assert_eq!(q.keys[1].queue, "llm_tasks");
        assert_eq!(q.keys[1].part, "active");
    }

    #[test]
    fn errors_name_field_and_value() {
        let e = validate(
            0,
            raw(r#"url = "http://x"
                                  keys = ["a"]"#),
        )
        .unwrap_err();
        assert_eq!(e.0, "queue[0].url");
        assert!(e.1.contains("\"http://x\""), "{}", e.1);
        let e = validate(
            1,
            raw(r#"name = "q"
                                  url = "redis://h"
                                  preset = "resque""#),
        )
        .unwrap_err();
        assert_eq!(e.0, "queue[1] \"q\".preset");
        assert!(e.1.contains("\"resque\""));
        let e = validate(0, raw(r#"url = "redis://h""#)).unwrap_err();
        assert!(e.1.contains("needs keys"), "{}", e.1);
        let e = validate(
            0,
            raw(r#"url = "redis://h"
                                  keys = [{ key = "a", part = "busy" }]"#),
        )
        .unwrap_err();
        assert_eq!(e.0, "queue[0].keys[0].part");
        let e = validate(
            0,
            raw(r#"url = "redis://:pw@h"
                                  interval = "0s"
                                  keys = ["a"]"#),
        )
        .unwrap_err();
        assert_eq!(e.0, "queue[0].interval");
    }
}
