//! Configuration: TOML parsed into `Raw*` serde structs (every one `deny_unknown_fields`, so
//! a typo is an error), then validated into [`Config`], which holds compiled patterns,
//! `Duration`s and resolved rule references. Nothing after [`Config::load`] re-checks or
//! `unwrap`s a config value.
//!
//! Errors name the file, the line and column (from toml) or the field path
//! (`rule[2] "error-rate".window`), and quote the bad value.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::classify::{self, PackSource, PatternError, PatternSet, RawPattern};
use crate::event::Labels;
pub use crate::notify::config::{Format, NotifyConfig, ReceiverConfig, ReceiverKind};
use crate::notify::config::{RawInhibit, RawNotify, RawReceiver, RawRoute};
use crate::rules::{self, RuleSpec};
use crate::sources::DEFAULT_MAX_LINE_BYTES;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type; toml's message carries the
    /// line, column and a snippet.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// toml's message.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// Field path, e.g. `rule[0] "error-rate".window`.
        field: String,
        /// What is wrong, quoting the value.
        message: String,
    },
    /// A pattern pack or inline pattern failed.
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

/// serde helpers for durations written like `"30s"`, `"5m"`, `"1h 30m"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Parses a humantime duration, quoting the value on error.
    pub fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s.trim()).map_err(|e| {
            format!("invalid duration {s:?} ({e}); write e.g. \"30s\", \"5m\", \"1h\"")
        })
    }

    /// `#[serde(with = "duration")]` deserializer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// serde helpers for optional durations.
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// `#[serde(default, with = "opt_duration")]` deserializer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        super::duration::parse(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (serde) form

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    #[serde(default)]
    patterns: RawPatterns,
    #[serde(default, rename = "pattern")]
    inline_patterns: Vec<RawPattern>,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    tailer: RawTailer,
    #[serde(default, rename = "rule")]
    rules: Vec<rules::RawRule>,
    #[serde(default, rename = "queue")]
    queues: Vec<crate::queues::RawQueue>,
    /// `false` drops the built-in default rules even when no `[[rule]]` is given.
    default_rules: Option<bool>,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default, rename = "receiver")]
    receivers: Vec<RawReceiver>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
    #[serde(default, rename = "inhibit")]
    inhibits: Vec<RawInhibit>,
    #[serde(default)]
    records: RawRecords,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    replay: RawReplay,
    #[serde(default, with = "opt_duration")]
    shutdown_grace: Option<Duration>,
    #[serde(default)]
    http: RawHttp,
}

/// `[http]`: the operations listener.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    enabled: Option<bool>,
}

/// Default `limits.channel_capacity`, in batches. Enough to keep classify busy: a source
/// refills a slot in far less than a batch's classify time, and a source blocked on a full
/// channel already holds its next batch. 1, 2 and 64 gave the same throughput in
/// `scripts/bench-tail`, while 64 held ~60 MB of lines under overload (issue 7).
pub const DEFAULT_CHANNEL_CAPACITY: usize = 2;

/// The listener's default address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9898";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPatterns {
    packs: Option<Vec<String>>,
    #[serde(default)]
    disable: Vec<String>,
    max_label_values: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Option<String>,
    path: Option<String>,
    #[serde(default)]
    stdin: bool,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    start_at: Option<String>,
    #[serde(default, with = "opt_duration")]
    rotate_wait: Option<Duration>,
    multiline: Option<bool>,
    max_line_bytes: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTailer {
    #[serde(default, with = "opt_duration")]
    poll_interval: Option<Duration>,
    max_open_files: Option<usize>,
    #[serde(default, with = "opt_duration")]
    checkpoint_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    catch_up_window: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRecords {
    max_lines: Option<usize>,
    #[serde(default, with = "opt_duration")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_line_bytes: Option<usize>,
    max_series: Option<usize>,
    channel_capacity: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReplay {
    rate: Option<f64>,
    timestamp_regex: Option<String>,
    year: Option<i32>,
}

// ---------------------------------------------------------------------------------------------
// Validated form

/// Where a file source starts reading a file that has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only lines written after start-up (default: alerting, no history replay).
    End,
    /// The whole file.
    Beginning,
}

/// What a source reads.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceInput {
    /// Standard input.
    Stdin,
    /// Files matching a glob.
    Files {
        /// The glob, e.g. `/var/log/app/*.log`.
        glob: String,
    },
}

/// One validated `[[source]]`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Name used in events and metrics. Default: `stdin`, or the glob.
    pub name: Arc<str>,
    /// What it reads.
    pub input: SourceInput,
    /// Static labels; values may use `{stem}`, `{name}` and `{dir}` of a file's path.
    pub labels: Vec<(String, String)>,
    /// Where files without a checkpoint start. Default: end.
    pub start_at: StartAt,
    /// How long a rotated-away file keeps being drained. Default: 5s.
    pub rotate_wait: Duration,
    /// Join multi-line records (tracebacks) into one event. Default: true.
    pub multiline: bool,
    /// Line cap in bytes. Default: 65536.
    pub max_line_bytes: usize,
}

impl SourceConfig {
    /// The stdin source with defaults.
    pub fn stdin() -> SourceConfig {
        SourceConfig {
            name: Arc::from("stdin"),
            input: SourceInput::Stdin,
            labels: Vec::new(),
            start_at: StartAt::Beginning,
            rotate_wait: Duration::from_secs(5),
            multiline: true,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// A file source for a path or glob given on the command line.
    pub fn files(glob: &str) -> SourceConfig {
        SourceConfig {
            name: Arc::from(glob),
            input: SourceInput::Files {
                glob: glob.to_string(),
            },
            start_at: StartAt::End,
            ..SourceConfig::stdin()
        }
    }

    /// Static labels with no path placeholders expanded (stdin).
    pub fn static_labels(&self) -> Labels {
        Labels::from_pairs(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// Settings shared by every file source.
#[derive(Debug, Clone)]
pub struct TailerConfig {
    /// Poll tick: globs are re-expanded and files re-checked this often even without inotify
    /// events. Default: 1s.
    pub poll_interval: Duration,
    /// Cap on files held open at once. Default: 1024.
    pub max_open_files: usize,
    /// How often checkpoints are written. Default: 5s.
    pub checkpoint_interval: Duration,
    /// Lines older than this, read while catching up, are counted but their alerts are
    /// summarised. Default: 5m.
    pub catch_up_window: Duration,
}

impl Default for TailerConfig {
    fn default() -> Self {
        TailerConfig {
            poll_interval: Duration::from_secs(1),
            max_open_files: 1024,
            checkpoint_interval: Duration::from_secs(5),
            catch_up_window: Duration::from_secs(300),
        }
    }
}

/// Multi-line record joining.
#[derive(Debug, Clone, Copy)]
pub struct RecordConfig {
    /// Most physical lines in one record; a longer one is cut into several. Default: 200.
    pub max_lines: usize,
    /// A record with no new line for this long is complete. Default: 1s.
    pub timeout: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            max_lines: 200,
            timeout: Duration::from_secs(1),
        }
    }
}

/// `replay` settings.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Lines per second of simulated time for lines without a timestamp. Default: 10.
    pub rate: f64,
    /// A regex with named groups `year`, `month` (number or name), `day`, `hour`, `minute`,
    /// `second`, optional `frac` and `tz` (`Z`, `+hh:mm`), or `epoch` (seconds), that finds a
    /// line's timestamp. Default: common formats (ISO 8601, Python logging, syslog, epoch JSON).
    pub timestamp_regex: Option<regex::bytes::Regex>,
    /// Year assumed for syslog timestamps, which have none. Default: the current year.
    pub year: Option<i32>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (`None` for the embedded defaults).
    pub file: Option<PathBuf>,
    /// Directory for checkpoints and alert state. Default: none (nothing persisted).
    pub state_dir: Option<PathBuf>,
    /// Compiled patterns.
    pub patterns: Arc<PatternSet>,
    /// Distinct values kept per captured label; later ones become `__other__`. Default: 100.
    pub max_label_values: usize,
    /// Sources; empty means stdin.
    pub sources: Vec<SourceConfig>,
    /// File-tailer settings.
    pub tailer: TailerConfig,
    /// Rules.
    pub rules: Vec<RuleSpec>,
    /// Receivers, routes, inhibitions and message settings.
    pub notify: NotifyConfig,
    /// Redis queues to poll.
    pub queues: Vec<crate::queues::QueueConfig>,
    /// Record joining.
    pub records: RecordConfig,
    /// Line cap in bytes for sources that do not set their own. Default: 65536.
    pub max_line_bytes: usize,
    /// Cap on (rule, label set) series; events past it count in one overflow series. The
    /// event totals per (kind, source, label set) behind `/metrics` and `/status` keep at
    /// most as many label sets ([`crate::ops::Activity`]). Default: 10000.
    pub max_series: usize,
    /// Capacity of each channel between stages, in batches (a batch is at most
    /// [`crate::sources::BATCH_LINES`] lines, or the events of one such batch). Under
    /// overload these channels are full, so this times the batch size bounds the lines and
    /// events held between stages. Default: 2.
    pub channel_capacity: usize,
    /// Replay settings.
    pub replay: ReplayConfig,
    /// How long a drain may take on SIGTERM or end of input. Default: 10s.
    pub shutdown_grace: Duration,
    /// Where the HTTP listener (`/metrics`, `/health`, `/status`, `/`) binds; `None` when
    /// `[http] enabled = false`. Default: 127.0.0.1:9898.
    pub http_listen: Option<std::net::SocketAddr>,
}

impl Config {
    /// The embedded defaults: default pack, default rules, stdin, stdout receiver.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::from_str_named("(embedded defaults)", "", None)
    }

    /// Reads and validates a config file. Relative pack paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::from_str_named(&path.display().to_string(), &text, path.parent())?;
        cfg.file = Some(path.to_path_buf());
        cfg.warn_if_readable_with_secrets(path);
        Ok(cfg)
    }

    /// Reads a config for `replay`: receivers are checked, but their secrets need not be
    /// present (replay never sends; missing ones become placeholders).
    pub fn load_offline(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg =
            Config::from_str_opts(&path.display().to_string(), &text, path.parent(), true)?;
        cfg.file = Some(path.to_path_buf());
        cfg.warn_if_readable_with_secrets(path);
        Ok(cfg)
    }

    /// Fields whose secret value is written in the config file itself (a webhook `url`, a
    /// `[[queue]] url` with a password), e.g. `receiver "slack".url`. Never the values.
    pub fn secrets_in_file(&self) -> Vec<String> {
        let receivers = self.notify.receivers.iter().flat_map(|r| {
            r.kind
                .secrets()
                .into_iter()
                .filter(|(_, s)| s.in_config_file())
                .map(move |(field, _)| format!("receiver {:?}.{field}", r.name))
        });
        let queues = (self.queues.iter().enumerate())
            .filter(|(_, q)| q.password_in_config)
            .map(|(i, q)| format!("queue[{i}] {:?}.url", q.name));
        receivers.chain(queues).collect()
    }

    /// Warns when the config file is readable by every user and holds secrets, as
    /// `*_file` secrets are warned about: the file's mode is what protects them.
    fn warn_if_readable_with_secrets(&self, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let readable = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
        let fields = self.secrets_in_file();
        if readable && !fields.is_empty() {
            tracing::warn!(
                file = %path.display(),
                secrets = fields.join(", "),
                "config file is readable by every user and contains secrets; chmod o-r it, or \
                 move them to *_env or *_file"
            );
        }
    }

    /// Validates config text; `file` names it in errors, `base` resolves relative pack paths.
    pub fn from_str_named(
        file: &str,
        text: &str,
        base: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        Config::from_str_opts(file, text, base, false)
    }

    /// [`Config::from_str_named`]; with `offline`, missing secrets become placeholders.
    pub fn from_str_opts(
        file: &str,
        text: &str,
        base: Option<&Path>,
        offline: bool,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let inv = |field: String, message: String| ConfigError::Invalid {
            file: file.to_string(),
            field,
            message,
        };

        // Patterns: inline ones first (a user's patterns beat the packs at equal priority).
        let mut packs: Vec<PackSource> = Vec::new();
        if !raw.inline_patterns.is_empty() {
            packs.push(PackSource {
                file: file.to_string(),
                patterns: raw.inline_patterns,
            });
        }
        let pack_specs = raw
            .patterns
            .packs
            .unwrap_or_else(|| vec![classify::DEFAULT_PACK_NAME.to_string()]);
        for spec in &pack_specs {
            packs.push(classify::load_pack(spec, base)?);
        }
        let patterns = PatternSet::compile(&packs, &raw.patterns.disable)?;
        for (i, d) in raw.patterns.disable.iter().enumerate() {
            if !packs.iter().flat_map(|p| &p.patterns).any(|p| &p.name == d) {
                return Err(inv(
                    format!("patterns.disable[{i}]"),
                    format!("no pattern named {d:?}"),
                ));
            }
        }
        let max_label_values = positive(
            raw.patterns.max_label_values.unwrap_or(100),
            "patterns.max_label_values",
            &inv,
        )?;

        let max_line_bytes = positive(
            raw.limits.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES),
            "limits.max_line_bytes",
            &inv,
        )?;
        let mut sources = Vec::new();
        for (i, s) in raw.sources.into_iter().enumerate() {
            sources.push(validate_source(i, s, max_line_bytes, &inv)?);
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in sources.iter().enumerate() {
            if !names.insert(s.name.clone()) {
                return Err(inv(
                    format!("source[{i}].name"),
                    format!("duplicate source name {:?}", s.name),
                ));
            }
        }
        if sources
            .iter()
            .filter(|s| s.input == SourceInput::Stdin)
            .count()
            > 1
        {
            return Err(inv(
                "source".into(),
                "only one source may read stdin".into(),
            ));
        }

        let t = TailerConfig::default();
        let tailer = TailerConfig {
            poll_interval: nonzero_dur(
                raw.tailer.poll_interval.unwrap_or(t.poll_interval),
                "tailer.poll_interval",
                &inv,
            )?,
            max_open_files: positive(
                raw.tailer.max_open_files.unwrap_or(t.max_open_files),
                "tailer.max_open_files",
                &inv,
            )?,
            checkpoint_interval: nonzero_dur(
                raw.tailer
                    .checkpoint_interval
                    .unwrap_or(t.checkpoint_interval),
                "tailer.checkpoint_interval",
                &inv,
            )?,
            catch_up_window: raw.tailer.catch_up_window.unwrap_or(t.catch_up_window),
        };

        let mut queues = Vec::new();
        for (i, q) in raw.queues.into_iter().enumerate() {
            let q = crate::queues::validate(i, q).map_err(|(f, m)| inv(f, m))?;
            if queues
                .iter()
                .any(|x: &crate::queues::QueueConfig| x.name == q.name)
            {
                return Err(inv(
                    format!("queue[{i}].name"),
                    format!("duplicate queue name {:?}", q.name),
                ));
            }
            queues.push(q);
        }
        let mut source_names: Vec<Arc<str>> = sources.iter().map(|s| s.name.clone()).collect();
        let log_sources = if source_names.is_empty() {
            vec![Arc::from("stdin")]
        } else {
            source_names.clone()
        };
        source_names.extend(queues.iter().map(|q| q.name.clone()));
        let mut rules = if raw.rules.is_empty() && raw.default_rules != Some(false) {
            let mut d = rules::default_rules();
            if !queues.is_empty() {
                d.extend(rules::signals::queue_default_rules());
            }
            d
        } else {
            let mut out = Vec::new();
            for (i, r) in raw.rules.into_iter().enumerate() {
                out.push(
                    rules::validate(i, r, &patterns, &source_names)
                        .map_err(|(field, message)| inv(field, message))?,
                );
            }
            let mut seen = std::collections::HashSet::new();
            for (i, r) in out.iter().enumerate() {
                if !seen.insert(r.name.clone()) {
                    return Err(inv(
                        format!("rule[{i}].name"),
                        format!("duplicate rule name {:?}", r.name),
                    ));
                }
            }
            rules::signals::check_all_rules(&out).map_err(|(f, m)| inv(f, m))?;
            out
        };
        // An `absent` rule without `sources` or `group_by` watches every log source from
        // the start, so a source that never says anything is noticed too.
        for r in &mut rules {
            if matches!(r.kind, rules::RuleKind::Absent { .. })
                && r.sources.is_empty()
                && r.group_by.is_empty()
            {
                r.sources = log_sources.clone();
            }
        }
        if !queues.is_empty() && !rules.iter().any(|r| r.name.as_ref() == "queue_source_down") {
            rules.push(rules::signals::queue_source_down_rule());
        }

        let notify = crate::notify::config::validate(
            raw.notify,
            raw.receivers,
            raw.routes,
            raw.inhibits,
            &|k| std::env::var(k).ok(),
            offline,
            &inv,
        )?;

        let rd = RecordConfig::default();
        let records = RecordConfig {
            max_lines: positive(
                raw.records.max_lines.unwrap_or(rd.max_lines),
                "records.max_lines",
                &inv,
            )?,
            timeout: raw.records.timeout.unwrap_or(rd.timeout),
        };

        let rate = raw.replay.rate.unwrap_or(10.0);
        if !(rate.is_finite() && rate > 0.0) {
            return Err(inv(
                "replay.rate".into(),
                format!("must be > 0, got {rate}"),
            ));
        }
        let timestamp_regex = match raw.replay.timestamp_regex {
            None => None,
            Some(src) => Some(
                regex::bytes::RegexBuilder::new(&src)
                    .size_limit(classify::REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        inv(
                            "replay.timestamp_regex".into(),
                            format!("invalid regex {src:?}: {e}"),
                        )
                    })?,
            ),
        };

        Ok(Config {
            file: None,
            state_dir: raw.state_dir,
            patterns: Arc::new(patterns),
            max_label_values,
            sources,
            tailer,
            rules,
            notify,
            queues,
            records,
            max_line_bytes,
            max_series: positive(
                raw.limits.max_series.unwrap_or(10_000),
                "limits.max_series",
                &inv,
            )?,
            channel_capacity: positive(
                raw.limits
                    .channel_capacity
                    .unwrap_or(DEFAULT_CHANNEL_CAPACITY),
                "limits.channel_capacity",
                &inv,
            )?,
            replay: ReplayConfig {
                rate,
                timestamp_regex,
                year: raw.replay.year,
            },
            shutdown_grace: raw.shutdown_grace.unwrap_or(Duration::from_secs(10)),
            http_listen: match raw.http.enabled {
                Some(false) => None,
                _ => {
                    let a = raw.http.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
                    Some(a.parse().map_err(|_| {
                        inv(
                            "http.listen".into(),
                            format!("expected an address like 127.0.0.1:9898, got {a:?}"),
                        )
                    })?)
                }
            },
        })
    }
}

fn positive(
    v: usize,
    field: &str,
    inv: &impl Fn(String, String) -> ConfigError,
) -> Result<usize, ConfigError> {
    if v == 0 {
        Err(inv(field.to_string(), "must be at least 1, got 0".into()))
    } else {
        Ok(v)
    }
}

fn nonzero_dur(
    v: Duration,
    field: &str,
    inv: &impl Fn(String, String) -> ConfigError,
) -> Result<Duration, ConfigError> {
    if v.is_zero() {
        Err(inv(field.to_string(), "must be longer than 0s".into()))
    } else {
        Ok(v)
    }
}

fn validate_source(
    i: usize,
    s: RawSource,
    default_max_line: usize,
    inv: &impl Fn(String, String) -> ConfigError,
) -> Result<SourceConfig, ConfigError> {
    let at = match &s.name {
        Some(n) => format!("source[{i}] {n:?}"),
        None => format!("source[{i}]"),
    };
    let input = match (s.stdin, s.path) {
        (true, None) => SourceInput::Stdin,
        (false, Some(p)) if !p.trim().is_empty() => {
            if let Err(e) = glob::Pattern::new(&p) {
                return Err(inv(
                    format!("{at}.path"),
                    format!("invalid glob {p:?}: {e}"),
                ));
            }
            SourceInput::Files { glob: p }
        }
        (true, Some(p)) => {
            return Err(inv(
                format!("{at}.path"),
                format!("set either stdin = true or path, not both (path = {p:?})"),
            ))
        }
        (false, _) => {
            return Err(inv(
                at,
                "needs path = \"<file or glob>\" or stdin = true".into(),
            ))
        }
    };
    let start_at = match s.start_at.as_deref() {
        None => match input {
            SourceInput::Stdin => StartAt::Beginning,
            SourceInput::Files { .. } => StartAt::End,
        },
        Some("end") => StartAt::End,
        Some("beginning") => StartAt::Beginning,
        Some(other) => {
            return Err(inv(
                format!("{at}.start_at"),
                format!("unknown value {other:?} (expected \"end\" or \"beginning\")"),
            ))
        }
    };
    for k in s.labels.keys() {
        if !valid_label_name(k) {
            return Err(inv(
                format!("{at}.labels"),
                format!(
                    "invalid label name {k:?} (letters, digits and '_', not starting with a digit)"
                ),
            ));
        }
    }
    let name: Arc<str> = match (&s.name, &input) {
        (Some(n), _) => Arc::from(n.as_str()),
        (None, SourceInput::Stdin) => Arc::from("stdin"),
        (None, SourceInput::Files { glob }) => Arc::from(glob.as_str()),
    };
    Ok(SourceConfig {
        name,
        input,
        labels: s.labels.into_iter().collect(),
        start_at,
        rotate_wait: s.rotate_wait.unwrap_or(Duration::from_secs(5)),
        multiline: s.multiline.unwrap_or(true),
        max_line_bytes: positive(
            s.max_line_bytes.unwrap_or(default_max_line),
            &format!("source[{i}].max_line_bytes"),
            inv,
        )?,
    })
}

/// Label names follow Prometheus: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_str_named("t.toml", text, None)
            .map(|_| ())
            .expect_err("expected an error")
            .to_string()
    }

    #[test]
    fn empty_config_equals_embedded_defaults() {
        let c = Config::from_str_named("t.toml", "", None).unwrap();
        let d = Config::embedded().unwrap();
        assert_eq!(c.rules, d.rules);
        assert_eq!(c.rules, rules::default_rules());
        assert_eq!(c.patterns.patterns().len(), d.patterns.patterns().len());
        assert_eq!(c.max_line_bytes, 65_536);
        assert!(c.sources.is_empty());
        assert_eq!(c.notify.receivers.len(), 1);
        assert!(!c.notify.configured);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err("[limits]\nmax_line_bytez = 3\n");
        assert!(e.starts_with("t.toml: "), "{e}");
        assert!(e.contains("line 2") && e.contains("max_line_bytez"), "{e}");
    }

    #[test]
    fn bad_duration_quotes_value_with_line() {
        let e = err("[records]\ntimeout = \"5 parsecs\"\n");
        assert!(e.contains("line 2") && e.contains("\"5 parsecs\""), "{e}");
    }

    #[test]
    fn bad_source_fields() {
        let e = err("[[source]]\nname = \"w\"\n");
        assert!(e.contains("source[0] \"w\"") && e.contains("path"), "{e}");
        let e = err("[[source]]\npath = \"/x\"\nstart_at = \"middle\"\n");
        assert!(
            e.contains("source[0].start_at") && e.contains("\"middle\""),
            "{e}"
        );
        let e = err("[[source]]\nstdin = true\n[[source]]\nstdin = true\nname = \"b\"\n");
        assert!(e.contains("only one source may read stdin"), "{e}");
    }

    #[test]
    fn zero_limits_rejected() {
        let e = err("[limits]\nmax_series = 0\n");
        assert!(
            e.contains("limits.max_series") && e.contains("got 0"),
            "{e}"
        );
    }

    #[test]
    fn disable_unknown_pattern_is_an_error() {
        let e = err("[patterns]\ndisable = [\"nope\"]\n");
        assert!(
            e.contains("patterns.disable[0]") && e.contains("\"nope\""),
            "{e}"
        );
    }

    #[test]
    fn inline_pattern_errors_name_the_config_file() {
        let e = err("[[pattern]]\nname = \"p\"\nkind = \"error\"\nregex = '(?<=x)y'\n");
        assert!(
            e.contains("t.toml") && e.contains("\"p\"") && e.contains("look-around"),
            "{e}"
        );
    }

    #[test]
    fn missing_pack_file_names_it() {
        let e = err("[patterns]\npacks = [\"/nonexistent/pack.toml\"]\n");
        assert!(e.contains("/nonexistent/pack.toml"), "{e}");
    }
}
