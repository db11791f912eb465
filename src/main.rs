//! The `logwarden` command line: parse flags, set up logging, load the config, dispatch.
//! Exit codes: 0 done, 1 runtime failure, 2 bad config or usage.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use logwarden::classify::{self, PatternSet};
use logwarden::config::{Config, ConfigError, Format, ReceiverKind, SourceConfig, StartAt};
use logwarden::{app, notify, replay};

/// Watches job workers through their logs and Redis queues and tells people when something
/// is wrong.
///
/// With no arguments, reads a log on stdin with the built-in pattern pack and rules and
/// prints alerts on stdout:   some-worker 2>&1 | logwarden
#[derive(Parser)]
#[command(
    name = "logwarden",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    /// Format of logwarden's own logs on stderr: text, or json (one object per line, for
    /// journald or a log shipper).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

const AFTER_HELP: &str = "\
Examples:
  some-worker 2>&1 | logwarden                      watch a pipe; exits 0 when it ends
  logwarden run -c /etc/logwarden/logwarden.toml    run as a daemon (see config/logwarden.service)
  logwarden check -c logwarden.toml                 validate a config before deploying it
  logwarden replay -c logwarden.toml worker.log     show what would have fired, and when

Signals: SIGTERM and SIGINT drain (evaluate once more, flush pending notifications, write
checkpoints and state within shutdown_grace) and exit 0; SIGHUP reloads the config (an
invalid one is rejected and the running one kept).
HTTP (127.0.0.1:9898 unless --listen, [http] or --no-http): / dashboard, /metrics,
/health, /status.
Exit codes: 0 done, 1 runtime failure, 2 bad config or usage. RUST_LOG=debug logs more.";

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Watch sources (stdin by default) and send alerts (the default command).
    Run(RunArgs),
    /// Validate a config file (and its pattern packs) and exit: 0 when valid, 2 otherwise.
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Classify lines and print kinds, events or counts (fail2ban-regex's job).
    Classify(ClassifyArgs),
    /// Run log files through the rules on a simulated clock and print what would have fired.
    Replay(ReplayArgs),
    /// Show the notification log: what was sent, held back or failed, and why, which alerts
    /// are firing, and which messages are in flight (read from the state directory).
    History {
        /// The daemon's state directory.
        #[arg(long, value_name = "DIR", required_unless_present = "config")]
        state_dir: Option<PathBuf>,
        /// Take the state directory from this config instead.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Show at most this many of the latest entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Poll the config's Redis queues and print every series (and poll latency with --polls).
    Queues(QueuesArgs),
    /// List the loaded patterns and kinds, with the literals that gate each pattern.
    Patterns {
        /// A config whose packs and inline patterns to list (default: the built-in pack).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Args, Default, Clone)]
struct RunArgs {
    /// Config file (default: built-in pattern pack and rules, stdin, stdout receiver).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Write every classified event as a JSON line to FILE, or '-' for stdout.
    #[arg(long, value_name = "FILE")]
    events: Option<String>,
    /// Format of notifications on stdout (overrides the config's stdout receivers).
    #[arg(long, value_enum)]
    format: Option<OutFormat>,
    /// Directory for checkpoints and alert state (overrides `state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Read files without a checkpoint from their beginning instead of their end.
    #[arg(long)]
    from_beginning: bool,
    /// Serve /metrics, /health, /status and the dashboard on ADDR (overrides `[http] listen`;
    /// default 127.0.0.1:9898).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_http")]
    listen: Option<std::net::SocketAddr>,
    /// Do not start the HTTP listener.
    #[arg(long)]
    no_http: bool,
    /// Files or globs to tail, in addition to the config's sources.
    #[arg(value_name = "PATH")]
    paths: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ClassifyArgs {
    /// Use this config's packs, inline patterns and limits.
    #[arg(long, short, conflicts_with = "patterns")]
    config: Option<PathBuf>,
    /// A pattern pack file to use instead of the built-in pack ('default' names it); repeat
    /// the flag for several packs.
    #[arg(long, value_name = "PACK")]
    patterns: Vec<String>,
    /// Classify each physical line alone (no record joining or folding), as the labeled
    /// corpus and the benchmark count.
    #[arg(long)]
    lines: bool,
    /// tsv: `kind<TAB>line` per line (per event without --lines); json: one object per line or
    /// event; counts: one JSON object of counts per kind, then per-pattern hits and a sample
    /// of unmatched lines.
    #[arg(long, value_enum, default_value_t = ClassifyFormat::Tsv)]
    format: ClassifyFormat,
    /// Threads counting with `--lines --format counts` (default: the available cores, at
    /// most 8). The input is read in 4 MiB chunks cut at line ends; each chunk is counted
    /// whole by one thread, so per-kind counts do not depend on the thread count.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: Option<u16>,
    /// Files to read (stdin if none).
    #[arg(value_name = "FILE")]
    files: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClassifyFormat {
    Tsv,
    Json,
    Counts,
}

#[derive(Args)]
struct ReplayArgs {
    /// Config file (default: built-in pack and rules).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print notifications as JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// Also write every event as a JSON line to FILE ('-' for stdout).
    #[arg(long, value_name = "FILE")]
    events: Option<String>,
    /// A queue-depth series to replay beside the logs: CSV rows `time,key,depth[,part]`
    /// (time RFC 3339 or Unix seconds); repeat for several files.
    #[arg(long, value_name = "FILE")]
    queue_csv: Vec<String>,
    /// Log files to replay ('-' for stdin), merged by their timestamps.
    #[arg(value_name = "FILE", required_unless_present = "queue_csv")]
    files: Vec<String>,
}

#[derive(Args)]
struct QueuesArgs {
    /// Config file with [[queue]] sections.
    #[arg(long, short)]
    config: PathBuf,
    /// Poll this many times (one interval apart, or back to back with --no-wait) and print
    /// round-trip latency percentiles instead of the series.
    #[arg(long, value_name = "N")]
    polls: Option<u32>,
    /// With --polls: do not wait for the interval between polls.
    #[arg(long)]
    no_wait: bool,
}

/// glibc gives threads that allocate their own malloc arenas (up to 8 per core), and each arena
/// keeps what was freed in it: with the runtime's workers, blocking tailer ticks and classify
/// thread, that was 3–12 MiB of resident memory the heap no longer used. Two arenas measured
/// (`PARTS=ad QUICK=1 scripts/bench-memory`, paired): 100 files written at 100 lines/s each,
/// peak RSS 21.4 → 18.6 MiB; full-speed tailing 22.3–24.4 → 20.1–21.2 MiB, with no CPU
/// difference above the noise. A `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` from the environment wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_arenas() {
    let tuned = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    if !tuned {
        // SAFETY: mallopt is called before any other thread exists; a rejected value leaves
        // glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_arenas() {}

fn main() -> ExitCode {
    // A file-size limit (RLIMIT_FSIZE) must fail a checkpoint or state write with EFBIG,
    // which is reported and survived, not kill the daemon with SIGXFSZ.
    // SAFETY: setting a signal to SIG_IGN before any thread starts has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    cap_malloc_arenas();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        None => cmd_run(cli.run),
        Some(Command::Run(args)) => cmd_run(args),
        Some(Command::Check { config }) => cmd_check(&config),
        Some(Command::Classify(args)) => cmd_classify(args),
        Some(Command::Replay(args)) => cmd_replay(args),
        Some(Command::Queues(args)) => cmd_queues(args),
        Some(Command::Patterns { config }) => cmd_patterns(config.as_deref()),
        Some(Command::History {
            state_dir,
            config,
            json,
            limit,
        }) => cmd_history(state_dir, config.as_deref(), json, limit),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                // `logwarden classify big.log | head`: the reader left; that is not a failure.
                return ExitCode::SUCCESS;
            }
            eprintln!("logwarden: {err:#}");
            if err.downcast_ref::<ConfigError>().is_some()
                || err.downcast_ref::<classify::PatternError>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn load(config: Option<&Path>) -> Result<Config, ConfigError> {
    match config {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    }
}

fn open_output(path: &str) -> anyhow::Result<Box<dyn Write + Send>> {
    if path == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    let f = std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?;
    Ok(Box::new(std::io::BufWriter::new(f)))
}

/// The config of `run`: the file (or the embedded defaults) with the command line's
/// overrides applied. SIGHUP calls it again.
fn run_config(args: &RunArgs) -> anyhow::Result<Config> {
    let mut config = load(args.config.as_deref())?;
    config
        .sources
        .extend(args.paths.iter().map(|p| SourceConfig::files(p)));
    if args.from_beginning {
        for s in &mut config.sources {
            s.start_at = StartAt::Beginning;
        }
    }
    if let Some(dir) = &args.state_dir {
        config.state_dir = Some(dir.clone());
    }
    if args.listen.is_some() {
        config.http_listen = args.listen;
    }
    if args.no_http {
        config.http_listen = None;
    }
    if let Some(f) = args.format {
        let format = match f {
            OutFormat::Text => Format::Text,
            OutFormat::Json => Format::Json,
        };
        for r in &mut config.notify.receivers {
            if let ReceiverKind::Stdout { format: rf } = &mut r.kind {
                *rf = format;
            }
        }
    }
    Ok(config)
}

fn cmd_run(args: RunArgs) -> anyhow::Result<()> {
    let config = run_config(&args)?;
    let events = args.events.as_deref().map(open_output).transpose()?;
    let again = args.clone();
    let reload: app::Reload = Box::new(move || run_config(&again));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The handlers go in now, before any stage runs: installed when the shutdown future was
    // first polled, a SIGTERM that came after the first events but before that killed the
    // process with nothing drained (`sigterm_drains_and_exits_cleanly_while_stdin_is_open`
    // failed 3 runs in 5 on a busy machine).
    let shutdown = {
        let _runtime = rt.enter();
        shutdown_signal()
    };
    let report = rt.block_on(app::run(
        config,
        app::RunOptions {
            events,
            stdout: None,
            reload: Some(reload),
        },
        shutdown,
    ));
    // Tokio reads stdin on a blocking thread that stays in read(2) while the writer keeps the
    // pipe open; dropping the runtime would wait for it forever after a SIGTERM. Everything
    // that matters has drained by now.
    rt.shutdown_background();
    let report = report?;
    eprintln!("logwarden: {}", report.summary());
    Ok(())
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers at once (inside the runtime) and
/// returns what resolves on either, logging which.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "received signal, starting shutdown");
    }
}

fn cmd_check(path: &Path) -> anyhow::Result<()> {
    let c = Config::load(path)?;
    let sources = if c.sources.is_empty() {
        "stdin".to_string()
    } else {
        c.sources.len().to_string()
    };
    println!(
        "{}: ok ({} patterns, {} kinds, {} rules, sources: {sources}, {} queues, {} receivers)",
        path.display(),
        c.patterns.patterns().len(),
        c.patterns.kinds().len(),
        c.rules.len(),
        c.queues.len(),
        c.notify.receivers.len()
    );
    Ok(())
}

fn cmd_queues(args: QueuesArgs) -> anyhow::Result<()> {
    use logwarden::queues::poller::Poller;
    let config = Config::load(&args.config)?;
    if config.queues.is_empty() {
        anyhow::bail!("{}: no [[queue]] configured", args.config.display());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let _runtime = rt.enter(); // the connection manager spawns its driver on it
    let clock = logwarden::clock::Clock::start();
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for q in config.queues {
        let mut poller = Poller::new(q);
        let name = poller.config().name.clone();
        let interval = poller.config().interval;
        let mut con = poller
            .connect()
            .with_context(|| format!("queue {name:?}: cannot set up the connection"))?;
        // The first poll also discovers keys and their types: not part of the latency.
        let first = rt.block_on(poller.poll(&mut con, clock.now()));
        let samples = match first {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "{name}: {} unreachable: {e}",
                    poller.config().redacted_url()
                );
                failed = true;
                continue;
            }
        };
        let Some(n) = args.polls.map(|n| n.max(1)) else {
            for s in &samples {
                writeln!(
                    out,
                    "{name}\t{}\t{}{}",
                    s.metric.as_str(),
                    s.value,
                    s.labels
                )?;
            }
            continue;
        };
        let mut micros = Vec::with_capacity(n as usize);
        let mut errors = 0;
        for i in 0..n {
            if i > 0 && !args.no_wait {
                std::thread::sleep(interval);
            }
            let t = std::time::Instant::now();
            if rt.block_on(poller.poll(&mut con, clock.now())).is_err() {
                errors += 1;
            }
            micros.push(t.elapsed().as_micros() as u64);
        }
        micros.sort_unstable();
        let pct = |p: f64| micros[((micros.len() as f64 - 1.0) * p).round() as usize];
        writeln!(
            out,
            "{name}: {} keys, {} series per poll, {n} polls ({errors} failed): p50 {} µs, p99 {} µs, max {} µs",
            poller.key_count(),
            samples.len(),
            pct(0.5),
            pct(0.99),
            micros.last().copied().unwrap_or(0)
        )?;
    }
    if failed {
        anyhow::bail!("some queues could not be polled");
    }
    Ok(())
}

fn cmd_patterns(config: Option<&Path>) -> anyhow::Result<()> {
    let c = load(config)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "kinds: {}",
        c.patterns
            .kinds()
            .iter()
            .map(|k| k.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    for (i, p) in c.patterns.patterns().iter().enumerate() {
        let gate = match c.patterns.required_literals(i) {
            Some(lits) => lits
                .iter()
                .map(|l| format!("{:?}", String::from_utf8_lossy(l)))
                .collect::<Vec<_>>()
                .join(" | "),
            None => "(no required literal: searched on every line)".into(),
        };
        writeln!(out, "{}\t{}\t{}\t{}", p.kind, p.name, p.file, gate)?;
    }
    Ok(())
}

fn classify_patterns(args: &ClassifyArgs) -> anyhow::Result<(Arc<PatternSet>, Config)> {
    if args.patterns.is_empty() {
        let config = load(args.config.as_deref())?;
        return Ok((config.patterns.clone(), config));
    }
    // Only the given packs: do not compile the embedded one as well.
    let config = Config::from_str_named("(classify --patterns)", "[patterns]\npacks = []\n", None)?;
    let packs = args
        .patterns
        .iter()
        .map(|p| classify::load_pack(p, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((Arc::new(PatternSet::compile(&packs, &[])?), config))
}

fn cmd_classify(args: ClassifyArgs) -> anyhow::Result<()> {
    let (set, config) = classify_patterns(&args)?;
    let stdin = ["-".to_string()];
    let inputs = replay::open_inputs(if args.files.is_empty() {
        &stdin
    } else {
        &args.files
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    if args.lines && args.format == ClassifyFormat::Counts {
        let threads = args.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            usize::from,
        );
        let counting = set.for_counting();
        count_lines(&counting, config.max_line_bytes, inputs, threads, &mut out)?;
    } else if args.lines {
        classify_lines(&set, config.max_line_bytes, inputs, args.format, &mut out)?;
    } else {
        classify_events(set, &config, inputs, args.format, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// Size of the chunks `count_lines` reads and hands to its threads.
const COUNT_CHUNK: usize = 4 << 20;

/// `--lines --format counts`: the reader cuts the input into chunks of whole lines and
/// `threads` counters each take whole chunks (reading overlaps counting; counts do not depend
/// on order). The first chunks also give the sample of unmatched lines.
fn count_lines(
    set: &PatternSet,
    max_line: usize,
    inputs: Vec<(String, Box<dyn Read>)>,
    threads: usize,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let n = set.patterns().len();
    let mut sample: Vec<String> = Vec::new();
    let mut scratch = set.scratch();
    let (mut hits, mut total) = (vec![0u64; n], 0u64);
    if threads <= 1 {
        let mut h = vec![0u64; n];
        read_chunks(inputs, max_line, |chunk| {
            if sample.len() < 10 {
                collect_unmatched(set, &chunk, max_line, &mut scratch, &mut sample);
            }
            total += set.count_buffer(&chunk, max_line, &mut h, &mut scratch, |_, _| {});
            Some(chunk)
        })?;
        hits = h;
    } else {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(threads);
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let rx = std::sync::Mutex::new(rx);
        let results = std::thread::scope(|scope| -> anyhow::Result<Vec<(Vec<u64>, u64)>> {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (rx, back_tx) = (&rx, back_tx.clone());
                    scope.spawn(move || {
                        let (mut h, mut lines, mut sc) = (vec![0u64; n], 0u64, set.scratch());
                        loop {
                            let next = rx.lock().expect("chunk channel").recv();
                            let Ok(chunk) = next else { break };
                            lines += set.count_buffer(&chunk, max_line, &mut h, &mut sc, |_, _| {});
                            let _ = back_tx.send(chunk);
                        }
                        (h, lines)
                    })
                })
                .collect();
            drop(back_tx);
            let read = read_chunks(inputs, max_line, |chunk| {
                if sample.len() < 10 {
                    collect_unmatched(set, &chunk, max_line, &mut scratch, &mut sample);
                }
                tx.send(chunk).ok()?;
                back_rx.try_recv().ok()
            });
            drop(tx);
            let counted = workers
                .into_iter()
                .map(|w| w.join().expect("counting thread panicked"))
                .collect();
            read.map(|()| counted)
        })?;
        for (h, lines) in results {
            total += lines;
            for (t, x) in hits.iter_mut().zip(h) {
                *t += x;
            }
        }
    }
    write_counts(out, set, &hits, total, &sample)?;
    Ok(())
}

/// Reads `inputs` in chunks of about [`COUNT_CHUNK`] bytes that end at a line end and hands
/// each to `chunk`, which may give a used buffer back for reuse. A line longer than
/// `max_line` arrives as its first `max_line` bytes and a `\n`, the rest of it dropped as it
/// is read: one line, as [`LineSplitter`](logwarden::sources::LineSplitter) makes it.
fn read_chunks(
    inputs: Vec<(String, Box<dyn Read>)>,
    max_line: usize,
    mut chunk: impl FnMut(Vec<u8>) -> Option<Vec<u8>>,
) -> anyhow::Result<()> {
    let max_line = max_line.max(1);
    let mut spare: Option<Vec<u8>> = None;
    for (name, mut input) in inputs {
        // `buf[..len]` is the data; the rest of `buf` was written before (zeros or an older
        // chunk's bytes) and is read into as it is: zero-filling 4 MiB before every read was
        // a memset of the whole input on the reader thread.
        let mut buf: Vec<u8> = Vec::with_capacity(COUNT_CHUNK + 4096);
        let mut len = 0;
        // True while the head of an over-long line ends `buf` and the rest is being dropped.
        let mut skipping = false;
        loop {
            let start = len;
            let want = COUNT_CHUNK.max(start + (64 << 10));
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let n = read_full(&mut input, &mut buf[start..want])
                .with_context(|| format!("reading {name}"))?;
            len = start + n;
            let eof = n == 0;
            if skipping {
                match memchr::memchr(b'\n', &buf[start..len]) {
                    Some(i) => {
                        // The head meets its `\n`.
                        buf.copy_within(start + i..len, start);
                        len -= i;
                        skipping = false;
                    }
                    None if eof => skipping = false,
                    None => {
                        len = start;
                        continue;
                    }
                }
            }
            let end = if eof {
                len
            } else {
                // The bytes before `start` are a line's beginning: no `\n` there.
                let line_start =
                    memchr::memrchr(b'\n', &buf[start..len]).map_or(0, |i| start + i + 1);
                // More than `max_line` plus a possible `\r`, and no `\n` yet: over-long.
                if len - line_start > max_line + 1 {
                    len = line_start + max_line;
                    skipping = true;
                }
                line_start
            };
            if end == 0 && !eof {
                continue; // no whole line yet: read on into the same buffer
            }
            // The partial line after `end` moves to the front of the next buffer.
            let mut next = spare.take().unwrap_or_default();
            let left = len - end;
            if next.len() < left {
                next.resize(left, 0);
            }
            next[..left].copy_from_slice(&buf[end..len]);
            len = left;
            buf.truncate(end);
            if end > 0 {
                spare = chunk(std::mem::replace(&mut buf, next));
            } else {
                buf = next;
            }
            if eof {
                break;
            }
        }
    }
    Ok(())
}

/// Classifies and prints per physical line (`--lines` with `tsv` or `json`).
fn classify_lines(
    set: &PatternSet,
    max_line: usize,
    inputs: Vec<(String, Box<dyn Read>)>,
    format: ClassifyFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut scratch = set.scratch();
    let mut res: std::io::Result<()> = Ok(());
    read_chunks(inputs, max_line, |chunk| {
        let mut splitter = logwarden::sources::LineSplitter::new(max_line);
        let mut per_line = |l: logwarden::sources::SplitLine<'_>| {
            if res.is_err() {
                return;
            }
            let won = set.classify(l.bytes, &mut scratch);
            let kind = won.map_or("other", |i| &set.patterns()[i].kind);
            res = if format == ClassifyFormat::Tsv {
                out.write_all(kind.as_bytes())
                    .and_then(|()| out.write_all(b"\t"))
                    .and_then(|()| out.write_all(l.bytes))
                    .and_then(|()| out.write_all(b"\n"))
            } else {
                let pattern = won.map(|i| set.patterns()[i].name.as_ref());
                let v = serde_json::json!({
                    "kind": kind,
                    "pattern": pattern,
                    "line": String::from_utf8_lossy(l.bytes),
                });
                writeln!(out, "{v}")
            };
        };
        splitter.push(&chunk, &mut per_line);
        splitter.finish(&mut per_line);
        Some(chunk)
    })?;
    Ok(res?)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn collect_unmatched(
    set: &PatternSet,
    chunk: &[u8],
    max_line: usize,
    scratch: &mut classify::Scratch,
    sample: &mut Vec<String>,
) {
    for line in chunk.split(|&b| b == b'\n').take(10_000) {
        if sample.len() >= 10 {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = &line[..line.len().min(max_line)];
        if !line.is_empty() && set.classify(line, scratch).is_none() {
            sample.push(logwarden::event::display_text(line));
        }
    }
}

fn write_counts(
    out: &mut impl Write,
    set: &PatternSet,
    hits: &[u64],
    total: u64,
    sample: &[String],
) -> std::io::Result<()> {
    let mut kinds = serde_json::Map::new();
    for k in set.kinds() {
        kinds.insert(k.to_string(), 0.into());
    }
    let mut matched = 0;
    let mut per_pattern = serde_json::Map::new();
    for (p, &n) in set.patterns().iter().zip(hits) {
        matched += n;
        per_pattern.insert(p.name.to_string(), n.into());
        if let Some(v) = kinds.get_mut(p.kind.as_ref()) {
            *v = (v.as_u64().unwrap_or(0) + n).into();
        }
    }
    kinds.insert("other".into(), (total - matched).into());
    writeln!(out, "{}", serde_json::Value::Object(kinds))?;
    writeln!(out, "{}", serde_json::json!({ "patterns": per_pattern }))?;
    writeln!(out, "{}", serde_json::json!({ "unmatched_sample": sample }))
}

/// Classifies with record joining and folding, on a clock taken from line timestamps.
fn classify_events(
    set: Arc<PatternSet>,
    config: &Config,
    inputs: Vec<(String, Box<dyn Read>)>,
    format: ClassifyFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut cfg = config.clone();
    cfg.patterns = set.clone();
    cfg.rules.clear();
    let mut err: std::io::Result<()> = Ok(());
    let report = replay::replay(&cfg, inputs, |ev| {
        if err.is_err() || format == ClassifyFormat::Counts {
            return;
        }
        err = match format {
            ClassifyFormat::Tsv => writeln!(out, "{}\t{}", ev.kind, ev.message),
            _ => serde_json::to_writer(&mut *out, ev)
                .map_err(std::io::Error::other)
                .and_then(|()| out.write_all(b"\n")),
        };
    })?;
    err?;
    if format == ClassifyFormat::Counts {
        let mut kinds = serde_json::Map::new();
        for k in set.kinds() {
            kinds.insert(
                k.to_string(),
                report.per_kind.get(k.as_ref()).copied().unwrap_or(0).into(),
            );
        }
        kinds.insert("other".into(), report.stats.unmatched.into());
        writeln!(out, "{}", serde_json::Value::Object(kinds))?;
        writeln!(
            out,
            "{}",
            serde_json::json!({ "patterns": report.per_pattern, "folded": report.stats.folded })
        )?;
        writeln!(
            out,
            "{}",
            serde_json::json!({ "unmatched_sample": report.unmatched_sample })
        )?;
    }
    Ok(())
}

fn cmd_replay(args: ReplayArgs) -> anyhow::Result<()> {
    let config = match args.config.as_deref() {
        Some(p) => Config::load_offline(p)?,
        None => Config::embedded()?,
    };
    let inputs = replay::open_inputs(&args.files)?;
    let mut depth = Vec::new();
    for path in &args.queue_csv {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
        let series =
            logwarden::queues::csv::read(path, f).with_context(|| format!("cannot read {path}"))?;
        for (line, why) in &series.bad_rows {
            eprintln!("{path}:{line}: skipped: {why}");
        }
        if !series.bad_rows.is_empty() {
            eprintln!(
                "{path}: {} bad rows skipped, {} rows read",
                series.bad_rows.len(),
                series.rows
            );
        }
        depth.extend(series.batches);
    }
    depth.sort_by_key(|b| b.at); // stable: files keep their order at equal times
    let mut events_out = args.events.as_deref().map(open_output).transpose()?;
    let mut events_err: std::io::Result<()> = Ok(());
    let report = replay::replay_with_queues(&config, inputs, depth, |ev| {
        if let (Some(w), Ok(())) = (events_out.as_mut(), &events_err) {
            events_err = serde_json::to_writer(&mut *w, ev)
                .map_err(std::io::Error::other)
                .and_then(|()| w.write_all(b"\n"));
        }
    })?;
    events_err?;
    if let Some(w) = events_out.as_mut() {
        w.flush()?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let sent = print_replay_notifications(&config, &report.alerts, args.json, &mut out)?;
    let span = match (report.first, report.last) {
        (Some(a), Some(b)) => format!("{a} .. {b}"),
        _ => "no lines".into(),
    };
    eprintln!(
        "replayed {} lines and {} queue samples ({span}; {} without a timestamp): {} events, {} unmatched, {} alert changes, {} messages ({} held back by rate limits)",
        report.stats.lines,
        report.samples,
        report.untimed_lines,
        report.per_kind.values().sum::<u64>(),
        report.stats.unmatched,
        report.alerts.len(),
        sent.0,
        sent.1
    );
    for (p, n) in &report.per_pattern {
        eprintln!("  {n:>8}  {p}");
    }
    if !report.unmatched_sample.is_empty() {
        eprintln!("unmatched sample:");
        for l in &report.unmatched_sample {
            eprintln!("  {}", logwarden::rules::truncate_chars(l, 160));
        }
    }
    Ok(())
}

/// Runs replayed alert changes through routing, grouping and rate limits at log time and
/// prints what each receiver would have been sent (and what a limit held back). Returns
/// (messages, held).
fn print_replay_notifications(
    config: &Config,
    alerts: &[logwarden::rules::Alert],
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<(u64, u64)> {
    use logwarden::notify::{format, Dispatcher};
    let cfg = std::sync::Arc::new(config.notify.clone());
    let render = format::Render {
        hostname: &cfg.hostname,
        redact: &cfg.redact,
        evidence_lines: cfg.evidence_lines,
    };
    let mut d = Dispatcher::new(cfg.clone());
    let (mut sent, mut held) = (0u64, 0u64);
    let mut emit = |t: notify::Tick, out: &mut dyn Write| -> anyhow::Result<()> {
        for m in &t.send {
            sent += 1;
            if json {
                let v = serde_json::json!({"outcome": "sent", "message": m});
                writeln!(out, "{v}")?;
            } else {
                for l in format::stdout_lines(m, &render) {
                    let (at, rest) = l.split_once(' ').unwrap_or((&l, ""));
                    writeln!(out, "{at} [{}] {rest}", m.receiver_name)?;
                }
            }
        }
        for m in &t.held {
            held += 1;
            if json {
                let v = serde_json::json!({"outcome": "held", "message": m});
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "{} [{}] HELD by rate limit: {}",
                    m.at,
                    m.receiver_name,
                    m.describe().join("; ")
                )?;
            }
        }
        Ok(())
    };
    for a in alerts {
        while let Some(due) = d.next_due().filter(|t| *t <= a.at) {
            let t = d.tick(due, false);
            emit(t, out)?;
        }
        let at = a.at;
        d.push(a.clone(), at);
        let t = d.tick(at, false);
        emit(t, out)?;
    }
    // After the last line: let every wait run out, as the daemon would, for as long as the
    // longest wait could be; then flush what is left, as a drain would.
    let mut last = alerts.last().map(|a| a.at).unwrap_or_default();
    let horizon = last.plus(std::time::Duration::from_secs(24 * 3600));
    while let Some(due) = d.next_due().filter(|t| *t <= horizon) {
        let t = d.tick(due, false);
        emit(t, out)?;
        last = last.max(due);
    }
    let t = d.tick(last, true);
    emit(t, out)?;
    Ok((sent, held))
}

fn cmd_history(
    state_dir: Option<PathBuf>,
    config: Option<&Path>,
    json: bool,
    limit: usize,
) -> anyhow::Result<()> {
    let dir = match (state_dir, config) {
        (Some(d), _) => d,
        (None, Some(c)) => Config::load(c)?
            .state_dir
            .ok_or_else(|| anyhow::anyhow!("{} sets no state_dir", c.display()))?,
        (None, None) => anyhow::bail!("give --state-dir or --config"),
    };
    let path = notify::state::path(&dir);
    let journal = notify::journal::read(&dir)
        .with_context(|| format!("cannot read {}", dir.join(notify::journal::FILE).display()))?;
    // Queued and not yet sent or failed: in an outbox, or in the journal of a daemon that
    // stopped before delivering them (it sends them when it starts again).
    let in_flight: Vec<serde_json::Value> = journal
        .pending
        .iter()
        .map(|p| match &p.message {
            Ok(m) => serde_json::json!({
                "id": p.id, "at": m.at, "receiver": m.receiver_name, "group": m.group,
                "what": m.describe(),
            }),
            Err(u) => serde_json::json!({
                "id": p.id, "receiver": u.receiver, "group": u.group,
                "what": ["(unreadable journal record)"], "error": u.error,
            }),
        })
        .collect();
    let text = match std::fs::read(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !in_flight.is_empty() => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "no notification state in {} (has the daemon run with this state_dir?)",
                dir.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let saved: notify::state::Saved = match text {
        Some(text) => serde_json::from_slice(&text)
            .with_context(|| format!("{} is not valid notification state", path.display()))?,
        None => notify::state::Saved::default(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let skip = saved.history.len().saturating_sub(limit);
    if json {
        let v = serde_json::json!({
            "firing": saved.groups.iter().flat_map(|g| g.members.iter().map(|m| serde_json::json!({
                "rule": m.rule, "labels": m.labels, "severity": m.severity,
                "since": logwarden::event::Ts(m.since_ms),
            }))).collect::<Vec<_>>(),
            "receivers": saved.counts,
            "in_flight": in_flight,
            "history": &saved.history[skip..],
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "firing:")?;
    let mut any = false;
    for g in &saved.groups {
        for m in &g.members {
            any = true;
            let labels = logwarden::event::Labels::from_pairs(
                m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
            writeln!(
                out,
                "  {} {}{} since {}",
                m.severity.as_str(),
                m.rule,
                labels,
                logwarden::event::Ts(m.since_ms)
            )?;
        }
    }
    if !any {
        writeln!(out, "  (none)")?;
    }
    writeln!(out, "receivers:")?;
    for (name, c) in &saved.counts {
        writeln!(
            out,
            "  {name}: {} sent, {} held, {} failed, {} retries{}",
            c.sent,
            c.held,
            c.failed,
            c.retries,
            if c.down {
                " (last delivery failed)"
            } else {
                ""
            }
        )?;
    }
    if !in_flight.is_empty() {
        writeln!(out, "in flight (queued, not yet sent or failed):")?;
        for f in &in_flight {
            let what: Vec<&str> = f["what"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w.as_str())
                .collect();
            writeln!(
                out,
                "  {} {} {}: {}",
                f["at"].as_str().unwrap_or("?"),
                f["receiver"].as_str().unwrap_or("?"),
                f["group"].as_str().unwrap_or(""),
                what.join("; ")
            )?;
        }
    }
    writeln!(out, "log (oldest first):")?;
    for e in &saved.history[skip..] {
        let outcome = serde_json::to_value(e.outcome)?;
        write!(
            out,
            "  {} {:<6} {} {}: {}",
            e.at,
            outcome.as_str().unwrap_or("?"),
            e.receiver,
            e.group,
            e.what.join("; ")
        )?;
        if e.attempts > 1 {
            write!(out, " ({} attempts)", e.attempts)?;
        }
        if let Some(err) = &e.error {
            write!(out, " — {err}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
