//! Key layouts of the job libraries, so a `[[queue]]` can say `preset = "sidekiq"` instead of
//! listing keys. Every layout below is what the library itself writes; the tests in
//! `tests/queues.rs` push jobs the same way.
//!
//! | preset | key | type | `part` |
//! |---|---|---|---|
//! | celery | `{q}`, `{q}\x06\x16{1..9}` (priority sub-queues) | list | waiting |
//! | celery | `unacked` (delivered, not acked; all queues) | hash | active |
//! | rq | `rq:queue:{q}` | list | waiting (age from `rq:job:{id}` `enqueued_at`) |
//! | rq | `rq:queue:{q}:intermediate` | list | active |
//! | rq | `rq:wip:{q}` (StartedJobRegistry) | zset | active |
//! | rq | `rq:scheduled:{q}`, `rq:deferred:{q}`, `rq:failed:{q}` | zset | scheduled, deferred, failed |
//! | sidekiq | `queue:{q}` | list | waiting (age from the oldest job's `enqueued_at`) |
//! | sidekiq | `schedule`, `retry`, `dead` (all queues) | zset | scheduled, retry, failed |
//! | bullmq | `bull:{q}:wait` | list | waiting, or paused while `bull:{q}:meta` has `paused` (age from `bull:{q}:{id}` `timestamp`) |
//! | bullmq | `bull:{q}:prioritized` | zset | waiting |
//! | bullmq | `bull:{q}:paused`, `bull:{q}:active` | list | paused, active |
//! | bullmq | `bull:{q}:delayed`, `bull:{q}:waiting-children`, `bull:{q}:failed` | zset | scheduled, deferred, failed |
//!
//! Checked by hand against the libraries themselves (jobs pushed with kombu 5.7, RQ 3.0 and
//! its worker, Sidekiq 6.4, BullMQ 6.7 and its worker, then `logwarden queues`); the tests
//! write the same layouts without the libraries.
//!
//! Sources of the layouts:
//! - kombu `kombu/transport/redis.py` (Channel): queues are lists, LPUSH to produce, BRPOP to
//!   consume; a message with priority p goes to `queue + sep + p` with `sep = '\x06\x16'`
//!   (`_q_for_pri`, default `priority_steps = [0, 3, 6, 9]`; custom steps may use 1..9);
//!   `unacked_key = 'unacked'` (hash tag → message) and `unacked_index_key = 'unacked_index'`
//!   (zset tag → time); bindings in `_kombu.binding.<exchange>` sets whose members are
//!   `routing_key + sep + pattern + sep + queue`; `global_keyprefix` prefixes every key.
//! - RQ `rq/keys.py`, `rq/queue.py`, `rq/registry.py`, `rq/intermediate_queue.py` (1.x, 2.x):
//!   `rq:queues` set of queue keys, `rq:queue:<name>` list of job ids (RPUSH, LPOP: oldest at
//!   index 0), `rq:job:<id>` hash with `enqueued_at` as `%Y-%m-%dT%H:%M:%S.%fZ`, registries
//!   `rq:wip:` (started), `rq:scheduled:`, `rq:deferred:`, `rq:failed:`, `rq:finished:` zsets,
//!   and `<queue key>:intermediate` (RQ ≥ 1.16 moves a job there while a worker takes it).
//! - Sidekiq `lib/sidekiq/client.rb` (`raw_push`: SADD `queues`, LPUSH `queue:<name>`),
//!   `lib/sidekiq/api.rb` (`Queue#latency`: LINDEX -1, `enqueued_at` is Float seconds before
//!   Sidekiq 8 and Integer milliseconds since), `schedule`/`retry`/`dead` zsets.
//! - BullMQ `src/classes/queue-keys.ts` and `src/commands/addStandardJob-*.lua`: keys
//!   `<prefix>:<queue>:<type>` with prefix `bull`; a job id is LPUSHed to `wait` (or `paused`)
//!   and workers take from the right (`RPOPLPUSH`/`LMOVE` into `active`), so the oldest is at
//!   index -1; the job hash `<prefix>:<queue>:<id>` has `timestamp` (ms); `prioritized`,
//!   `delayed`, `failed`, `completed`, `waiting-children` are zsets; `meta` is a hash every
//!   queue has once a job was added (`opts.maxLenEvents`). A paused queue: BullMQ ≥ 5 sets
//!   `paused` in `meta` and keeps adding to `wait` (checked with bullmq 6.7); older versions
//!   used the `paused` list, which is polled too.

use crate::event::Labels;

use super::series_labels;

/// A library whose key layout logwarden knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Celery on the kombu Redis transport.
    Celery,
    /// RQ (Python).
    Rq,
    /// Sidekiq (Ruby).
    Sidekiq,
    /// BullMQ (Node.js).
    Bullmq,
}

impl Preset {
    /// Parses a preset name.
    pub fn parse(s: &str) -> Option<Preset> {
        match s {
            "celery" => Some(Preset::Celery),
            "rq" => Some(Preset::Rq),
            "sidekiq" => Some(Preset::Sidekiq),
            "bullmq" => Some(Preset::Bullmq),
            _ => None,
        }
    }

    /// The preset's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Celery => "celery",
            Preset::Rq => "rq",
            Preset::Sidekiq => "sidekiq",
            Preset::Bullmq => "bullmq",
        }
    }

    fn default_prefix(self) -> &'static str {
        match self {
            Preset::Bullmq => "bull",
            _ => "",
        }
    }

    /// How queue names are found when `queues` is not configured.
    pub fn discovery(self, prefix: Option<&str>) -> Discovery {
        let p = prefix.unwrap_or(self.default_prefix());
        match self {
            Preset::Celery => Discovery::Scan(format!("{p}_kombu.binding.*")),
            Preset::Rq => Discovery::Members(format!("{p}rq:queues")),
            Preset::Sidekiq => Discovery::Members(format!("{p}queues")),
            Preset::Bullmq => Discovery::Scan(format!("{p}:*:meta")),
        }
    }

    /// Queue names always watched, even before discovery finds them.
    pub fn implied_queues(self) -> &'static [&'static str] {
        match self {
            Preset::Celery => &["celery"],
            Preset::Rq => &["default"],
            Preset::Sidekiq => &["default"],
            Preset::Bullmq => &[],
        }
    }

    /// The queue name a discovered item stands for: a `rq:queues` member, a Sidekiq `queues`
    /// member, a BullMQ `meta` key. Celery bindings need their members read first
    /// ([`celery_binding_queue`]).
    pub fn queue_from(self, prefix: Option<&str>, item: &str) -> Option<String> {
        let p = prefix.unwrap_or(self.default_prefix());
        match self {
            Preset::Celery => None,
            Preset::Rq => item
                .strip_prefix(p)
                .and_then(|s| s.strip_prefix("rq:queue:"))
                .map(str::to_string),
            Preset::Sidekiq => Some(item.to_string()),
            Preset::Bullmq => item
                .strip_prefix(p)
                .and_then(|s| s.strip_prefix(':'))
                .and_then(|s| s.strip_suffix(":meta"))
                .filter(|s| !s.is_empty() && !s.contains(':'))
                .map(str::to_string),
        }
    }

    /// The keys of queue `q`.
    pub fn queue_keys(self, prefix: Option<&str>, q: &str) -> Vec<KeySpec> {
        let p = prefix.unwrap_or(self.default_prefix());
        let k = |key: String, part: &str, age: Option<AgeProbe>| KeySpec {
            labels: series_labels(q, &key, part),
            key,
            age,
            paused_flag: None,
        };
        match self {
            Preset::Celery => {
                let mut v = vec![k(format!("{p}{q}"), "waiting", None)];
                for pri in 1..=9 {
                    v.push(k(format!("{p}{q}{KOMBU_SEP}{pri}"), "waiting", None));
                }
                v
            }
            Preset::Rq => {
                let age = AgeProbe::JobHash {
                    index: 0,
                    prefix: format!("{p}rq:job:"),
                    field: "enqueued_at",
                };
                vec![
                    k(format!("{p}rq:queue:{q}"), "waiting", Some(age)),
                    k(format!("{p}rq:queue:{q}:intermediate"), "active", None),
                    k(format!("{p}rq:wip:{q}"), "active", None),
                    k(format!("{p}rq:scheduled:{q}"), "scheduled", None),
                    k(format!("{p}rq:deferred:{q}"), "deferred", None),
                    k(format!("{p}rq:failed:{q}"), "failed", None),
                ]
            }
            Preset::Sidekiq => {
                let age = AgeProbe::JsonField {
                    index: -1,
                    field: "enqueued_at",
                };
                vec![k(format!("{p}queue:{q}"), "waiting", Some(age))]
            }
            Preset::Bullmq => {
                let base = format!("{p}:{q}:");
                let age = AgeProbe::JobHash {
                    index: -1,
                    prefix: base.clone(),
                    field: "timestamp",
                };
                let mut wait = k(format!("{base}wait"), "waiting", Some(age));
                wait.paused_flag = Some(format!("{base}meta"));
                vec![
                    wait,
                    k(format!("{base}prioritized"), "waiting", None),
                    k(format!("{base}paused"), "paused", None),
                    k(format!("{base}active"), "active", None),
                    k(format!("{base}delayed"), "scheduled", None),
                    k(format!("{base}waiting-children"), "deferred", None),
                    k(format!("{base}failed"), "failed", None),
                ]
            }
        }
    }

    /// Keys shared by all queues of the library (their `queue` label is `*`).
    pub fn global_keys(self, prefix: Option<&str>) -> Vec<KeySpec> {
        let p = prefix.unwrap_or(self.default_prefix());
        let k = |key: String, part: &str| KeySpec {
            labels: series_labels("*", &key, part),
            key,
            age: None,
            paused_flag: None,
        };
        match self {
            Preset::Celery => vec![k(format!("{p}unacked"), "active")],
            Preset::Sidekiq => vec![
                k(format!("{p}schedule"), "scheduled"),
                k(format!("{p}retry"), "retry"),
                k(format!("{p}dead"), "failed"),
            ],
            Preset::Rq | Preset::Bullmq => Vec::new(),
        }
    }
}

/// kombu's separator between a queue name and its priority (`Channel.sep`).
pub const KOMBU_SEP: &str = "\x06\x16";

/// The queue a kombu binding member points at: `routing_key␆␖pattern␆␖queue`.
pub fn celery_binding_queue(member: &str) -> Option<String> {
    member
        .rsplit(KOMBU_SEP)
        .next()
        .filter(|q| !q.is_empty() && member.contains(KOMBU_SEP))
        .map(str::to_string)
}

/// How a preset finds its queue names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// SMEMBERS of a set.
    Members(String),
    /// SCAN MATCH a glob.
    Scan(String),
}

/// How to read when the oldest job of a list was enqueued, in the same pipeline as the depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgeProbe {
    /// `LINDEX key index` is a JSON job with `field` (Sidekiq).
    JsonField {
        /// List index of the oldest job.
        index: i64,
        /// Field holding the enqueue time.
        field: &'static str,
    },
    /// `LINDEX key index` is a job id; `HGET prefix+id field` holds the time (RQ, BullMQ):
    /// one small Lua script, so it stays in the same round trip.
    JobHash {
        /// List index of the oldest job.
        index: i64,
        /// Job hash key prefix.
        prefix: String,
        /// Field holding the enqueue time.
        field: &'static str,
    },
}

/// The script behind [`AgeProbe::JobHash`]: KEYS[1] the list, ARGV index, hash prefix, field.
/// Nil for an empty list (age 0); an empty string for a job without the field (no age).
pub const JOB_HASH_SCRIPT: &str = "local id = redis.call('LINDEX', KEYS[1], ARGV[1]) \
     if not id then return false end \
     return redis.call('HGET', ARGV[2] .. id, ARGV[3]) or ''";

/// A key to poll and the labels of its series.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    /// The Redis key.
    pub key: String,
    /// `queue`, `key`, `part`.
    pub labels: Labels,
    /// How to find the oldest job's age, if the layout records it.
    pub age: Option<AgeProbe>,
    /// A hash whose `paused` field, when present, makes this list's jobs `part = "paused"`
    /// (BullMQ ≥ 5 keeps a paused queue's jobs in `wait` and flags `meta`).
    pub paused_flag: Option<String>,
}

/// An enqueue time as the libraries write it, in Unix milliseconds: a number of seconds
/// (Sidekiq < 8 floats) or milliseconds (Sidekiq ≥ 8, BullMQ) told apart by magnitude, or
/// ISO 8601 text (RQ).
pub fn parse_enqueued_ms(text: &str) -> Option<f64> {
    let t = text.trim().trim_matches('"');
    if let Ok(n) = t.parse::<f64>() {
        return from_number(n);
    }
    crate::replay::parse_timestamp(t.as_bytes(), None, 1970).map(|ts| ts.0 as f64)
}

fn from_number(n: f64) -> Option<f64> {
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    // 1e11 s is the year 5138; 1e11 ms is 1973: no real enqueue time is ambiguous.
    Some(if n >= 1e11 { n } else { n * 1000.0 })
}

/// The enqueue time in a JSON job document's `field`.
pub fn json_enqueued_ms(doc: &[u8], field: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_slice(doc).ok()?;
    match v.get(field)? {
        serde_json::Value::Number(n) => n.as_f64().and_then(from_number),
        serde_json::Value::String(s) => parse_enqueued_ms(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_time_formats() {
        // Sidekiq 7: Float seconds; Sidekiq 8 and BullMQ: Integer milliseconds.
        assert_eq!(parse_enqueued_ms("1795428000.5"), Some(1_795_428_000_500.0));
        assert_eq!(
            parse_enqueued_ms("1795428000500"),
            Some(1_795_428_000_500.0)
        );
        // RQ: utcformat.
        assert_eq!(
            parse_enqueued_ms("2026-11-23T10:00:00.250000Z"),
            Some(1_795_428_000_250.0)
        );
        assert_eq!(parse_enqueued_ms("soon"), None);
        assert_eq!(
            json_enqueued_ms(
                br#"{"class":"W","enqueued_at":1795428000.0}"#,
                "enqueued_at"
            ),
            Some(1_795_428_000_000.0)
        );
        assert_eq!(
            json_enqueued_ms(br#"{"enqueued_at":1795428000123}"#, "enqueued_at"),
            Some(1_795_428_000_123.0)
        );
        assert_eq!(json_enqueued_ms(b"not json", "enqueued_at"), None);
    }

    #[test]
    fn discovery_names() {
        assert_eq!(
            Preset::Rq.queue_from(None, "rq:queue:high"),
            Some("high".into())
        );
        assert_eq!(
            Preset::Bullmq.queue_from(None, "bull:emails:meta"),
            Some("emails".into())
        );
        assert_eq!(Preset::Bullmq.queue_from(None, "bull:a:b:meta"), None);
        assert_eq!(
            celery_binding_queue("emails\x06\x16\x06\x16emails"),
            Some("emails".into())
        );
        assert_eq!(celery_binding_queue("plain"), None);
    }

    #[test]
    fn celery_priority_keys() {
        let keys = Preset::Celery.queue_keys(None, "celery");
        assert_eq!(keys.len(), 10);
        assert_eq!(keys[3].key, "celery\x06\x163");
        assert_eq!(keys[3].labels.get("part"), Some("waiting"));
        let keys = Preset::Celery.queue_keys(Some("app:"), "q");
        assert_eq!(keys[0].key, "app:q");
    }
}
