//! The notification part of the config: `[notify]`, `[[receiver]]`, `[[route]]` and
//! `[[inhibit]]`, parsed into `Raw*` structs and validated here, so `config.rs` only calls
//! [`validate`].
//!
//! Secrets (webhook URLs, SMTP passwords) are read from an environment variable or a file at
//! load time and held in [`Secret`], whose `Debug` and `Display` show where the value came
//! from, never the value. No error message quotes a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::config::{opt_duration, ConfigError};
use crate::rules::{self, Severity};

// ---------------------------------------------------------------------------------------------
// Raw form

/// `[notify]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    hostname: Option<String>,
    #[serde(default)]
    redact: Vec<String>,
    evidence_lines: Option<usize>,
    send_resolved: Option<bool>,
    #[serde(default, with = "opt_duration")]
    backfill_wait: Option<Duration>,
    history: Option<usize>,
}

/// `[[receiver]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReceiver {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    format: Option<String>,
    #[serde(default)]
    severities: Vec<String>,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<String>,
    blocks: Option<bool>,
    mode: Option<String>,
    tls: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    rate_limit: Option<String>,
    burst: Option<u32>,
    #[serde(default, with = "opt_duration")]
    digest_wait: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    timeout: Option<Duration>,
    max_attempts: Option<u32>,
    #[serde(default, with = "opt_duration")]
    repeat_interval: Option<Duration>,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    receivers: Vec<String>,
    #[serde(default)]
    severities: Vec<String>,
    #[serde(default, rename = "match")]
    matchers: BTreeMap<String, String>,
    group_by: Option<Vec<String>>,
    #[serde(default, with = "opt_duration")]
    group_wait: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    group_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    repeat_interval: Option<Duration>,
    #[serde(default, rename = "continue")]
    cont: bool,
}

/// `[[inhibit]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInhibit {
    source_severity: Option<String>,
    target_severity: Option<String>,
    #[serde(default)]
    equal: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated form

/// A secret value and where it came from. Shows only the origin when printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    origin: String,
}

impl Secret {
    /// A secret with a description of its origin (`env SLACK_URL`, `file /etc/x`).
    pub fn new(value: impl Into<String>, origin: impl Into<String>) -> Secret {
        Secret {
            value: value.into(),
            origin: origin.into(),
        }
    }

    /// The value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// True when the value was written in the config file itself (not `_env`/`_file`).
    pub fn in_config_file(&self) -> bool {
        self.origin == IN_CONFIG_FILE
    }
}

/// The origin of a secret written as a plain value in the config file.
const IN_CONFIG_FILE: &str = "the config file";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(from {})", self.origin)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret from {}>", self.origin)
    }
}

/// Output format of the stdout receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One readable line per alert.
    Text,
    /// One JSON object per alert.
    Json,
}

/// Transport security of an email receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (`smtps://`, port 465).
    Implicit,
    /// STARTTLS, required: no downgrade (`smtp://`, port 587).
    StartTls,
    /// No TLS: only for a relay on the same host or network (`tls = "none"`).
    None,
}

/// How a webhook receiver shapes its POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookMode {
    /// Our JSON: `{"receiver", "status", "alerts": [...]}`.
    Json,
    /// Alertmanager's `POST /api/v2/alerts` array.
    Alertmanager,
}

/// Receiver types.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    /// Standard output.
    Stdout {
        /// Text or JSON.
        format: Format,
    },
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL.
        url: Secret,
        /// Also send Block Kit blocks (text is always set).
        blocks: bool,
    },
    /// SMTP email.
    Email {
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// Transport security.
        tls: Tls,
        /// AUTH user.
        username: Option<String>,
        /// AUTH password.
        password: Option<Secret>,
        /// Sender address.
        from: String,
        /// Recipients.
        to: Vec<String>,
    },
    /// A generic JSON webhook or Alertmanager.
    Webhook {
        /// Target URL (for Alertmanager, the server's base URL).
        url: Secret,
        /// Body shape.
        mode: WebhookMode,
    },
}

impl ReceiverKind {
    /// The receiver's secrets, by field name.
    pub fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        match self {
            ReceiverKind::Stdout { .. } => Vec::new(),
            ReceiverKind::Slack { url, .. } | ReceiverKind::Webhook { url, .. } => {
                vec![("url", url)]
            }
            ReceiverKind::Email { password, .. } => {
                password.iter().map(|p| ("password", p)).collect()
            }
        }
    }

    /// `stdout`, `slack`, `email` or `webhook`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ReceiverKind::Stdout { .. } => "stdout",
            ReceiverKind::Slack { .. } => "slack",
            ReceiverKind::Email { .. } => "email",
            ReceiverKind::Webhook { .. } => "webhook",
        }
    }
}

/// A GCRA rate limit: `burst` messages at once, then one per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Time to earn one message.
    pub period: Duration,
    /// Messages allowed back to back.
    pub burst: u32,
}

/// A validated `[[receiver]]`. Equal when every setting and secret value is equal: a
/// reload restarts the receiver's worker only when it is not.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverConfig {
    /// Name, for logs, routes and history.
    pub name: String,
    /// What it is.
    pub kind: ReceiverKind,
    /// Severities it gets; empty = all.
    pub severities: Vec<Severity>,
    /// Message rate limit (`None` = unlimited; default for slack 1/s burst 3, email 1/min
    /// burst 5, webhook 10/s burst 20, stdout unlimited).
    pub rate: Option<RateLimit>,
    /// How long held-back messages collect before one digest goes out. Default: 30s.
    pub digest_wait: Duration,
    /// Deadline of one delivery attempt, connect to answer. Default: 10s (email 30s).
    pub timeout: Duration,
    /// Attempts before a notification is recorded as failed. Default: 5.
    pub max_attempts: u32,
    /// Overrides the route's repeat interval for this receiver (Alertmanager needs firing
    /// alerts re-sent within its resolve timeout: default 1m in that mode).
    pub repeat_interval: Option<Duration>,
}

impl ReceiverConfig {
    /// The default receiver: text on stdout.
    pub fn stdout(format: Format) -> ReceiverConfig {
        ReceiverConfig {
            name: "stdout".into(),
            kind: ReceiverKind::Stdout { format },
            severities: Vec::new(),
            rate: None,
            digest_wait: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            max_attempts: 1,
            repeat_interval: None,
        }
    }
}

/// A validated `[[route]]`: which alerts go to which receivers, and how they are grouped.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Receiver indexes.
    pub receivers: Vec<usize>,
    /// Severities it takes; empty = all.
    pub severities: Vec<Severity>,
    /// Label regexes (anchored) that must all match; `rule` matches the rule name.
    pub matchers: Vec<(String, Regex)>,
    /// Labels that split alerts into groups, one message per group. `rule` is the rule name.
    /// Default: `["rule"]`.
    pub group_by: Vec<String>,
    /// Wait before the first message of a new group, to collect its siblings. Default: 10s.
    pub group_wait: Duration,
    /// Least time between two messages of one group. Default: 1m.
    pub group_interval: Duration,
    /// Re-send a still-firing alert after this long; default by severity (critical 1h,
    /// warning 4h, info 24h).
    pub repeat_interval: Option<Duration>,
    /// Keep matching later routes after this one matched.
    pub cont: bool,
}

impl RouteConfig {
    /// The route used when none is configured: everything to every receiver.
    pub fn catch_all(receivers: usize) -> RouteConfig {
        RouteConfig {
            receivers: (0..receivers).collect(),
            severities: Vec::new(),
            matchers: Vec::new(),
            group_by: vec!["rule".into()],
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat_interval: None,
            cont: false,
        }
    }
}

/// Equal when every setting is; matchers compare by their regex text.
impl PartialEq for RouteConfig {
    fn eq(&self, o: &RouteConfig) -> bool {
        self.receivers == o.receivers
            && self.severities == o.severities
            && self.matcher_texts().eq(o.matcher_texts())
            && self.group_by == o.group_by
            && self.group_wait == o.group_wait
            && self.group_interval == o.group_interval
            && self.repeat_interval == o.repeat_interval
            && self.cont == o.cont
    }
}

impl RouteConfig {
    /// `(label, regex text)` of each matcher.
    pub fn matcher_texts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.matchers.iter().map(|(l, r)| (l.as_str(), r.as_str()))
    }
}

fn regex_texts<'a>(res: impl Iterator<Item = &'a Regex>) -> impl Iterator<Item = &'a str> {
    res.map(Regex::as_str)
}

/// A validated `[[inhibit]]`: a firing `source` alert mutes `target` alerts that have the
/// same values for `equal`.
#[derive(Debug, Clone, PartialEq)]
pub struct InhibitConfig {
    /// Severity that mutes. Default: critical.
    pub source: Severity,
    /// Severity that is muted. Default: warning.
    pub target: Severity,
    /// Labels that must be equal (a label missing on both counts as equal).
    pub equal: Vec<String>,
}

/// The validated notification config.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Receivers, never empty (default: text on stdout).
    pub receivers: Vec<ReceiverConfig>,
    /// Routes, never empty (default: one catch-all).
    pub routes: Vec<RouteConfig>,
    /// Inhibitions.
    pub inhibits: Vec<InhibitConfig>,
    /// Host name shown in messages. Default: the system's.
    pub hostname: String,
    /// Redaction regexes applied to evidence lines: the built-in ones, then the user's.
    pub redact: Vec<Regex>,
    /// Evidence lines shown from the start and from the end. Default: 3.
    pub evidence_lines: usize,
    /// Send resolved notices. Default: true.
    pub send_resolved: bool,
    /// A backfill summary goes out this long after the last alert raised by backfilled
    /// lines. Default: 5s.
    pub backfill_wait: Duration,
    /// Notification log entries kept. Default: 500.
    pub history: usize,
    /// Receivers came from the config (false: the default stdout receiver).
    pub configured: bool,
}

/// Equal when every setting and secret value is equal (a reload compares the old and new
/// config with this; `Debug` would miss a rotated secret, which it does not print).
impl PartialEq for NotifyConfig {
    fn eq(&self, o: &NotifyConfig) -> bool {
        self.receivers == o.receivers
            && self.routes == o.routes
            && self.inhibits == o.inhibits
            && self.hostname == o.hostname
            && regex_texts(self.redact.iter()).eq(regex_texts(o.redact.iter()))
            && self.evidence_lines == o.evidence_lines
            && self.send_resolved == o.send_resolved
            && self.backfill_wait == o.backfill_wait
            && self.history == o.history
            && self.configured == o.configured
    }
}

/// Secrets that would otherwise reach a chat channel: `password=…`, `token: …`,
/// `Authorization: Bearer …`, `user:pass@` in URLs, AWS access keys, Slack tokens.
pub const BUILTIN_REDACT: &[&str] = &[
    r#"(?i)(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)["']?\s*[:=]\s*["']?(?P<secret>[^\s"',;&]+)"#,
    r"(?i)authorization:\s*(?:bearer|basic)\s+(?P<secret>\S+)",
    r"://[^/\s:@]+:(?P<secret>[^/\s@]+)@",
    r"\b(?P<secret>AKIA[0-9A-Z]{16})\b",
    r"\b(?P<secret>xox[abprs]-[0-9A-Za-z-]{10,})\b",
    r"(?P<secret>https://hooks\.slack\.com/services/\S+)",
];

impl NotifyConfig {
    /// Defaults: one stdout receiver, one catch-all route.
    pub fn default_stdout() -> NotifyConfig {
        NotifyConfig {
            receivers: vec![ReceiverConfig::stdout(Format::Text)],
            routes: vec![RouteConfig::catch_all(1)],
            inhibits: Vec::new(),
            hostname: system_hostname(),
            redact: BUILTIN_REDACT
                .iter()
                .map(|r| Regex::new(r).expect("built-in redaction regex"))
                .collect(),
            evidence_lines: 3,
            send_resolved: true,
            backfill_wait: Duration::from_secs(5),
            history: 500,
            configured: false,
        }
    }

    /// The repeat interval for an alert of `sev` on `route` delivered to `receiver`.
    pub fn repeat_for(&self, route: usize, receiver: usize, sev: Severity) -> Duration {
        if let Some(d) = self.receivers[receiver].repeat_interval {
            return d;
        }
        self.routes[route].repeat_interval.unwrap_or(match sev {
            Severity::Critical => Duration::from_secs(3600),
            Severity::Warning => Duration::from_secs(4 * 3600),
            Severity::Info => Duration::from_secs(24 * 3600),
        })
    }
}

/// The machine's host name (`/proc/sys/kernel/hostname`, `$HOSTNAME`, or `localhost`).
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

type Inv<'a> = &'a dyn Fn(String, String) -> ConfigError;

/// Validates the notification sections. `env` looks up environment variables (injected so
/// tests do not mutate the process environment).
pub fn validate(
    notify: RawNotify,
    receivers: Vec<RawReceiver>,
    routes: Vec<RawRoute>,
    inhibits: Vec<RawInhibit>,
    env: &dyn Fn(&str) -> Option<String>,
    offline: bool,
    inv: Inv<'_>,
) -> Result<NotifyConfig, ConfigError> {
    // Offline (replay): a missing secret becomes a placeholder; nothing is ever sent.
    let placeholder = |k: &str| {
        env(k).or_else(|| offline.then(|| "http://secret-not-loaded.invalid/".to_string()))
    };
    let env: &dyn Fn(&str) -> Option<String> = &placeholder;
    let mut out = NotifyConfig::default_stdout();
    if let Some(h) = notify.hostname {
        if h.trim().is_empty() || h.chars().any(char::is_control) {
            return Err(inv(
                "notify.hostname".into(),
                format!("must be a non-empty name without control characters, got {h:?}"),
            ));
        }
        out.hostname = h;
    }
    for (i, r) in notify.redact.iter().enumerate() {
        let re = Regex::new(r).map_err(|e| {
            inv(
                format!("notify.redact[{i}]"),
                format!("invalid regex {r:?}: {e}"),
            )
        })?;
        out.redact.push(re);
    }
    out.evidence_lines = notify.evidence_lines.unwrap_or(3).min(20);
    out.send_resolved = notify.send_resolved.unwrap_or(true);
    out.backfill_wait = notify.backfill_wait.unwrap_or(out.backfill_wait);
    out.history = notify.history.unwrap_or(500).max(1);

    if !receivers.is_empty() {
        out.configured = true;
        out.receivers.clear();
        for (i, r) in receivers.into_iter().enumerate() {
            let rc = receiver(i, r, env, offline, inv)?;
            if out.receivers.iter().any(|o| o.name == rc.name) {
                return Err(inv(
                    format!("receiver[{i}].name"),
                    format!("duplicate receiver name {:?}", rc.name),
                ));
            }
            out.receivers.push(rc);
        }
    }
    if routes.is_empty() {
        out.routes = vec![RouteConfig::catch_all(out.receivers.len())];
    } else {
        out.routes.clear();
        for (i, r) in routes.into_iter().enumerate() {
            out.routes.push(route(i, r, &out.receivers, inv)?);
        }
    }
    for (i, r) in inhibits.into_iter().enumerate() {
        let at = format!("inhibit[{i}]");
        let sev = |s: Option<String>, field: &str, d: Severity| match s {
            None => Ok(d),
            Some(s) => Severity::parse(&s)
                .ok_or_else(|| inv(format!("{at}.{field}"), rules::severity_msg(&s))),
        };
        let source = sev(r.source_severity, "source_severity", Severity::Critical)?;
        let target = sev(r.target_severity, "target_severity", Severity::Warning)?;
        if source <= target {
            return Err(inv(
                at,
                format!(
                    "source_severity ({}) must be more severe than target_severity ({})",
                    source.as_str(),
                    target.as_str()
                ),
            ));
        }
        out.inhibits.push(InhibitConfig {
            source,
            target,
            equal: r.equal,
        });
    }
    Ok(out)
}

fn severities(at: &str, list: &[String], inv: Inv<'_>) -> Result<Vec<Severity>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(j, s)| {
            Severity::parse(s)
                .ok_or_else(|| inv(format!("{at}.severities[{j}]"), rules::severity_msg(s)))
        })
        .collect()
}

/// Reads a secret from `<field>_env` or `<field>_file` (or a plain value when allowed).
fn secret(
    at: &str,
    field: &str,
    (plain, env_name, file): (Option<String>, Option<String>, Option<String>),
    env: &dyn Fn(&str) -> Option<String>,
    offline: bool,
    inv: Inv<'_>,
) -> Result<Option<Secret>, ConfigError> {
    let set = [plain.is_some(), env_name.is_some(), file.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        return Err(inv(
            format!("{at}.{field}"),
            format!("set only one of {field}, {field}_env and {field}_file"),
        ));
    }
    if let Some(v) = plain {
        return Ok(Some(Secret::new(v, IN_CONFIG_FILE)));
    }
    if let Some(name) = env_name {
        return match env(&name) {
            Some(v) if !v.trim().is_empty() => {
                Ok(Some(Secret::new(v.trim(), format!("env {name}"))))
            }
            _ => Err(inv(
                format!("{at}.{field}_env"),
                format!("environment variable {name:?} is not set or empty"),
            )),
        };
    }
    if let Some(path) = file {
        if offline && !Path::new(&path).exists() {
            return Ok(Some(Secret::new(
                "http://secret-not-loaded.invalid/",
                format!("file {path} (not loaded)"),
            )));
        }
        let v = std::fs::read_to_string(&path).map_err(|e| {
            inv(
                format!("{at}.{field}_file"),
                format!("cannot read {path:?}: {e}"),
            )
        })?;
        warn_if_world_readable(&path);
        if v.trim().is_empty() {
            return Err(inv(
                format!("{at}.{field}_file"),
                format!("{path:?} is empty"),
            ));
        }
        return Ok(Some(Secret::new(v.trim(), format!("file {path}"))));
    }
    Ok(None)
}

fn warn_if_world_readable(path: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                file = path,
                "secret file is readable by every user; chmod o-r it"
            );
        }
    }
}

fn http_url(at: &str, field: &str, s: &Secret, inv: Inv<'_>) -> Result<(), ConfigError> {
    match reqwest::Url::parse(s.expose()) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        _ => Err(inv(
            format!("{at}.{field}"),
            format!("the value from {} is not an http(s) URL", s.origin),
        )),
    }
}

fn receiver(
    i: usize,
    r: RawReceiver,
    env: &dyn Fn(&str) -> Option<String>,
    offline: bool,
    inv: Inv<'_>,
) -> Result<ReceiverConfig, ConfigError> {
    let at = format!("receiver[{i}] {:?}", r.name);
    if r.name.trim().is_empty() {
        return Err(inv(
            format!("receiver[{i}].name"),
            "must not be empty".into(),
        ));
    }
    let only = |field: &str, set: bool, types: &str| {
        if set {
            Err(inv(
                format!("{at}.{field}"),
                format!("only valid for type {types}, not {:?}", r.kind),
            ))
        } else {
            Ok(())
        }
    };
    let kind = match r.kind.as_str() {
        "stdout" => {
            only("url", r.url.is_some() || r.url_env.is_some() || r.url_file.is_some(), "slack, webhook or email")?;
            ReceiverKind::Stdout {
                format: match r.format.as_deref() {
                    None | Some("text") => Format::Text,
                    Some("json") => Format::Json,
                    Some(other) => {
                        return Err(inv(
                            format!("{at}.format"),
                            format!("unknown format {other:?} (expected \"text\" or \"json\")"),
                        ))
                    }
                },
            }
        }
        "slack" | "webhook" => {
            only("format", r.format.is_some(), "stdout")?;
            if r.kind == "slack" && r.url.is_some() {
                return Err(inv(
                    format!("{at}.url"),
                    "a Slack webhook URL is a secret: use url_env or url_file".into(),
                ));
            }
            let url = secret(&at, "url", (r.url, r.url_env, r.url_file), env, offline, inv)?
                .ok_or_else(|| inv(format!("{at}.url_env"), "needs url_env or url_file".into()))?;
            http_url(&at, "url", &url, inv)?;
            if r.kind == "slack" {
                only("mode", r.mode.is_some(), "webhook")?;
                ReceiverKind::Slack {
                    url,
                    blocks: r.blocks.unwrap_or(false),
                }
            } else {
                only("blocks", r.blocks.is_some(), "slack")?;
                let mode = match r.mode.as_deref() {
                    None | Some("json") => WebhookMode::Json,
                    Some("alertmanager") => WebhookMode::Alertmanager,
                    Some(o) => {
                        return Err(inv(
                            format!("{at}.mode"),
                            format!("unknown mode {o:?} (expected \"json\" or \"alertmanager\")"),
                        ))
                    }
                };
                ReceiverKind::Webhook { url, mode }
            }
        }
        "email" => email(&at, &r, env, offline, inv)?,
        other => {
            return Err(inv(
                format!("{at}.type"),
                format!(
                    "unknown receiver type {other:?} (expected \"stdout\", \"slack\", \"email\" or \"webhook\")"
                ),
            ))
        }
    };
    let default_rate = match &kind {
        ReceiverKind::Stdout { .. } => None,
        ReceiverKind::Slack { .. } => Some(RateLimit {
            period: Duration::from_secs(1),
            burst: 3,
        }),
        ReceiverKind::Email { .. } => Some(RateLimit {
            period: Duration::from_secs(60),
            burst: 5,
        }),
        ReceiverKind::Webhook { .. } => Some(RateLimit {
            period: Duration::from_millis(100),
            burst: 20,
        }),
    };
    let rate = match r.rate_limit.as_deref() {
        None => default_rate.map(|d| RateLimit {
            burst: r.burst.unwrap_or(d.burst),
            ..d
        }),
        Some("none") => None,
        Some(s) => Some(RateLimit {
            period: parse_rate(s).ok_or_else(|| {
                inv(
                    format!("{at}.rate_limit"),
                    format!("expected \"<n>/s\", \"<n>/m\", \"<n>/h\" or \"none\", got {s:?}"),
                )
            })?,
            burst: r.burst.unwrap_or(1),
        }),
    };
    if r.burst == Some(0) {
        return Err(inv(
            format!("{at}.burst"),
            "must be at least 1, got 0".into(),
        ));
    }
    let is_email = matches!(kind, ReceiverKind::Email { .. });
    let is_am = matches!(
        kind,
        ReceiverKind::Webhook {
            mode: WebhookMode::Alertmanager,
            ..
        }
    );
    let timeout = r
        .timeout
        .unwrap_or(Duration::from_secs(if is_email { 30 } else { 10 }));
    if timeout.is_zero() {
        return Err(inv(
            format!("{at}.timeout"),
            "must be longer than 0s".into(),
        ));
    }
    Ok(ReceiverConfig {
        name: r.name,
        severities: severities(&at, &r.severities, inv)?,
        rate,
        digest_wait: r.digest_wait.unwrap_or(Duration::from_secs(30)),
        timeout,
        max_attempts: r.max_attempts.unwrap_or(5).clamp(1, 20),
        repeat_interval: r
            .repeat_interval
            .or(is_am.then_some(Duration::from_secs(60))),
        kind,
    })
}

/// `"1/s"` → 1 s per message; `"10/m"` → 6 s; `"30/h"` → 2 min.
fn parse_rate(s: &str) -> Option<Duration> {
    let (n, unit) = s.trim().split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        _ => return None,
    };
    Some(Duration::from_secs(per) / n)
}

fn email(
    at: &str,
    r: &RawReceiver,
    env: &dyn Fn(&str) -> Option<String>,
    offline: bool,
    inv: Inv<'_>,
) -> Result<ReceiverKind, ConfigError> {
    if r.url_env.is_some() || r.url_file.is_some() {
        return Err(inv(
            format!("{at}.url"),
            "an email receiver takes url = \"smtp://host:port\" (no password in it) and password_env or password_file".into(),
        ));
    }
    let raw_url = r.url.as_deref().ok_or_else(|| {
        inv(
            format!("{at}.url"),
            "needs url = \"smtps://host:465\" or \"smtp://host:587\"".into(),
        )
    })?;
    let url = reqwest::Url::parse(raw_url)
        .map_err(|e| inv(format!("{at}.url"), format!("invalid URL: {e}")))?;
    if url.password().is_some() {
        return Err(inv(
            format!("{at}.url"),
            "the URL contains a password: move it to password_env or password_file".into(),
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| inv(format!("{at}.url"), format!("no host in {raw_url:?}")))?
        .to_string();
    let (tls, default_port) = match (url.scheme(), r.tls.as_deref()) {
        ("smtps", None | Some("implicit")) => (Tls::Implicit, 465),
        ("smtp", None | Some("starttls")) => (Tls::StartTls, 587),
        ("smtp", Some("none")) => (Tls::None, 25),
        ("smtps" | "smtp", Some(t)) => {
            return Err(inv(
                format!("{at}.tls"),
                format!(
                    "{t:?} does not fit {}:// (smtps:// is implicit TLS; smtp:// takes \"starttls\" (default) or \"none\")",
                    url.scheme()
                ),
            ))
        }
        (s, _) => {
            return Err(inv(
                format!("{at}.url"),
                format!("scheme {s:?} is not smtp or smtps"),
            ))
        }
    };
    let username = r
        .username
        .clone()
        .or_else(|| (!url.username().is_empty()).then(|| url.username().to_string()));
    let password = secret(
        at,
        "password",
        (None, r.password_env.clone(), r.password_file.clone()),
        env,
        offline,
        inv,
    )?;
    if password.is_some() != username.is_some() {
        return Err(inv(
            format!("{at}.username"),
            "AUTH needs both username and password_env/password_file".into(),
        ));
    }
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if password.is_some() && tls == Tls::None && !loopback {
        return Err(inv(
            format!("{at}.tls"),
            format!("refusing to send a password without TLS to {host:?} (tls = \"none\" is only for a relay on this host)"),
        ));
    }
    let addr = |field: &str, s: &str| -> Result<String, ConfigError> {
        s.parse::<lettre::message::Mailbox>()
            .map(|_| s.to_string())
            .map_err(|e| {
                inv(
                    format!("{at}.{field}"),
                    format!("invalid address {s:?}: {e}"),
                )
            })
    };
    let from = addr(
        "from",
        r.from.as_deref().ok_or_else(|| {
            inv(
                format!("{at}.from"),
                "needs from = \"logwarden@example.com\"".into(),
            )
        })?,
    )?;
    if r.to.is_empty() {
        return Err(inv(
            format!("{at}.to"),
            "needs at least one recipient".into(),
        ));
    }
    let mut to = Vec::new();
    for (j, t) in r.to.iter().enumerate() {
        to.push(addr(&format!("to[{j}]"), t)?);
    }
    Ok(ReceiverKind::Email {
        host,
        port: url.port().unwrap_or(default_port),
        tls,
        username,
        password,
        from,
        to,
    })
}

fn route(
    i: usize,
    r: RawRoute,
    receivers: &[ReceiverConfig],
    inv: Inv<'_>,
) -> Result<RouteConfig, ConfigError> {
    let at = format!("route[{i}]");
    if r.receivers.is_empty() {
        return Err(inv(
            format!("{at}.receivers"),
            "needs at least one receiver".into(),
        ));
    }
    let mut idx = Vec::new();
    for (j, name) in r.receivers.iter().enumerate() {
        let k = receivers
            .iter()
            .position(|x| &x.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = receivers.iter().map(|x| x.name.as_str()).collect();
                inv(
                    format!("{at}.receivers[{j}]"),
                    format!("no receiver named {name:?} (known: {known:?})"),
                )
            })?;
        idx.push(k);
    }
    let mut matchers = Vec::new();
    for (label, re) in r.matchers {
        let compiled = Regex::new(&format!("^(?:{re})$")).map_err(|e| {
            inv(
                format!("{at}.match.{label}"),
                format!("invalid regex {re:?}: {e}"),
            )
        })?;
        matchers.push((label, compiled));
    }
    let d = RouteConfig::catch_all(0);
    Ok(RouteConfig {
        receivers: idx,
        severities: severities(&at, &r.severities, inv)?,
        matchers,
        group_by: r.group_by.unwrap_or(d.group_by),
        group_wait: r.group_wait.unwrap_or(d.group_wait),
        group_interval: r.group_interval.unwrap_or(d.group_interval),
        repeat_interval: r.repeat_interval,
        cont: r.cont,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("1/s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_rate("10/m"), Some(Duration::from_secs(6)));
        assert_eq!(parse_rate("30/h"), Some(Duration::from_secs(120)));
        assert_eq!(parse_rate("0/s"), None);
        assert_eq!(parse_rate("fast"), None);
    }

    #[test]
    fn secrets_never_print_their_value() {
        let s = Secret::new("https://hooks.slack.com/services/T/B/xyz", "env SLACK_URL");
        assert_eq!(format!("{s:?}"), "Secret(from env SLACK_URL)");
        assert_eq!(format!("{s}"), "<secret from env SLACK_URL>");
    }

    #[test]
    fn builtin_redaction_regexes_compile() {
        let c = NotifyConfig::default_stdout();
        assert_eq!(c.redact.len(), BUILTIN_REDACT.len());
        for r in &c.redact {
            assert!(r.capture_names().any(|n| n == Some("secret")), "{r}");
        }
    }
}
