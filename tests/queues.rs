//! Redis queue polling against a real `redis-server` (started per test on a free loopback
//! port): every key type, WRONGTYPE, missing keys, SCAN globs, each preset with the key layout
//! its library writes, a server that stops, restarts and freezes, and the daemon end to end
//! (stalled workers firing and resolving, `queue_source_down`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logwarden::config::Config;
use logwarden::event::Ts;
use logwarden::queues::poller::Poller;
use logwarden::queues::{Metric, Sample};

use crate::common::{self, RedisServer};

fn poller(extra: &str, redis: &RedisServer) -> Poller {
    let text = format!(
        "[[queue]]\nname = \"q\"\nurl = \"{}\"\ntimeout = \"500ms\"\n{extra}\n",
        redis.url()
    );
    let mut c = Config::from_str_named("t.toml", &text, None).expect("valid config");
    Poller::new(c.queues.remove(0))
}

fn now() -> Ts {
    Ts(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64)
}

async fn poll_ok(p: &mut Poller, con: &mut redis::aio::ConnectionManager) -> Vec<Sample> {
    p.poll(con, now()).await.expect("poll")
}

/// The value of `metric` for `key` (and stream `group`), if sampled.
fn value(samples: &[Sample], metric: Metric, key: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get("key") == Some(key))
        .map(|s| s.value)
}

fn depth(samples: &[Sample], key: &str) -> Option<f64> {
    value(samples, Metric::Depth, key)
}

fn part(samples: &[Sample], key: &str) -> Option<String> {
    samples
        .iter()
        .find(|s| s.labels.get("key") == Some(key))
        .and_then(|s| s.labels.get("part").map(str::to_string))
}

#[tokio::test]
async fn every_key_type_is_sized_in_one_poll() {
    let r = RedisServer::start();
    r.cmd(&["RPUSH", "l", "a", "b", "c"]);
    r.cmd(&["ZADD", "z", "1", "a", "2", "b"]);
    r.cmd(&["SADD", "s", "a", "b", "c", "d"]);
    r.cmd(&[
        "HSET", "h", "f1", "1", "f2", "2", "f3", "3", "f4", "4", "f5", "5",
    ]);
    for i in 0..6 {
        r.cmd(&["XADD", "x", "*", "n", &i.to_string()]);
    }
    r.cmd(&["XGROUP", "CREATE", "x", "workers", "0"]);
    // A consumer reads two entries and acks none: pending 2, lag 4.
    r.cmd(&[
        "XREADGROUP",
        "GROUP",
        "workers",
        "c1",
        "COUNT",
        "2",
        "STREAMS",
        "x",
        ">",
    ]);
    r.cmd(&["SET", "str", "not a queue"]);
    let mut p = poller(r#"keys = ["l", "z", "s", "h", "x", "missing", "str"]"#, &r);
    let mut con = p.connect().expect("lazy manager");
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(depth(&got, "l"), Some(3.0));
    assert_eq!(depth(&got, "z"), Some(2.0));
    assert_eq!(depth(&got, "s"), Some(4.0));
    assert_eq!(depth(&got, "h"), Some(5.0));
    assert_eq!(depth(&got, "x"), Some(6.0));
    assert_eq!(value(&got, Metric::Pending, "x"), Some(2.0));
    assert_eq!(value(&got, Metric::Lag, "x"), Some(4.0));
    assert_eq!(depth(&got, "missing"), Some(0.0), "a missing key is 0");
    assert_eq!(depth(&got, "str"), None, "a string has no depth");
    // A missing key that appears is sized from the next poll on.
    r.cmd(&["LPUSH", "missing", "j"]);
    let _ = poll_ok(&mut p, &mut con).await;
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(depth(&got, "missing"), Some(1.0));
    assert_eq!(p.stats.key_errors, 0);
}

#[tokio::test]
async fn wrongtype_sinks_only_its_key_and_the_key_is_retyped() {
    let r = RedisServer::start();
    r.cmd(&["RPUSH", "jobs", "a"]);
    r.cmd(&["RPUSH", "other", "a", "b"]);
    let mut p = poller(r#"keys = ["jobs", "other"]"#, &r);
    let mut con = p.connect().expect("lazy manager");
    assert_eq!(depth(&poll_ok(&mut p, &mut con).await, "jobs"), Some(1.0));
    // The key changes type behind our back: LLEN answers WRONGTYPE.
    r.cmd(&["DEL", "jobs"]);
    r.cmd(&["ZADD", "jobs", "1", "a", "2", "b", "3", "c"]);
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(depth(&got, "jobs"), None);
    assert_eq!(
        depth(&got, "other"),
        Some(2.0),
        "the other key is unaffected"
    );
    assert_eq!(p.stats.key_errors, 1);
    // Next poll asks TYPE; the one after sizes it as a zset.
    let _ = poll_ok(&mut p, &mut con).await;
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(depth(&got, "jobs"), Some(3.0));
}

#[tokio::test]
async fn scan_globs_dedupe_and_rescan_finds_new_keys() {
    let r = RedisServer::start();
    for i in 0..50 {
        r.cmd(&["RPUSH", &format!("jobs:{i}"), "x"]);
    }
    r.cmd(&["RPUSH", "unrelated", "x"]);
    // The explicit key also matches the glob: watched once, with its explicit labels.
    let mut p = poller(
        r#"keys = [{ key = "jobs:0", part = "active" }]
           scan = ["jobs:*", "jobs:1*"]
           rescan_every = 3"#,
        &r,
    );
    let mut con = p.connect().expect("lazy manager");
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(p.key_count(), 50);
    assert_eq!(got.len(), 50);
    assert_eq!(part(&got, "jobs:0").as_deref(), Some("active"));
    assert_eq!(depth(&got, "unrelated"), None);
    r.cmd(&["RPUSH", "jobs:new", "x", "y"]);
    let mut found = None;
    for _ in 0..3 {
        found = depth(&poll_ok(&mut p, &mut con).await, "jobs:new");
    }
    assert_eq!(found, Some(2.0), "picked up by the rescan every 3 polls");
    assert_eq!(p.stats.rescans, 2);
}

#[tokio::test]
async fn celery_preset_reads_kombu_layout() {
    let r = RedisServer::start();
    // kombu (kombu/transport/redis.py): a queue is a list, LPUSH to produce; priority p != 0
    // goes to `queue\x06\x16p`; bindings live in `_kombu.binding.<exchange>` with members
    // `routing_key\x06\x16pattern\x06\x16queue`; delivered-not-acked messages in the `unacked`
    // hash plus `unacked_index` zset.
    let msg = r#"{"body": "W1tdLCB7fSwgeyJjYWxsYmFja3MiOiBudWxsfV0=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "3f1c"}, "properties": {"correlation_id": "3f1c", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "9a2f"}}"#;
    r.cmd(&[
        "SADD",
        "_kombu.binding.celery",
        "celery\x06\x16\x06\x16celery",
    ]);
    r.cmd(&[
        "SADD",
        "_kombu.binding.mail",
        "emails\x06\x16\x06\x16emails",
    ]);
    for _ in 0..4 {
        r.cmd(&["LPUSH", "celery", msg]);
    }
    r.cmd(&["LPUSH", "celery\x06\x163", msg]);
    r.cmd(&["LPUSH", "celery\x06\x169", msg]);
    r.cmd(&["LPUSH", "emails", msg]);
    let unacked = format!(r#"[{msg}, "", "celery"]"#);
    r.cmd(&["HSET", "unacked", "9a2f", &unacked]);
    r.cmd(&["ZADD", "unacked_index", "1795428000", "9a2f"]);
    let mut p = poller(r#"preset = "celery""#, &r);
    let mut con = p.connect().expect("lazy manager");
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(depth(&got, "celery"), Some(4.0));
    assert_eq!(depth(&got, "celery\x06\x163"), Some(1.0));
    assert_eq!(depth(&got, "celery\x06\x169"), Some(1.0));
    assert_eq!(depth(&got, "celery\x06\x166"), Some(0.0));
    assert_eq!(
        depth(&got, "emails"),
        Some(1.0),
        "queue found through its binding"
    );
    assert_eq!(depth(&got, "unacked"), Some(1.0));
    assert_eq!(part(&got, "unacked").as_deref(), Some("active"));
    let waiting: f64 = got
        .iter()
        .filter(|s| {
            s.labels.get("queue") == Some("celery") && s.labels.get("part") == Some("waiting")
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(waiting, 6.0, "the queue plus its priority sub-queues");
}

#[tokio::test]
async fn rq_preset_reads_rq_layout_and_job_age() {
    let r = RedisServer::start();
    // RQ (rq/queue.py enqueue_job): job hash rq:job:<id>, RPUSH rq:queue:<name>, SADD
    // rq:queues; registries are zsets (rq/registry.py): rq:wip (started), rq:failed,
    // rq:scheduled, rq:deferred.
    let enqueued = SystemTime::now() - Duration::from_secs(120);
    let secs = enqueued
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let iso = Ts::from_secs(secs).rfc3339().replace(".000Z", ".000000Z");
    for id in ["j1", "j2", "j3"] {
        r.cmd(&[
            "HSET",
            &format!("rq:job:{id}"),
            "status",
            "queued",
            "origin",
            "default",
            "created_at",
            &iso,
            "enqueued_at",
            &iso,
            "description",
            "tasks.add(1, 2)",
            "data",
            "x",
            "timeout",
            "180",
        ]);
        r.cmd(&["RPUSH", "rq:queue:default", id]);
    }
    r.cmd(&["SADD", "rq:queues", "rq:queue:default", "rq:queue:high"]);
    r.cmd(&["RPUSH", "rq:queue:high", "j9"]);
    r.cmd(&["ZADD", "rq:wip:default", "1795428300", "j0:e1"]);
    r.cmd(&[
        "ZADD",
        "rq:failed:default",
        "1795428300",
        "jf1",
        "1795428301",
        "jf2",
    ]);
    r.cmd(&["ZADD", "rq:scheduled:default", "1795429000", "js"]);
    r.cmd(&["RPUSH", "rq:queue:default:intermediate", "j0"]);
    let mut p = poller(r#"preset = "rq""#, &r);
    let mut con = p.connect().expect("lazy manager");
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(depth(&got, "rq:queue:default"), Some(3.0));
    assert_eq!(
        depth(&got, "rq:queue:high"),
        Some(1.0),
        "discovered from rq:queues"
    );
    assert_eq!(depth(&got, "rq:wip:default"), Some(1.0));
    assert_eq!(part(&got, "rq:wip:default").as_deref(), Some("active"));
    assert_eq!(depth(&got, "rq:failed:default"), Some(2.0));
    assert_eq!(depth(&got, "rq:scheduled:default"), Some(1.0));
    assert_eq!(depth(&got, "rq:queue:default:intermediate"), Some(1.0));
    let age = value(&got, Metric::Age, "rq:queue:default").expect("age");
    assert!(
        (119.0..200.0).contains(&age),
        "oldest job is ~120 s old: {age}"
    );
    // The high queue's job has no hash: no age rather than a wrong one.
    assert_eq!(value(&got, Metric::Age, "rq:queue:high"), None);
}

#[tokio::test]
async fn sidekiq_preset_reads_sidekiq_layout_and_latency_both_formats() {
    let r = RedisServer::start();
    // Sidekiq (lib/sidekiq/client.rb raw_push): SADD queues <name>, LPUSH queue:<name> <json>;
    // the oldest job is at index -1. enqueued_at: Float seconds before 8.0, Integer ms since.
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let v7 = format!(
        r#"{{"retry":true,"queue":"default","class":"HardJob","args":[1],"jid":"b4a577edbccf1d805744efa9","created_at":{c},"enqueued_at":{e}}}"#,
        c = now_s - 300.0,
        e = now_s - 300.0
    );
    let v8 = format!(
        r#"{{"retry":true,"queue":"mailers","class":"MailJob","args":[],"jid":"c5b688fecddf2e916855f0ba","created_at":{c},"enqueued_at":{e}}}"#,
        c = ((now_s - 60.0) * 1000.0) as u64,
        e = ((now_s - 60.0) * 1000.0) as u64
    );
    r.cmd(&["SADD", "queues", "default", "mailers"]);
    r.cmd(&["LPUSH", "queue:default", &v7]);
    r.cmd(&["LPUSH", "queue:default", &v7.replace("b4a5", "ffff")]);
    r.cmd(&["LPUSH", "queue:mailers", &v8]);
    r.cmd(&["ZADD", "schedule", &format!("{}", now_s + 60.0), &v7]);
    r.cmd(&[
        "ZADD",
        "retry",
        &format!("{}", now_s + 30.0),
        &v7,
        &format!("{}", now_s + 31.0),
        &v8,
    ]);
    r.cmd(&["ZADD", "dead", &format!("{now_s}"), &v8]);
    let mut p = poller(r#"preset = "sidekiq""#, &r);
    let mut con = p.connect().expect("lazy manager");
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(depth(&got, "queue:default"), Some(2.0));
    assert_eq!(depth(&got, "queue:mailers"), Some(1.0));
    assert_eq!(depth(&got, "schedule"), Some(1.0));
    assert_eq!(depth(&got, "retry"), Some(2.0));
    assert_eq!(depth(&got, "dead"), Some(1.0));
    assert_eq!(part(&got, "dead").as_deref(), Some("failed"));
    let a7 = value(&got, Metric::Age, "queue:default").expect("age v7");
    let a8 = value(&got, Metric::Age, "queue:mailers").expect("age v8");
    assert!(
        (299.0..400.0).contains(&a7),
        "Sidekiq 7 float seconds: {a7}"
    );
    assert!((59.0..160.0).contains(&a8), "Sidekiq 8 integer ms: {a8}");
    // An empty queue's latency is 0, as Sidekiq::Queue#latency says.
    r.cmd(&["DEL", "queue:mailers"]);
    let _ = poll_ok(&mut p, &mut con).await; // TYPE: missing
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(depth(&got, "queue:mailers"), Some(0.0));
}

#[tokio::test]
async fn bullmq_preset_reads_bullmq_layout_and_job_age() {
    let r = RedisServer::start();
    // BullMQ (addStandardJob-*.lua): INCR bull:<q>:id, HSET bull:<q>:<id> name data opts
    // timestamp …, LPUSH bull:<q>:wait <id> (or bull:<q>:paused while paused); prioritized
    // jobs go to the bull:<q>:prioritized zset; meta holds opts.maxLenEvents.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    r.cmd(&["HSET", "bull:emails:meta", "opts.maxLenEvents", "10000"]);
    for (id, age_s) in [("1", 90u64), ("2", 30), ("3", 10)] {
        r.cmd(&["INCR", "bull:emails:id"]);
        r.cmd(&[
            "HSET",
            &format!("bull:emails:{id}"),
            "name",
            "send",
            "data",
            r#"{"to":"a@b"}"#,
            "opts",
            r#"{"attempts":0}"#,
            "timestamp",
            &(now_ms - age_s * 1000).to_string(),
            "delay",
            "0",
            "priority",
            "0",
        ]);
        r.cmd(&["LPUSH", "bull:emails:wait", id]);
    }
    r.cmd(&["ZADD", "bull:emails:prioritized", "2097152", "4"]);
    r.cmd(&["LPUSH", "bull:emails:active", "0"]);
    r.cmd(&[
        "ZADD",
        "bull:emails:delayed",
        &((now_ms + 60_000) * 4096).to_string(),
        "5",
    ]);
    r.cmd(&["ZADD", "bull:emails:failed", &now_ms.to_string(), "6"]);
    // A paused queue: BullMQ >= 5 flags `paused` in meta and keeps adding to `wait` (seen with
    // bullmq 6.7); older versions moved the jobs to the `paused` list.
    r.cmd(&[
        "HSET",
        "bull:reports:meta",
        "opts.maxLenEvents",
        "10000",
        "paused",
        "1",
    ]);
    r.cmd(&["LPUSH", "bull:reports:wait", "1", "2"]);
    r.cmd(&["HSET", "bull:old:meta", "opts.maxLenEvents", "10000"]);
    r.cmd(&["LPUSH", "bull:old:paused", "1"]);
    let mut p = poller(r#"preset = "bullmq""#, &r);
    let mut con = p.connect().expect("lazy manager");
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(depth(&got, "bull:emails:wait"), Some(3.0));
    assert_eq!(depth(&got, "bull:emails:prioritized"), Some(1.0));
    assert_eq!(
        part(&got, "bull:emails:prioritized").as_deref(),
        Some("waiting")
    );
    assert_eq!(depth(&got, "bull:emails:active"), Some(1.0));
    assert_eq!(depth(&got, "bull:emails:delayed"), Some(1.0));
    assert_eq!(depth(&got, "bull:emails:failed"), Some(1.0));
    assert_eq!(depth(&got, "bull:reports:wait"), Some(2.0));
    assert_eq!(part(&got, "bull:reports:wait").as_deref(), Some("paused"));
    assert_eq!(part(&got, "bull:emails:wait").as_deref(), Some("waiting"));
    assert_eq!(depth(&got, "bull:old:paused"), Some(1.0));
    assert_eq!(part(&got, "bull:old:paused").as_deref(), Some("paused"));
    let age = value(&got, Metric::Age, "bull:emails:wait").expect("age");
    assert!(
        (89.0..190.0).contains(&age),
        "the job at the tail is the oldest: {age}"
    );
    // Resumed: the same jobs are waiting again.
    r.cmd(&["HDEL", "bull:reports:meta", "paused"]);
    let got = poll_ok(&mut p, &mut con).await;
    assert_eq!(part(&got, "bull:reports:wait").as_deref(), Some("waiting"));
}

#[tokio::test]
async fn polling_survives_stop_restart_and_freeze() {
    let mut r = RedisServer::start();
    r.cmd(&["RPUSH", "jobs", "a"]);
    let mut p = poller(r#"keys = ["jobs"]"#, &r);
    let mut con = p.connect().expect("lazy manager");
    assert_eq!(depth(&poll_ok(&mut p, &mut con).await, "jobs"), Some(1.0));

    r.stop();
    for _ in 0..3 {
        let t = Instant::now();
        assert!(p.poll(&mut con, now()).await.is_err(), "down");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "bounded: {:?}",
            t.elapsed()
        );
    }
    r.restart();
    r.cmd(&["RPUSH", "jobs", "a", "b"]);
    let mut back = None;
    for _ in 0..20 {
        if let Ok(s) = p.poll(&mut con, now()).await {
            back = depth(&s, "jobs");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, Some(2.0), "recovers by itself after a restart");

    r.freeze();
    let t = Instant::now();
    let frozen = p.poll(&mut con, now()).await;
    assert!(frozen.is_err(), "a frozen server times out");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "within the timeout: {:?}",
        t.elapsed()
    );
    r.thaw();
    let mut back = None;
    for _ in 0..20 {
        if let Ok(s) = p.poll(&mut con, now()).await {
            back = depth(&s, "jobs");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, Some(2.0), "recovers after SIGCONT");
}

#[tokio::test]
async fn connection_is_lazy_when_redis_is_down_at_start() {
    let mut r = RedisServer::start();
    r.stop();
    let mut p = poller(r#"keys = ["jobs"]"#, &r);
    let mut con = p.connect().expect("a lazy manager needs no server");
    assert!(p.poll(&mut con, now()).await.is_err());
    r.restart();
    r.cmd(&["RPUSH", "jobs", "a"]);
    let mut ok = false;
    for _ in 0..20 {
        if p.poll(&mut con, now()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "polls once the server is up");
}

/// Lines of the daemon's stdout, read on a thread.
fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing every one of `needles`, returning it; panics at the deadline.
fn wait_for(
    rx: &mpsc::Receiver<String>,
    needles: &[&str],
    secs: u64,
    seen: &mut Vec<String>,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                seen.push(l.clone());
                if needles.iter().all(|n| l.contains(n)) {
                    return l;
                }
            }
            Err(_) => panic!(
                "no line with {needles:?} within {secs}s; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
fn daemon_stalled_workers_fire_and_resolve_and_source_down_is_reported() {
    let mut r = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("lw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[[source]]
name = "worker"
stdin = true

[[queue]]
name = "broker"
url = "{url}"
interval = "200ms"
timeout = "500ms"
down_after = "1s"
preset = "celery"
queues = ["celery"]

[[rule]]
name = "queue-not-empty"
type = "gauge"
parts = ["waiting"]
threshold = 0
for = "1s"
notify = false

[[rule]]
name = "no-jobs-processed"
type = "count"
kinds = ["processed"]
window = "2s"
op = "<"
threshold = 1
notify = false

[[rule]]
name = "stalled-workers"
type = "all"
rules = ["queue-not-empty", "no-jobs-processed"]
severity = "critical"

# Notifications at once: the test watches state changes, not grouping.
[[route]]
receivers = ["stdout"]
group_wait = "0s"
group_interval = "0s"
"#,
            url = r.url()
        ),
    )
    .expect("write config");
    r.cmd(&["LPUSH", "celery", "{}"]);
    r.cmd(&["LPUSH", "celery\x06\x166", "{}"]);
    let mut child = Command::new(common::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logwarden");
    let mut stdin = child.stdin.take().expect("stdin");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let err = lines_of(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();

    // Jobs wait and nothing is processed: stalled.
    let l = wait_for(
        &out,
        &["FIRING", "critical", "stalled-workers"],
        20,
        &mut seen,
    );
    assert!(
        l.contains("all of queue-not-empty, no-jobs-processed held"),
        "{l}"
    );
    // The alert carries the queue depths as context.
    assert!(
        l.contains("[queues: ") && l.contains("celery waiting 2"),
        "{l}"
    );

    // A worker finishes jobs: resolved.
    for _ in 0..3 {
        writeln!(
            stdin,
            "[2026-11-23 10:00:01,123: INFO/ForkPoolWorker-1] Task tasks.add[0b5e4c1a-1111-2222-3333-444455556666] succeeded in 0.01s: 3"
        )
        .expect("write stdin");
    }
    stdin.flush().expect("flush");
    wait_for(&out, &["RESOLVED", "stalled-workers"], 20, &mut seen);

    // Redis dies: queue_source_down fires after down_after, and resolves after a restart.
    r.stop();
    let l = wait_for(
        &out,
        &["FIRING", "critical", "queue_source_down"],
        20,
        &mut seen,
    );
    assert!(l.contains("source=\"broker\""), "{l}");
    std::thread::sleep(Duration::from_secs(1)); // several failed polls, logged once
    r.restart();
    wait_for(&out, &["RESOLVED", "queue_source_down"], 20, &mut seen);

    // Frozen (SIGSTOP): connected but silent; every poll times out, the daemon keeps going.
    r.freeze();
    wait_for(&out, &["FIRING", "queue_source_down"], 20, &mut seen);
    r.thaw();
    wait_for(&out, &["RESOLVED", "queue_source_down"], 20, &mut seen);

    drop(stdin); // end of input drains the daemon
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let mut log = Vec::new();
    while let Ok(l) = err.recv_timeout(Duration::from_secs(2)) {
        log.push(l);
    }
    let log = log.join("\n");
    assert_eq!(
        log.matches("redis queue source is down").count(),
        2,
        "one warning per transition (stop, freeze), not per poll:\n{log}"
    );
    assert_eq!(log.matches("reachable again").count(), 2, "{log}");
    assert!(log.contains("failed_polls"), "{log}");
}

/// Also: a config with queues and no `[[source]]` runs until SIGTERM, not until stdin ends.
#[test]
fn daemon_starts_while_redis_is_down() {
    let mut r = RedisServer::start();
    r.stop();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("lw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[queue]]\nurl = \"{}\"\ninterval = \"200ms\"\ndown_after = \"500ms\"\nkeys = [\"jobs\"]\n\n[[route]]\nreceivers = [\"stdout\"]\ngroup_wait = \"0s\"\ngroup_interval = \"0s\"\n",
            r.url()
        ),
    )
    .expect("write config");
    let mut child = Command::new(common::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn logwarden");
    let stdin = child.stdin.take().expect("stdin");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    wait_for(
        &out,
        &["FIRING", "queue_source_down", "source=\"redis\""],
        20,
        &mut seen,
    );
    r.restart();
    wait_for(&out, &["RESOLVED", "queue_source_down"], 20, &mut seen);
    // Only queues, no [[source]]: stdin is not read, so its end does not stop the daemon…
    drop(stdin);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still running"
    );
    // …a signal does.
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().expect("wait").success());
}

#[test]
fn replay_merges_a_depth_csv_with_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("depth.csv");
    let log = dir.path().join("worker.log");
    // 150 jobs waiting from 10:00 to 10:12, then drained.
    let mut rows = String::from("time,key,depth\n");
    for m in 0..=12 {
        rows.push_str(&format!("2026-11-23T10:{m:02}:00Z,llm_tasks,150\n"));
    }
    rows.push_str("2026-11-23T10:13:00Z,llm_tasks,0\nnot,a,row\n");
    std::fs::write(&csv, rows).expect("write csv");
    std::fs::write(
        &log,
        "[2026-11-23 10:00:01,123: INFO/ForkPoolWorker-1] Task tasks.add[0b5e4c1a-1111-2222-3333-444455556666] succeeded in 0.01s: 3\n",
    )
    .expect("write log");
    let cfg = dir.path().join("lw.toml");
    std::fs::write(
        &cfg,
        "[[queue]]\nurl = \"redis://127.0.0.1:1\"\nkeys = [\"llm_tasks\"]\n\n[[route]]\nreceivers = [\"stdout\"]\ngroup_wait = \"0s\"\ngroup_interval = \"0s\"\n",
    )
    .expect("write config");
    let out = Command::new(common::bin())
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--queue-csv")
        .arg(&csv)
        .arg(&log)
        .output()
        .expect("run replay");
    let stdout = common::stdout(&out);
    let stderr = common::stderr(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    // Default queue rules: stalled at 10:05 (waiting 5m, nothing processed since 10:00:01),
    // backlog at 10:10 (> 100 for 10m); both resolve when the queue drains at 10:13.
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{stdout}"))
    };
    assert!(
        find("FIRING critical stalled-workers").starts_with("2026-11-23T10:05:01"),
        "{stdout}"
    );
    assert!(
        find("FIRING warning queue-backlog").starts_with("2026-11-23T10:10:00"),
        "{stdout}"
    );
    assert!(
        find("RESOLVED warning queue-backlog").starts_with("2026-11-23T10:13:00"),
        "{stdout}"
    );
    // `all` rules are decided on the 1 s evaluation tick.
    assert!(
        find("RESOLVED critical stalled-workers").starts_with("2026-11-23T10:13:01"),
        "{stdout}"
    );
    assert!(
        stderr.contains(":16: skipped: bad time \"not\""),
        "{stderr}"
    );
    assert!(stderr.contains("14 queue samples"), "{stderr}");
}

#[test]
fn rediss_url_polls_over_tls() {
    // A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
    let dir = tempfile::tempdir().expect("temp dir");
    let d = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl is not installed (apt-get install -y openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            common::stderr(&out)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=logwarden test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.path().join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let tls_port = common::free_port();
    // Plain port for writing test data, TLS port for the daemon.
    let r = RedisServer::start_with(&[
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        d("server.crt"),
        "--tls-key-file".into(),
        d("server.key"),
        "--tls-ca-cert-file".into(),
        d("ca.crt"),
        "--tls-auth-clients".into(),
        "no".into(),
    ]);
    r.cmd(&["RPUSH", "jobs", "a", "b", "c"]);
    let cfg = dir.path().join("lw.toml");
    std::fs::write(
        &cfg,
        format!("[[queue]]\nname = \"tls\"\nurl = \"rediss://127.0.0.1:{tls_port}/0\"\nkeys = [\"jobs\"]\n"),
    )
    .expect("write config");
    // rustls-native-certs trusts SSL_CERT_FILE: our CA only.
    let out = Command::new(common::bin())
        .args(["queues", "--config"])
        .arg(&cfg)
        .env("SSL_CERT_FILE", d("ca.crt"))
        .output()
        .expect("run logwarden queues");
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stdout(&out).contains("tls\tdepth\t3{key=\"jobs\""),
        "{}",
        common::stdout(&out)
    );
    // Trusting another CA only, the certificate is rejected: TLS really verifies.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.crt",
        "-days",
        "2",
        "-subj",
        "/CN=another CA",
    ]);
    let out = Command::new(common::bin())
        .args(["queues", "--config"])
        .arg(&cfg)
        .env("SSL_CERT_FILE", d("other.crt"))
        .output()
        .expect("run logwarden queues");
    assert!(!out.status.success(), "{}", common::stdout(&out));
    assert!(
        common::stderr(&out).contains("unreachable"),
        "{}",
        common::stderr(&out)
    );
}

#[tokio::test]
async fn a_glob_matching_nothing_still_checks_the_server() {
    let mut r = RedisServer::start();
    let mut p = poller(r#"scan = ["nothing:*"]"#, &r);
    let mut con = p.connect().expect("lazy manager");
    assert_eq!(poll_ok(&mut p, &mut con).await, Vec::new());
    assert_eq!(poll_ok(&mut p, &mut con).await, Vec::new(), "PING only");
    r.stop();
    assert!(p.poll(&mut con, now()).await.is_err(), "down is down");
}
