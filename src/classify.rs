//! Classification: pattern packs compiled into a [`PatternSet`] that turns one line into the
//! index of the pattern that wins it.
//!
//! A pack is a TOML file of ordered `[[pattern]]`s (see `patterns/default.toml`). The first
//! pattern (highest `priority`, then file order) that matches a line and is not vetoed by one
//! of its `exclude` regexes wins; a line matches at most one kind.
//!
//! Most lines match nothing, so the work is in ruling patterns out cheaply. Each pattern's
//! *required literals* ([`literals`]: strings one of which is in every match) go into one
//! Aho-Corasick automaton; a line holding none of them is decided without running a regex.
//! A line holding some runs only the patterns those literals belong to, in priority order,
//! until one matches. Patterns without a usable literal (`[A-Z]+ failed` has ` failed`, but
//! `^\d+$` has none) share one overlapping set search. Over a whole buffer
//! ([`PatternSet::count_buffer`]) the automaton and that set jump straight to candidate
//! lines. Only the winner runs its captures, and only when it has labels or a value.
//!
//! Pure and synchronous: no I/O after load, no clock, no locks on the hot path (the regex
//! engines keep their scratch space in thread-local pools; [`Scratch`] holds the rest).

mod literals;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aho_corasick::AhoCorasick;
use regex_automata::meta;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternSet as MatchedSet};
use serde::Deserialize;

use crate::event::Labels;

/// The shipped default pack, embedded in the binary.
pub const DEFAULT_PACK: &str = include_str!("../patterns/default.toml");
/// The name under which the embedded default pack is referred to in `packs = [...]`.
pub const DEFAULT_PACK_NAME: &str = "default";

/// Largest compiled program one pattern may produce (bytes). A hostile or accidental
/// `(a{1000}){1000}` fails at load with a clear error instead of eating memory.
pub const REGEX_SIZE_LIMIT: usize = 4 << 20;

/// Lazy-DFA cache per multi-pattern engine (bytes): grows only as states are built.
pub const LAZY_DFA_CACHE: usize = 32 << 20;

/// Built-in kinds, most severe first.
pub const BUILTIN_KINDS: [&str; 5] = ["oom", "crash", "error", "downloaded", "processed"];

/// Severity rank of a kind when several lines of one incident disagree: oom > crash > error >
/// user kinds > downloaded = processed. Higher wins.
pub fn kind_rank(kind: &str) -> u8 {
    match kind {
        "oom" => 5,
        "crash" => 4,
        "error" => 3,
        "downloaded" | "processed" => 1,
        _ => 2,
    }
}

/// A pattern as written in a pack file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPattern {
    /// Unique name within the loaded set, e.g. `celery-task-succeeded`.
    pub name: String,
    /// Kind of event the pattern produces.
    pub kind: String,
    /// Rust regex, matched against the line's bytes.
    pub regex: String,
    /// Higher runs first; equal priorities keep file order. Default: 0.
    #[serde(default)]
    pub priority: i32,
    /// Named captures to keep as labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Named capture parsed as a number (e.g. a duration in seconds).
    #[serde(default)]
    pub value: Option<String>,
    /// Hard negatives: if any matches the line, this pattern does not (the next one may).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Names of patterns whose events, arriving from the same source within `fold_window`
    /// after this pattern's event, are folded into it (one incident, one event).
    #[serde(default)]
    pub folds: Vec<String>,
    /// How long after this pattern's event follow-ups are folded. Default: 2s.
    #[serde(default, with = "crate::config::opt_duration")]
    pub fold_window: Option<Duration>,
    /// Free text for people reading the pack.
    #[serde(default)]
    pub description: Option<String>,
}

/// The `[pack]` table of a pack file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PackMeta {
    /// Pack name, for listings.
    #[serde(default)]
    pub name: Option<String>,
    /// What the pack recognises.
    #[serde(default)]
    pub description: Option<String>,
}

/// A whole pack file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPack {
    /// Metadata.
    #[serde(default)]
    pub pack: PackMeta,
    /// Patterns in file order.
    #[serde(default, rename = "pattern")]
    pub patterns: Vec<RawPattern>,
}

/// Patterns plus the file they came from, ready to be compiled.
#[derive(Debug, Clone)]
pub struct PackSource {
    /// Path or `default (embedded)`, used in every error message.
    pub file: String,
    /// Parsed patterns in file order.
    pub patterns: Vec<RawPattern>,
}

/// Why a pack could not be loaded. Every variant names the file; pattern errors name the
/// pattern and quote the bad value.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// The pack file could not be read.
    #[error("cannot read pattern pack {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The pack file is not valid TOML or has unknown keys.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// toml's message (with line and column).
        message: String,
    },
    /// A pattern's field is invalid.
    #[error("{file}: pattern {name:?}: {field}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The pattern's name.
        name: String,
        /// The field, e.g. `regex` or `exclude[1]`.
        field: String,
        /// What is wrong, quoting the value.
        message: String,
    },
}

/// Parses a pack file's text.
pub fn parse_pack(file: &str, text: &str) -> Result<PackSource, PatternError> {
    let raw: RawPack = toml::from_str(text).map_err(|e| PatternError::Parse {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    Ok(PackSource {
        file: file.to_string(),
        patterns: raw.patterns,
    })
}

/// Loads a pack by name (`default`) or path.
pub fn load_pack(spec: &str, base: Option<&Path>) -> Result<PackSource, PatternError> {
    if spec == DEFAULT_PACK_NAME {
        return parse_pack("patterns/default.toml (embedded)", DEFAULT_PACK);
    }
    let path = match base {
        Some(dir) if Path::new(spec).is_relative() => dir.join(spec),
        _ => Path::new(spec).to_path_buf(),
    };
    let file = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| PatternError::Read {
        file: file.clone(),
        source,
    })?;
    parse_pack(&file, &text)
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// Unique name.
    pub name: Arc<str>,
    /// Kind it produces.
    pub kind: Arc<str>,
    /// File it came from.
    pub file: Arc<str>,
    /// The source, as written.
    source: String,
    /// Built without a prefilter (see [`build_pattern`]).
    regex: meta::Regex,
    excludes: Option<meta::Regex>,
    /// (label name, capture group index).
    labels: Vec<(Arc<str>, usize)>,
    value: Option<usize>,
    /// What this pattern's events fold: later events of these patterns, or whole records.
    pub folds: Vec<FoldTarget>,
    /// Fold window. Default 2s.
    pub fold_window: Duration,
    /// Whether the pattern needs captures at all.
    needs_captures: bool,
}

impl Pattern {
    /// The regex source.
    pub fn regex(&self) -> &str {
        &self.source
    }
}

/// Multi-line record kinds (see `records`), as named in `folds = ["record:python"]`.
pub const RECORD_KINDS: [&str; 4] = ["python", "java", "go", "rust"];

/// A follow-up that a pattern's event absorbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldTarget {
    /// An event won by this pattern (index into the set).
    Pattern(usize),
    /// A multi-line record of this kind, whatever pattern won it (e.g. the traceback that
    /// Celery prints after `Task … raised unexpected: …`).
    Record(&'static str),
}

/// Default fold window.
pub const DEFAULT_FOLD_WINDOW: Duration = Duration::from_secs(2);

/// Compiled, ordered patterns. Cheap to share (`Arc<PatternSet>`), `Send + Sync`.
#[derive(Debug, Clone)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
    /// Each pattern's required literals (`None`: searched by the residual set).
    required: Vec<Option<Vec<Vec<u8>>>>,
    /// The required literals of the patterns that have them; `None` when none has.
    literals: Option<Literals>,
    /// Patterns without required literals (indices into `patterns`, ascending).
    residual: Vec<usize>,
    /// Overlapping search of the `residual` patterns over one line (`MatchKind::All`).
    set: Option<meta::Regex>,
    /// Leftmost-first search of the `residual` patterns over a whole buffer in multi-line
    /// mode; `None` when one of them uses `\A`/`\z`, whose meaning changes across a buffer.
    scan: Option<meta::Regex>,
    kinds: Vec<Arc<str>>,
    /// Set by [`for_counting`](PatternSet::for_counting) only: the literals as a DFA that
    /// [`count_buffer`](PatternSet::count_buffer) walks byte by byte.
    walk: Option<Arc<Walk>>,
    /// Per pattern: its literals are exactly the strings every match of it ends with.
    ends_with_literal: Vec<bool>,
}

/// The literal gate as an Aho-Corasick DFA with standard (overlapping) semantics, for
/// counting: one table lookup per byte of a buffer, and a line is looked at only when a
/// literal ends in it. A DFA over the default pack's ~730 literals costs a few MiB, which
/// the daemon cannot spend, so only `classify --lines --format counts` builds it.
#[derive(Debug)]
struct Walk {
    dfa: aho_corasick::dfa::DFA,
    start: aho_corasick::automaton::StateID,
    /// Per pattern: when every match of it ends with one of its literals (`klog-error`'s
    /// `] `, on three lines in four), its regex reversed, run anchored back from where the
    /// walk saw the literal end: a line whose `] ` is no klog header fails within a few
    /// bytes, where a forward search reads the whole line.
    /// Built on first use: most patterns' literals never occur in a given log.
    suffix: Vec<std::sync::OnceLock<Option<regex_automata::hybrid::dfa::DFA>>>,
}

impl Walk {
    /// Where the first literal that starts at or after `from` ends, and the state there.
    /// The hot loop of counting: one table lookup and one comparison per byte (with no
    /// prefilter, a standard DFA's only special states are its match states and the dead
    /// state, which it never enters).
    fn next_match(
        &self,
        buf: &[u8],
        from: usize,
    ) -> Option<(usize, aho_corasick::automaton::StateID)> {
        use aho_corasick::automaton::Automaton;
        let (dfa, no) = (&self.dfa, aho_corasick::Anchored::No);
        let mut sid = self.start;
        for (j, &b) in buf.get(from..)?.iter().enumerate() {
            sid = dfa.next_state(no, sid, b);
            if dfa.is_special(sid) && dfa.is_match(sid) {
                return Some((from + j, sid));
            }
        }
        None
    }
}

/// Required literals of many patterns in one automaton.
#[derive(Debug, Clone)]
struct Literals {
    /// Leftmost-first over the literals sorted bytewise: of the literals that start at one
    /// position it reports the shortest, since a prefix sorts first.
    ac: AhoCorasick,
    /// Literal id → the patterns that own it: `owners[own[id]..own[id + 1]]`.
    own: Vec<u32>,
    owners: Vec<u32>,
    /// Literal id → the longer literals it is a prefix of: `longer[ext[id]..ext[id + 1]]`.
    ext: Vec<u32>,
    longer: Vec<u32>,
    /// Literal id → its bytes: `bytes[at[id]..at[id + 1]]`.
    at: Vec<u32>,
    bytes: Vec<u8>,
}

impl Literals {
    /// Builds the automaton; `per_pattern[i]` is pattern `i`'s literal set (or `None`).
    fn build(per_pattern: &[Option<Vec<Vec<u8>>>]) -> Result<Option<Literals>, String> {
        let mut by_literal: std::collections::BTreeMap<&[u8], Vec<u32>> = Default::default();
        for (i, set) in per_pattern.iter().enumerate() {
            for lit in set.iter().flatten() {
                by_literal.entry(lit).or_default().push(i as u32);
            }
        }
        if by_literal.is_empty() {
            return Ok(None);
        }
        let lits: Vec<&[u8]> = by_literal.keys().copied().collect();
        let (mut own, mut owners) = (vec![0u32], Vec::new());
        let (mut ext, mut longer) = (vec![0u32], Vec::new());
        let (mut at, mut bytes) = (vec![0u32], Vec::new());
        for (id, (lit, mine)) in by_literal.iter().enumerate() {
            owners.extend(mine);
            own.push(owners.len() as u32);
            // The literals that extend this one follow it in bytewise order.
            let n = lits[id + 1..]
                .iter()
                .take_while(|l| l.starts_with(lit))
                .count();
            longer.extend((id + 1..id + 1 + n).map(|b| b as u32));
            ext.push(longer.len() as u32);
            bytes.extend_from_slice(lit);
            at.push(bytes.len() as u32);
        }
        let ac = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostFirst)
            .build(&lits)
            .map_err(|e| e.to_string())?;
        Ok(Some(Literals {
            ac,
            own,
            owners,
            ext,
            longer,
            at,
            bytes,
        }))
    }

    /// The literals as a DFA reporting every literal that ends at each byte, or `None` when
    /// they are few enough for the automaton's Teddy SIMD search (up to 128), which skips
    /// text faster than a DFA walks it, or the DFA cannot be built.
    fn walk(&self) -> Option<Walk> {
        use aho_corasick::automaton::Automaton;
        let lits: Vec<&[u8]> = self
            .at
            .windows(2)
            .map(|w| &self.bytes[w[0] as usize..w[1] as usize])
            .collect();
        let teddy = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(&lits)
            .build();
        if teddy.is_some() {
            return None;
        }
        let dfa = aho_corasick::dfa::Builder::new()
            .match_kind(aho_corasick::MatchKind::Standard)
            .start_kind(aho_corasick::StartKind::Unanchored)
            .prefilter(false)
            .build(&lits)
            .ok()?;
        let start = dfa.start_state(aho_corasick::Anchored::No).ok()?;
        Some(Walk {
            dfa,
            start,
            suffix: Vec::new(),
        })
    }

    /// Marks in `bits` the patterns that own literal `id`.
    fn mark(&self, id: usize, bits: &mut [u64]) {
        for &p in &self.owners[self.own[id] as usize..self.own[id + 1] as usize] {
            bits[p as usize / 64] |= 1 << (p % 64);
        }
    }

    /// Marks in `bits` exactly the patterns whose literals occur in `line` at or after
    /// `from` (nothing starts before it); whether any did.
    ///
    /// A leftmost search reports the first position where a literal starts; searching again
    /// from the next byte reports the next such position, so every start is seen, even one
    /// inside an earlier literal. The literals that start where the reported (shortest) one
    /// does are the longer ones it is a prefix of, checked in place. This replaced a
    /// non-overlapping search whose skipped occurrences needed a load-time closure and, for
    /// the default pack's short literals (`] `), an overlapping search of most lines:
    /// 11,422 → 10,656 instructions per line of the default pack's counting (bench pack
    /// 2,137 → 1,987).
    fn candidates(&self, line: &[u8], from: usize, bits: &mut [u64]) -> bool {
        let mut input = aho_corasick::Input::new(line).range(from.min(line.len())..);
        let mut any = false;
        while let Some(m) = self.ac.find(input.clone()) {
            any = true;
            let id = m.pattern().as_usize();
            self.mark(id, bits);
            let rest = &line[m.start()..];
            for &b in &self.longer[self.ext[id] as usize..self.ext[id + 1] as usize] {
                let b = b as usize;
                if rest.starts_with(&self.bytes[self.at[b] as usize..self.at[b + 1] as usize]) {
                    self.mark(b, bits);
                }
            }
            input.set_start(m.start() + 1);
        }
        any
    }
}

/// Per-thread scratch space for [`PatternSet::classify`], so classification allocates nothing.
#[derive(Debug)]
pub struct Scratch {
    matched: MatchedSet,
    /// Candidate patterns of the current line, one bit each.
    candidates: Vec<u64>,
    /// Candidates already known to match (found by the residual set search).
    matched_bits: Vec<u64>,
    locs: HashMap<usize, regex_automata::util::captures::Captures>,
    caches: Caches,
}

/// Each regex's search cache, made on first use. A meta regex searched without one takes a
/// cache from its pool, where every thread but the first to use the regex takes a lock,
/// twice per search (`Pool::get_slow`, `put_value`: ~2.5% of the daemon's CPU in perf).
#[derive(Debug)]
struct Caches {
    patterns: Vec<Option<meta::Cache>>,
    excludes: Vec<Option<meta::Cache>>,
    set: Option<meta::Cache>,
    scan: Option<meta::Cache>,
    /// For [`Walk::suffix`].
    suffix: Vec<Option<regex_automata::hybrid::dfa::Cache>>,
}

impl Caches {
    /// Whether pattern `i` (`p`) matches `line`.
    fn is_match(&mut self, i: usize, p: &Pattern, line: &[u8]) -> bool {
        let cache = self.patterns[i].get_or_insert_with(|| p.regex.create_cache());
        let input = Input::new(line).earliest(true);
        p.regex.search_half_with(cache, &input).is_some()
    }

    /// Whether one of pattern `i`'s excludes matches `line`.
    fn vetoed(&mut self, i: usize, p: &Pattern, line: &[u8]) -> bool {
        let Some(ex) = &p.excludes else { return false };
        let cache = self.excludes[i].get_or_insert_with(|| ex.create_cache());
        let input = Input::new(line).earliest(true);
        ex.search_half_with(cache, &input).is_some()
    }
}

/// What the winning pattern extracted from a line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Extracted {
    /// Captured labels (values lossy UTF-8, at most [`MAX_LABEL_VALUE`] bytes).
    pub labels: Labels,
    /// The numeric value, if the pattern has one and it parsed.
    pub value: Option<f64>,
}

/// Longest kept label value, in bytes; longer values are cut.
pub const MAX_LABEL_VALUE: usize = 128;

impl PatternSet {
    /// Compiles packs in order: earlier packs' patterns come first at equal priority.
    /// `disable` names patterns to leave out. Errors name the file and the pattern.
    pub fn compile(packs: &[PackSource], disable: &[String]) -> Result<PatternSet, PatternError> {
        let mut raws: Vec<(&str, &RawPattern)> = Vec::new();
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for pack in packs {
            for p in &pack.patterns {
                if disable.iter().any(|d| d == &p.name) {
                    continue;
                }
                if let Some(first) = seen.insert(&p.name, &pack.file) {
                    return Err(invalid(
                        &pack.file,
                        &p.name,
                        "name",
                        format!("duplicate pattern name {:?} (also in {first})", p.name),
                    ));
                }
                raws.push((&pack.file, p));
            }
        }
        // Stable: equal priorities keep pack and file order.
        raws.sort_by_key(|(_, p)| std::cmp::Reverse(p.priority));

        let index: HashMap<&str, usize> = raws
            .iter()
            .enumerate()
            .map(|(i, (_, p))| (p.name.as_str(), i))
            .collect();
        let mut kinds: Vec<Arc<str>> = BUILTIN_KINDS.iter().map(|k| Arc::from(*k)).collect();
        let mut patterns = Vec::with_capacity(raws.len());
        for (file, raw) in &raws {
            let pattern = compile_one(file, raw, &index)?;
            if !kinds.contains(&pattern.kind) {
                kinds.push(pattern.kind.clone());
            }
            patterns.push(pattern);
        }
        let mut ends_with_literal = Vec::with_capacity(raws.len());
        let per_pattern: Vec<Option<Vec<Vec<u8>>>> = raws
            .iter()
            .map(|(_, p)| {
                let hir = regex_syntax::ParserBuilder::new()
                    .utf8(false)
                    .build()
                    .parse(&p.regex)
                    .ok();
                let required = hir.as_ref().and_then(literals::required);
                ends_with_literal.push(
                    required.is_some() && hir.as_ref().and_then(literals::suffix) == required,
                );
                required
            })
            .collect();
        let literals = Literals::build(&per_pattern).map_err(|e| set_error(&raws, e))?;
        let residual: Vec<usize> = (0..raws.len())
            .filter(|&i| per_pattern[i].is_none())
            .collect();
        let residual_raws: Vec<(&str, &RawPattern)> = residual.iter().map(|&i| raws[i]).collect();
        let sources: Vec<&str> = residual_raws
            .iter()
            .map(|(_, p)| p.regex.as_str())
            .collect();
        let (set, scan) = if sources.is_empty() {
            (None, None)
        } else {
            let set = build_many(&sources, MatchKind::All, false)
                .map_err(|e| set_error(&residual_raws, e))?;
            let anchors = sources.iter().any(|s| has_text_anchor(s));
            let scan = if anchors {
                None
            } else {
                Some(build_scan(&sources).map_err(|e| set_error(&residual_raws, e))?)
            };
            (Some(set), scan)
        };
        Ok(PatternSet {
            patterns,
            required: per_pattern,
            literals,
            residual,
            set,
            scan,
            kinds,
            walk: None,
            ends_with_literal,
        })
    }

    /// This set for counting whole buffers ([`count_buffer`](Self::count_buffer)) faster at
    /// the cost of memory: the literal gate is also built as a DFA (a few MiB for the default
    /// pack) that is walked byte by byte, when the literals are too many for the automaton's
    /// SIMD prefilter and there are no residual patterns (else the set is returned as it is).
    /// The daemon keeps the small automaton; results are identical either way.
    pub fn for_counting(&self) -> PatternSet {
        let mut set = self.clone();
        if self.set.is_none() {
            set.walk = self
                .literals
                .as_ref()
                .and_then(Literals::walk)
                .map(|mut walk| {
                    walk.suffix = (0..self.patterns.len())
                        .map(|_| Default::default())
                        .collect();
                    Arc::new(walk)
                });
        }
        set
    }

    /// Pattern `i`'s regex as a reverse lazy DFA (see [`Walk::suffix`]).
    fn reversed(&self, i: usize) -> Option<regex_automata::hybrid::dfa::DFA> {
        use regex_automata::{hybrid::dfa::DFA, nfa::thompson};
        let src = &self.patterns[i].source;
        DFA::builder()
            .configure(DFA::config().match_kind(MatchKind::All))
            .syntax(syntax::Config::new().utf8(false))
            .thompson(
                thompson::Config::new()
                    .reverse(true)
                    .which_captures(thompson::WhichCaptures::None)
                    .nfa_size_limit(Some(REGEX_SIZE_LIMIT)),
            )
            .build(src)
            .ok()
    }

    /// The default pack alone.
    pub fn default_pack() -> Result<PatternSet, PatternError> {
        PatternSet::compile(&[load_pack(DEFAULT_PACK_NAME, None)?], &[])
    }

    /// Patterns in priority order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// The literals that gate pattern `i` (one of them is in every line it matches), or
    /// `None` when it has none and every line is searched for it.
    pub fn required_literals(&self, i: usize) -> Option<&[Vec<u8>]> {
        self.required.get(i)?.as_deref()
    }

    /// Every kind a pattern can produce: the built-ins first, then user kinds.
    pub fn kinds(&self) -> &[Arc<str>] {
        &self.kinds
    }

    /// Index of a pattern by name.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.patterns.iter().position(|p| &*p.name == name)
    }

    /// Fresh scratch space for [`classify`](Self::classify).
    pub fn scratch(&self) -> Scratch {
        let words = self.patterns.len().div_ceil(64);
        Scratch {
            matched: MatchedSet::new(self.residual.len()),
            candidates: vec![0; words],
            matched_bits: vec![0; words],
            locs: HashMap::new(),
            caches: Caches {
                patterns: (0..self.patterns.len()).map(|_| None).collect(),
                excludes: (0..self.patterns.len()).map(|_| None).collect(),
                set: None,
                scan: None,
                suffix: (0..self.patterns.len()).map(|_| None).collect(),
            },
        }
    }

    /// The index of the pattern that wins `line`, or `None` (the line is `other`).
    pub fn classify(&self, line: &[u8], scratch: &mut Scratch) -> Option<usize> {
        self.classify_from(line, 0, scratch)
    }

    /// [`classify`](Self::classify) when no literal starts before `from`: a buffer scan
    /// has already searched the line's head.
    fn classify_from(&self, line: &[u8], from: usize, scratch: &mut Scratch) -> Option<usize> {
        let Scratch {
            matched,
            candidates,
            matched_bits,
            caches,
            ..
        } = scratch;
        let mut any = self
            .literals
            .as_ref()
            .is_some_and(|l| l.candidates(line, from, candidates));
        if let Some(set) = &self.set {
            matched.clear();
            let cache = caches.set.get_or_insert_with(|| set.create_cache());
            set.which_overlapping_matches_with(cache, &Input::new(line), matched);
            for pid in matched.iter() {
                let p = self.residual[pid.as_usize()];
                candidates[p / 64] |= 1 << (p % 64);
                matched_bits[p / 64] |= 1 << (p % 64);
                any = true;
            }
        }
        if !any {
            return None;
        }
        self.decide(line, scratch)
    }

    /// The first of the candidates marked in `scratch` (in priority order) that matches
    /// `line` and is not vetoed; `matched_bits` marks candidates already known to match.
    /// Clears both.
    fn decide(&self, line: &[u8], scratch: &mut Scratch) -> Option<usize> {
        let Scratch {
            candidates,
            matched_bits,
            caches,
            ..
        } = scratch;
        let mut won = None;
        for (w, (bits, known)) in candidates
            .iter_mut()
            .zip(matched_bits.iter_mut())
            .enumerate()
        {
            let (mut b, k) = (std::mem::take(bits), std::mem::take(known));
            while won.is_none() && b != 0 {
                let bit = b.trailing_zeros() as usize;
                b &= b - 1;
                let i = w * 64 + bit;
                let p = &self.patterns[i];
                if (k >> bit & 1 == 1 || caches.is_match(i, p, line)) && !caches.vetoed(i, p, line)
                {
                    won = Some(i);
                }
            }
        }
        won
    }

    /// The winner of `line` by running every pattern in priority order: the definition
    /// [`classify`](Self::classify) must agree with (tests and fuzzing compare them).
    pub fn classify_naive(&self, line: &[u8]) -> Option<usize> {
        self.patterns.iter().position(|p| {
            p.regex.is_match(line) && p.excludes.as_ref().is_none_or(|ex| !ex.is_match(line))
        })
    }

    /// Runs the winner's captures (only when it has labels or a value).
    pub fn extract(&self, index: usize, line: &[u8], scratch: &mut Scratch) -> Extracted {
        let p = &self.patterns[index];
        let mut out = Extracted::default();
        if !p.needs_captures {
            return out;
        }
        let caps = scratch
            .locs
            .entry(index)
            .or_insert_with(|| p.regex.create_captures());
        let cache = scratch.caches.patterns[index].get_or_insert_with(|| p.regex.create_cache());
        p.regex.search_captures_with(cache, &Input::new(line), caps);
        if !caps.is_match() {
            return out;
        }
        for (name, group) in &p.labels {
            if let Some(span) = caps.get_group(*group) {
                let (s, e) = (span.start, span.end);
                let v = &line[s..e.min(s + MAX_LABEL_VALUE)];
                out.labels
                    .insert(name.clone(), Arc::from(String::from_utf8_lossy(v).as_ref()));
            }
        }
        if let Some(group) = p.value {
            out.value = caps
                .get_group(group)
                .and_then(|span| std::str::from_utf8(&line[span.range()]).ok())
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite());
        }
        out
    }

    /// Counts the winning pattern of every line in `buf` (complete lines, `\n`-terminated,
    /// the last one possibly not), adding to `hits` (one slot per pattern) and returning the
    /// number of lines. Lines longer than `max_line` are classified by their head, like the
    /// daemon's sources do. Uses a whole-buffer scan so lines that match no pattern cost
    /// almost nothing; the result is identical to calling [`classify`](Self::classify) per line.
    pub fn count_buffer(
        &self,
        buf: &[u8],
        max_line: usize,
        hits: &mut [u64],
        scratch: &mut Scratch,
        mut on_line: impl FnMut(&[u8], Option<usize>),
    ) -> u64 {
        let lines = memchr::memchr_iter(b'\n', buf).count() as u64
            + u64::from(!buf.is_empty() && buf.last() != Some(&b'\n'));
        // `first_lit`: where the first literal at or after `start` begins (the buffer scan
        // found it), so the line's own literal search starts there.
        let mut classify_line =
            |start: usize, first_lit: usize, hits: &mut [u64], scratch: &mut Scratch| -> usize {
                let end = memchr::memchr(b'\n', &buf[start..]).map_or(buf.len(), |i| start + i);
                let mut line = &buf[start..end];
                line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() > max_line {
                    line = &line[..max_line];
                }
                let won = self.classify_from(line, first_lit.saturating_sub(start), scratch);
                if let Some(i) = won {
                    hits[i] += 1;
                }
                on_line(line, won);
                end + 1
            };
        if let (Some(walk), Some(lits)) = (&self.walk, &self.literals) {
            self.walk_buffer(walk, lits, buf, max_line, hits, scratch, on_line);
            return lines;
        }
        if self.set.is_some() && self.scan.is_none() {
            // A residual pattern with `\A`/`\z`: every line is a candidate.
            let mut at = 0;
            while at < buf.len() {
                at = classify_line(at, at, hits, scratch);
            }
            return lines;
        }
        // The next literal occurrence and the next residual match end at or after `at`
        // (`usize::MAX`: none left); each is searched again only once `at` passes it.
        let (mut lit, mut res) = (0, 0);
        let mut at = 0;
        let mut first = true;
        while at < buf.len() {
            if lit < at || first {
                lit = self.literals.as_ref().map_or(usize::MAX, |l| {
                    l.ac.find(aho_corasick::Input::new(buf).range(at..))
                        .map_or(usize::MAX, |m| m.start())
                });
            }
            if res < at || std::mem::take(&mut first) {
                // Forward only, stopping at the first match end: matches cannot span
                // lines (see `build_scan`), so the line holding the end holds the match.
                res = self.scan.as_ref().map_or(usize::MAX, |scan| {
                    let input = Input::new(buf).range(at..).earliest(true);
                    let cache = scratch
                        .caches
                        .scan
                        .get_or_insert_with(|| scan.create_cache());
                    scan.search_half_with(cache, &input)
                        .map_or(usize::MAX, |m| m.offset())
                });
            }
            let hit = lit.min(res);
            if hit == usize::MAX {
                break;
            }
            let start = memchr::memrchr(b'\n', &buf[..hit]).map_or(0, |i| i + 1);
            at = classify_line(start.max(at), lit, hits, scratch);
        }
        lines
    }

    /// [`count_buffer`](Self::count_buffer) with the counting DFA ([`Walk`]; no residual
    /// patterns). The DFA runs over the whole buffer; no literal holds a `\n`, so after
    /// each `\n` it is back in its start state and a literal it reports lies within one
    /// line. At the first literal of a line the walk goes on to the line's end marking every
    /// literal it passes, and the marked patterns are tried; a line holding no literal costs
    /// one transition per byte and nothing else.
    #[allow(clippy::too_many_arguments)]
    fn walk_buffer(
        &self,
        walk: &Walk,
        lits: &Literals,
        buf: &[u8],
        max_line: usize,
        hits: &mut [u64],
        scratch: &mut Scratch,
        mut on_line: impl FnMut(&[u8], Option<usize>),
    ) {
        use aho_corasick::automaton::Automaton;
        let dfa = &walk.dfa;
        let no = aho_corasick::Anchored::No;
        // The literals ending at `line[..end]`: their patterns become candidates, except
        // that a pattern whose matches end with them is checked there (`Walk::suffix`).
        let mark = |sid, line: &[u8], end: usize, scratch: &mut Scratch| {
            for k in 0..dfa.match_len(sid) {
                let id = dfa.match_pattern(sid, k).as_usize();
                for &p in &lits.owners[lits.own[id] as usize..lits.own[id + 1] as usize] {
                    let (p, w, bit) = (p as usize, p as usize / 64, 1 << (p % 64));
                    let rev = match self.ends_with_literal[p] {
                        true => walk.suffix[p].get_or_init(|| self.reversed(p)).as_ref(),
                        false => None,
                    };
                    let Some(rev) = rev else {
                        scratch.candidates[w] |= bit;
                        continue;
                    };
                    if scratch.matched_bits[w] & bit != 0 || end > line.len() {
                        continue; // known to match, or the literal ran into a cut `\r`
                    }
                    let cache = scratch.caches.suffix[p].get_or_insert_with(|| rev.create_cache());
                    let input = Input::new(line)
                        .range(..end)
                        .anchored(regex_automata::Anchored::Yes)
                        .earliest(true);
                    match rev.try_search_rev(cache, &input) {
                        Ok(None) => {}
                        Ok(Some(_)) => {
                            scratch.candidates[w] |= bit;
                            scratch.matched_bits[w] |= bit;
                        }
                        // Gave up (e.g. a Unicode word boundary): the forward search decides.
                        Err(_) => scratch.candidates[w] |= bit,
                    }
                }
            }
        };
        let mut at = 0;
        while let Some((i, mut sid)) = walk.next_match(buf, at) {
            // A literal ends at `i`: decide its line.
            let start = memchr::memrchr(b'\n', &buf[..i]).map_or(0, |j| j + 1);
            let end = memchr::memchr(b'\n', &buf[i..]).map_or(buf.len(), |j| i + j);
            let full = &buf[start..end];
            let line = full.strip_suffix(b"\r").unwrap_or(full);
            let won = if line.len() > max_line {
                // Only the head counts, as on every path: its own search.
                self.classify_from(&line[..max_line], 0, scratch)
            } else {
                mark(sid, line, i + 1 - start, scratch);
                for (j, &b) in buf.iter().enumerate().take(end).skip(i + 1) {
                    sid = dfa.next_state(no, sid, b);
                    if dfa.is_match(sid) {
                        mark(sid, line, j + 1 - start, scratch);
                    }
                }
                self.decide(line, scratch)
            };
            if let Some(w) = won {
                hits[w] += 1;
            }
            on_line(line, won);
            at = end + 1;
        }
    }
}

fn build_many(pats: &[&str], kind: MatchKind, multi_line: bool) -> Result<meta::Regex, String> {
    let mut b = meta::Builder::new();
    b.configure(
        meta::Config::new()
            .match_kind(kind)
            .utf8_empty(false)
            .nfa_size_limit(Some(REGEX_SIZE_LIMIT.saturating_mul(pats.len().max(1))))
            // The default 2 MiB lazy-DFA cache thrashes with ~100 patterns on mixed logs
            // (600 µs/line measured); memory is only used as states are built.
            .hybrid_cache_capacity(LAZY_DFA_CACHE)
            // The set search needs no positions; the scan needs the match start (group 0).
            .which_captures(if multi_line {
                regex_automata::nfa::thompson::WhichCaptures::Implicit
            } else {
                regex_automata::nfa::thompson::WhichCaptures::None
            }),
    )
    .syntax(
        syntax::Config::new()
            .utf8(false)
            .multi_line(multi_line)
            .crlf(multi_line),
    );
    b.build_many(pats).map_err(|e| e.to_string())
}

/// A pattern's regex, as the `regex` crate builds it (bytes, leftmost-first, every capture
/// group) but without a prefilter. [`PatternSet::classify`] runs it only on lines where the
/// literal gate found one of its literals, so a prefilter would scan the line for what is
/// known to be there before the lazy DFA runs anyway; one forward DFA pass is cheaper:
/// 10,540 → 9,397 instructions per line of the default pack's counting (bench pack 1,994
/// → 1,999).
///
/// Errors are worded as the `regex` crate words them ([`regex_error`]).
fn build_pattern(src: &str) -> Result<meta::Regex, String> {
    let mut b = meta::Builder::new();
    b.configure(
        meta::Config::new()
            .utf8_empty(false)
            .auto_prefilter(false)
            .nfa_size_limit(Some(REGEX_SIZE_LIMIT)),
    )
    .syntax(syntax::Config::new().utf8(false));
    b.build(src).map_err(|e| match e.syntax_error() {
        Some(syntax) => regex_error(src, None, syntax),
        None => regex_error(src, e.size_limit(), &e),
    })
}

/// One regex for a pattern's `exclude`s, run only on lines the pattern matched.
///
/// Without a prefilter: the meta regex would otherwise pick its reverse-suffix strategy for
/// the default pack's excludes, which on a JSON line (the suffix `"` many times over) gives
/// up as quadratic and falls back to the PikeVM, ~80k instructions a call: 1.7k per line of
/// the default pack's counting. A forward lazy-DFA pass over a line costs little, and only
/// lines the pattern matched get one.
fn build_excludes(pats: &[&str]) -> Result<meta::Regex, String> {
    let mut b = meta::Builder::new();
    b.configure(
        meta::Config::new()
            .utf8_empty(false)
            .auto_prefilter(false)
            .nfa_size_limit(Some(REGEX_SIZE_LIMIT.saturating_mul(pats.len().max(1))))
            .which_captures(regex_automata::nfa::thompson::WhichCaptures::Implicit),
    )
    .syntax(syntax::Config::new().utf8(false));
    b.build_many(pats).map_err(|e| e.to_string())
}

/// The whole-buffer prefilter: every pattern in multi-line mode, with `\n` removed from every
/// class (`[^"]+` cannot run into the next line), so a match never spans lines and a
/// forward-only search that stops at the first match end finds a line with a match.
fn build_scan(pats: &[&str]) -> Result<meta::Regex, String> {
    let mut hirs = Vec::with_capacity(pats.len());
    for p in pats {
        // Not `crlf(true)`: that would also make `.` skip `\r`, which the per-line search
        // matches (a line "a\rb" and `a.b` were missed; found by the `pack` fuzz target).
        // `without_newline` makes `^` and `$` CRLF-aware instead.
        let hir = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .multi_line(true)
            .build()
            .parse(p)
            .map_err(|e| e.to_string())?;
        hirs.push(without_newline(&hir));
    }
    let mut b = meta::Builder::new();
    b.configure(
        meta::Config::new()
            .match_kind(MatchKind::LeftmostFirst)
            .utf8_empty(false)
            .nfa_size_limit(Some(REGEX_SIZE_LIMIT.saturating_mul(pats.len().max(1))))
            // The default 2 MiB lazy-DFA cache thrashes with ~100 patterns on mixed logs
            // (600 µs/line measured); memory is only used as states are built.
            .hybrid_cache_capacity(LAZY_DFA_CACHE)
            .which_captures(regex_automata::nfa::thompson::WhichCaptures::Implicit),
    );
    b.build_many_from_hir(&hirs).map_err(|e| e.to_string())
}

/// `hir` with `\n` removed from every character class (a literal `\n` becomes a class that
/// matches nothing: such a pattern can never match inside one line anyway), and multi-line
/// `^`/`$` made to hold before and after `\r\n` too.
fn without_newline(hir: &regex_syntax::hir::Hir) -> regex_syntax::hir::Hir {
    use regex_syntax::hir::{
        Capture, Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange, Hir, HirKind,
        Look, Repetition,
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            let mut c = c.clone();
            c.difference(&ClassUnicode::new([ClassUnicodeRange::new('\n', '\n')]));
            Hir::class(Class::Unicode(c))
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut c = c.clone();
            c.difference(&ClassBytes::new([ClassBytesRange::new(b'\n', b'\n')]));
            Hir::class(Class::Bytes(c))
        }
        HirKind::Literal(lit) if lit.0.contains(&b'\n') => Hir::fail(),
        // A line's `^`/`$` must also hold at a `\r\n` (the per-line search sees the line
        // without its `\r`).
        HirKind::Look(Look::StartLF) => Hir::look(Look::StartCRLF),
        HirKind::Look(Look::EndLF) => Hir::look(Look::EndCRLF),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Look(_) => hir.clone(),
        HirKind::Repetition(r) => Hir::repetition(Repetition {
            min: r.min,
            max: r.max,
            greedy: r.greedy,
            sub: Box::new(without_newline(&r.sub)),
        }),
        HirKind::Capture(c) => Hir::capture(Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(without_newline(&c.sub)),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(without_newline).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(without_newline).collect()),
    }
}

fn set_error(raws: &[(&str, &RawPattern)], message: String) -> PatternError {
    let files: Vec<&str> = raws.iter().map(|(f, _)| *f).collect();
    PatternError::Invalid {
        file: files.first().copied().unwrap_or("").to_string(),
        name: "(all patterns)".into(),
        field: "regex".into(),
        message: format!("the combined pattern set does not compile: {message}"),
    }
}

fn invalid(file: &str, name: &str, field: &str, message: String) -> PatternError {
    PatternError::Invalid {
        file: file.to_string(),
        name: name.to_string(),
        field: field.to_string(),
        message,
    }
}

/// True when the pattern uses `\A` or `\z`: parsed in multi-line mode, plain `^`/`$` mean
/// line boundaries (which the buffer scan preserves) and only the absolute anchors remain.
/// Such patterns disable the whole-buffer prefilter.
fn has_text_anchor(pattern: &str) -> bool {
    use regex_syntax::hir::Look;
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .multi_line(true)
        .build()
        .parse(pattern)
    else {
        return true;
    };
    let looks = hir.properties().look_set();
    looks.contains(Look::Start) || looks.contains(Look::End)
}

/// The message for a regex that does not build, worded as the `regex` crate words it: a
/// size limit as our own sentence, anything else by its error (a syntax error as the
/// parser gives it).
fn regex_error(src: &str, size_limit: Option<usize>, error: &dyn std::fmt::Display) -> String {
    match size_limit {
        Some(limit) => {
            format!("regex {src:?} compiles to more than the {limit}-byte limit; simplify it")
        }
        None => format!("invalid regex {src:?}: {error}"),
    }
}

/// Checks one `exclude` on its own, as the `regex` crate would build it (syntax, then the
/// NFA size limit), so an error names the exclude. Only the parser and the NFA compiler
/// run: the excludes are built together by [`build_excludes`].
fn check_exclude(file: &str, name: &str, field: &str, src: &str) -> Result<(), PatternError> {
    use regex_automata::nfa::thompson;
    let hir = syntax::parse_with(src, &syntax::Config::new().utf8(false))
        .map_err(|e| invalid(file, name, field, regex_error(src, None, &e)))?;
    thompson::Compiler::new()
        .configure(thompson::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
        .build_from_hir(&hir)
        .map_err(|e| invalid(file, name, field, regex_error(src, e.size_limit(), &e)))?;
    Ok(())
}

fn compile_one(
    file: &str,
    raw: &RawPattern,
    index: &HashMap<&str, usize>,
) -> Result<Pattern, PatternError> {
    let name = raw.name.as_str();
    if name.is_empty() {
        return Err(invalid(file, name, "name", "must not be empty".into()));
    }
    if !valid_kind(&raw.kind) {
        return Err(invalid(
            file,
            name,
            "kind",
            format!(
                "{:?} is not a valid kind (letters, digits, '_' and '-', starting with a letter)",
                raw.kind
            ),
        ));
    }
    // Built once: the meta regex gives the errors (worded as the `regex` crate words them)
    // and the capture names. Checking with the `regex` crate as well doubled the load:
    // 175M of the default pack's 298M instructions.
    let regex = build_pattern(&raw.regex).map_err(|e| invalid(file, name, "regex", e))?;
    let mut excludes = Vec::with_capacity(raw.exclude.len());
    for (i, ex) in raw.exclude.iter().enumerate() {
        check_exclude(file, name, &format!("exclude[{i}]"), ex)?;
        excludes.push(ex.as_str());
    }
    let excludes = if excludes.is_empty() {
        None
    } else {
        Some(build_excludes(&excludes).map_err(|e| invalid(file, name, "exclude", e))?)
    };
    let group = |field: &str, cap: &str| -> Result<usize, PatternError> {
        regex
            .group_info()
            .pattern_names(regex_automata::PatternID::ZERO)
            .position(|n| n == Some(cap))
            .ok_or_else(|| {
                invalid(
                    file,
                    name,
                    field,
                    format!("no named capture {cap:?} in regex {:?}", raw.regex),
                )
            })
    };
    let mut labels = Vec::new();
    for l in &raw.labels {
        labels.push((Arc::from(l.as_str()), group("labels", l)?));
    }
    let value = match &raw.value {
        Some(v) => Some(group("value", v)?),
        None => None,
    };
    let mut folds = Vec::new();
    for f in &raw.folds {
        if let Some(kind) = f.strip_prefix("record:") {
            match RECORD_KINDS.iter().find(|k| **k == kind) {
                Some(k) => folds.push(FoldTarget::Record(k)),
                None => {
                    return Err(invalid(
                        file,
                        name,
                        "folds",
                        format!("unknown record kind {f:?} (known: record:python, record:java, record:go, record:rust)"),
                    ))
                }
            }
            continue;
        }
        match index.get(f.as_str()) {
            Some(&i) => folds.push(FoldTarget::Pattern(i)),
            None => {
                return Err(invalid(
                    file,
                    name,
                    "folds",
                    format!("unknown pattern {f:?}"),
                ))
            }
        }
    }
    Ok(Pattern {
        name: Arc::from(name),
        kind: Arc::from(raw.kind.as_str()),
        file: Arc::from(file),
        needs_captures: !labels.is_empty() || value.is_some(),
        regex,
        source: raw.regex.clone(),
        excludes,
        labels,
        value,
        folds,
        fold_window: raw.fold_window.unwrap_or(DEFAULT_FOLD_WINDOW),
    })
}

/// Kinds are identifiers: they become metric label values and config references.
pub fn valid_kind(kind: &str) -> bool {
    let mut chars = kind.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && kind != "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(text: &str) -> PatternSet {
        PatternSet::compile(&[parse_pack("test.toml", text).unwrap()], &[]).unwrap()
    }

    fn err(text: &str) -> String {
        match parse_pack("test.toml", text).and_then(|p| PatternSet::compile(&[p], &[])) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn winner(set: &PatternSet, line: &str) -> Option<String> {
        let mut s = set.scratch();
        set.classify(line.as_bytes(), &mut s)
            .map(|i| set.patterns()[i].name.to_string())
    }

    const TWO: &str = r#"
        [[pattern]]
        name = "err"
        kind = "error"
        regex = '(?i)\berrors?\b'
        exclude = ['\b0 errors\b', 'error_rate=0\.0+\b']
        [[pattern]]
        name = "done"
        kind = "processed"
        regex = 'processed (?P<n>[0-9]+) items in (?P<secs>[0-9.]+)s'
        labels = ["n"]
        value = "secs"
    "#;

    #[test]
    fn first_match_wins_and_excludes_fall_through() {
        let s = pack(TWO);
        assert_eq!(winner(&s, "ERROR: boom").as_deref(), Some("err"));
        assert_eq!(
            winner(&s, "processed 3 items in 1.5s, 1 error").as_deref(),
            Some("err")
        );
        assert_eq!(
            winner(&s, "processed 3 items in 1.5s, 0 errors").as_deref(),
            Some("done")
        );
        assert_eq!(winner(&s, "error_rate=0.00 ok"), None);
        assert_eq!(winner(&s, "all good"), None);
        assert_eq!(winner(&s, ""), None);
    }

    #[test]
    fn priority_reorders_before_file_order() {
        let s = pack(
            r#"
            [[pattern]]
            name = "a"
            kind = "error"
            regex = 'x'
            [[pattern]]
            name = "b"
            kind = "crash"
            regex = 'x'
            priority = 10
        "#,
        );
        assert_eq!(winner(&s, "x").as_deref(), Some("b"));
    }

    #[test]
    fn captures_only_for_winner_labels_and_value() {
        let s = pack(TWO);
        let mut sc = s.scratch();
        let line = b"processed 12 items in 0.25s";
        let i = s.classify(line, &mut sc).unwrap();
        let x = s.extract(i, line, &mut sc);
        assert_eq!(x.labels.get("n"), Some("12"));
        assert_eq!(x.value, Some(0.25));
    }

    #[test]
    fn invalid_utf8_and_nul_bytes_classify() {
        let s = pack(TWO);
        let mut sc = s.scratch();
        assert!(s.classify(b"\xff\xfe ERROR \x00 here", &mut sc).is_some());
        assert!(s.classify(b"\xff\xfe\x00", &mut sc).is_none());
    }

    #[test]
    fn lookaround_and_backrefs_are_rejected_with_name_and_file() {
        let e = err("[[pattern]]\nname = \"la\"\nkind = \"error\"\nregex = 'foo(?=bar)'\n");
        assert!(
            e.contains("test.toml") && e.contains("\"la\"") && e.contains("look-around"),
            "{e}"
        );
        let e = err("[[pattern]]\nname = \"br\"\nkind = \"error\"\nregex = '(a) \\1'\n");
        assert!(e.contains("\"br\"") && e.contains("backreferences"), "{e}");
    }

    #[test]
    fn exploding_regex_hits_size_limit() {
        let e = err("[[pattern]]\nname = \"big\"\nkind = \"error\"\nregex = '(\\w{100}){100}'\n");
        assert!(e.contains("\"big\"") && e.contains("limit"), "{e}");
    }

    #[test]
    fn unknown_field_and_bad_capture_reference_are_errors() {
        let e = err("[[pattern]]\nname = \"x\"\nkind = \"error\"\nregex = 'a'\nlabesl = []\n");
        assert!(e.contains("test.toml") && e.contains("labesl"), "{e}");
        let e = err("[[pattern]]\nname = \"x\"\nkind = \"error\"\nregex = 'a'\nlabels = [\"w\"]\n");
        assert!(e.contains("no named capture \"w\""), "{e}");
        let e = err("[[pattern]]\nname = \"x\"\nkind = \"other\"\nregex = 'a'\n");
        assert!(e.contains("not a valid kind"), "{e}");
    }

    #[test]
    fn user_kinds_are_listed_after_builtins() {
        let s = pack("[[pattern]]\nname = \"rl\"\nkind = \"rate_limited\"\nregex = '429'\n");
        assert_eq!(s.kinds().last().map(|k| k.as_ref()), Some("rate_limited"));
    }

    #[test]
    fn buffer_scan_agrees_with_per_line_classification() {
        let s = pack(
            r#"
            [[pattern]]
            name = "quoted"
            kind = "error"
            regex = 'msg="[^"]+" level=error'
            [[pattern]]
            name = "anchored"
            kind = "crash"
            regex = '^panic: |boom$'
            [[pattern]]
            name = "ok"
            kind = "processed"
            regex = 'done'
            exclude = ['not done']
        "#,
        );
        let text = "msg=\"a\nmsg=\"b\" level=error\npanic: x\r\nthe boom\r\nnot done\ndone\n\nx panic: y\nboom\n";
        let mut sc = s.scratch();
        let mut hits = vec![0; s.patterns().len()];
        let mut got = Vec::new();
        let n = s.count_buffer(text.as_bytes(), 1 << 16, &mut hits, &mut sc, |l, w| {
            if w.is_some() {
                got.push((String::from_utf8_lossy(l).into_owned(), w))
            }
        });
        let mut want = Vec::new();
        for line in text.lines() {
            if let Some(w) = s.classify(line.as_bytes(), &mut sc) {
                want.push((line.to_string(), Some(w)));
            }
        }
        assert_eq!(n, 9);
        assert_eq!(got, want);
        assert_eq!(hits, vec![1, 3, 1]);
    }

    #[test]
    fn literal_gate_finds_literals_hidden_inside_other_literals() {
        // "abcd" (pattern 2) hides "bc" (pattern 1, higher priority) from a non-overlapping
        // search, and "cdxy" (pattern 0) runs past it; each must still be tried.
        let s = pack(
            r#"
            [[pattern]]
            name = "p0"
            kind = "oom"
            regex = 'cdxy[0-9]'
            [[pattern]]
            name = "p1"
            kind = "crash"
            regex = 'bc[0-9]?$'
            [[pattern]]
            name = "p2"
            kind = "error"
            regex = 'abcd'
            [[pattern]]
            name = "p3"
            kind = "processed"
            regex = '^[0-9]+$'
        "#,
        );
        assert!(
            s.required_literals(3).is_none(),
            "no literal: the residual set"
        );
        for (line, want) in [
            ("abcdxy1", Some("p0")),
            ("abc", Some("p1")),
            ("zabcd", Some("p2")),
            ("xabcdxy", Some("p2")),
            ("123", Some("p3")),
            ("abd", None),
        ] {
            assert_eq!(winner(&s, line).as_deref(), want, "{line}");
            assert_eq!(
                s.classify_naive(line.as_bytes())
                    .map(|i| &*s.patterns()[i].name),
                want,
                "{line}"
            );
        }
    }

    #[test]
    fn default_pack_gate_agrees_with_trying_every_pattern() {
        let s = PatternSet::default_pack().unwrap();
        let dev = include_str!("../fixtures/labeled-dev.tsv");
        let mut sc = s.scratch();
        let mut n = 0;
        for line in dev.lines().filter_map(|l| l.splitn(3, '\t').nth(2)) {
            // Each line, and the line cut at every tenth byte (partial literals at the end).
            let b = line.as_bytes();
            for cut in (0..b.len()).step_by(10).chain([b.len()]) {
                let part = &b[..cut];
                assert_eq!(
                    s.classify(part, &mut sc),
                    s.classify_naive(part),
                    "{part:?}"
                );
                n += 1;
            }
        }
        assert!(n > 1000, "{n} lines");
        let gated = (0..s.patterns().len())
            .filter(|&i| s.required_literals(i).is_some())
            .count();
        assert!(gated * 10 >= s.patterns().len() * 9, "{gated} gated");
    }

    #[test]
    fn counting_walk_agrees_with_per_line_classification() {
        let s = PatternSet::default_pack().unwrap();
        let c = s.for_counting();
        assert!(
            s.walk.is_none() && c.walk.is_some(),
            "the default pack walks a DFA"
        );
        let dev = include_str!("../fixtures/labeled-dev.tsv");
        let lines: Vec<&str> = dev
            .lines()
            .filter_map(|l| l.splitn(3, '\t').nth(2))
            .collect();
        // CRLF endings, a line cut by `max_line` before its literal, no final newline.
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            text.push_str(l);
            text.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
        }
        let max_line = 120;
        text.push_str(&"padding ".repeat(16));
        text.push_str("OOMKilled\nKilled process 1 (x)");
        let mut sc = c.scratch();
        let mut want = vec![0; s.patterns().len()];
        for line in text.lines() {
            let line = &line.as_bytes()[..line.len().min(max_line)];
            if let Some(w) = s.classify(line, &mut sc) {
                want[w] += 1;
            }
        }
        for set in [&s, &c] {
            let mut hits = vec![0; s.patterns().len()];
            let n = set.count_buffer(text.as_bytes(), max_line, &mut hits, &mut sc, |_, _| {});
            assert_eq!(n, lines.len() as u64 + 2);
            assert_eq!(hits, want);
        }
        assert!(want.iter().sum::<u64>() > 50, "{want:?}");
    }

    #[test]
    fn counting_walk_checks_literal_suffixes_in_place() {
        // `klog-error` ends with its only literal, `] `: the walk checks each occurrence by a
        // reverse search instead of running the pattern forward.
        let s = PatternSet::default_pack().unwrap();
        let c = s.for_counting();
        let klog = s.find("klog-error").unwrap();
        assert!(c.ends_with_literal[klog]);
        let text = "E1123 10:00:00.123456   42 server.go:118] boom\n\
            [x] E1123 10:00:00.1 1 a.go:1] \n\
            I1123 10:00:00.123456   42 server.go:118] fine\n\
            x\tF1123 10:00:00.5 7 [^:]:9] ] \n\
            E1123 10:00:00.5 7 a.go:9]\r\n\
            E1123 10:00:00.5 7 a.go:9] \r\n\
            [2026-11-23 10:00:00,007: INFO/MainProcess] Task x] received\n\
            E1123 10:00:00.5 7 a.go:x] ] E1123 10:00:00.5 7 b.go:2] \n";
        let mut sc = c.scratch();
        let mut want = vec![0; s.patterns().len()];
        for line in text.lines() {
            if let Some(w) = s.classify_naive(line.as_bytes()) {
                want[w] += 1;
            }
        }
        assert_eq!(want[klog], 4, "{want:?}");
        let mut hits = vec![0; s.patterns().len()];
        c.count_buffer(text.as_bytes(), 1 << 16, &mut hits, &mut sc, |_, _| {});
        assert_eq!(hits, want);
    }

    #[test]
    fn counting_walk_is_only_for_many_literals() {
        let s = pack(TWO).for_counting();
        assert!(s.walk.is_none(), "a few literals keep their SIMD search");
    }

    #[test]
    fn buffer_scan_keeps_a_carriage_return_inside_a_line() {
        // `.` matches `\r` in the per-line search; the scan must not skip such a line
        // (fuzz/regressions/pack/dot-matches-cr-inside-a-line).
        let s = pack("[[pattern]]\nname = \"a\"\nkind = \"error\"\nregex = '^a.b$'\n");
        let text = b"a\rb\nab\r\na\rb\r\nacb\r\r\n";
        let mut sc = s.scratch();
        let mut hits = vec![0; 1];
        let n = s.count_buffer(text, 1 << 16, &mut hits, &mut sc, |_, _| {});
        assert_eq!((n, hits), (4, vec![2]));
    }

    #[test]
    fn default_pack_compiles() {
        let s = PatternSet::default_pack().unwrap();
        assert!(s.patterns().len() >= 5);
        let ungated: Vec<&str> = (0..s.patterns().len())
            .filter(|&i| s.required_literals(i).is_none())
            .map(|i| &*s.patterns()[i].name)
            .collect();
        assert!(ungated.is_empty(), "searched on every line: {ungated:?}");
    }
}
