# Sourced by scripts/bench (and by any bench-* script that wants the same corpus, timer and
# report): settings from the environment, the seeded corpus, paired timing, markdown tables.
# Needs ROOT (the repository root) set before sourcing. Never writes inside $BENCH or the
# repository (except cargo's target/).
# shellcheck shell=bash
# The sourcing script uses what this one sets; backticks in single quotes are markdown.
# shellcheck disable=SC2034,SC2016

: "${ROOT:?set ROOT before sourcing scripts/lib/bench.sh}"

QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
  N="${N:-200000}"
  RUNS="${RUNS:-3}"
  MTAIL_LINES="${MTAIL_LINES:-20000}"
  MTAIL_RUNS="${MTAIL_RUNS:-2}"
else
  N="${N:-2000000}"
  RUNS="${RUNS:-5}"
  MTAIL_LINES="${MTAIL_LINES:-200000}"
  MTAIL_RUNS="${MTAIL_RUNS:-3}"
fi
SEED="${SEED:-42}"
WARMUP="${WARMUP:-1}"
SKIP_MTAIL="${SKIP_MTAIL:-0}"
WORK="${WORK:-/tmp/logwarden-bench}"
BENCH="$(cd "$ROOT" && cd "${BENCH:-../shared/bench}" && pwd)"
PY="${PY:-python3}"
BIN="$ROOT/target/release/logwarden"
HELPER="$ROOT/scripts/lib/bench.py"
REPORT="$WORK/bench-report.md"
CORPUS="$WORK/corpus-s${SEED}-n${N}.log"
TRUTH="$CORPUS.truth.json"

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
helper() { "$PY" "$HELPER" "$@"; }
# One argv as one string that measure.py's --vs splits back (shlex) into the same argv.
quote() { printf '%q ' "$@"; }

bench_require() {
  have "$PY" || die "$PY not found"
  [[ -f "$BENCH/gen_corpus.py" && -f "$BENCH/measure.py" && -f "$BENCH/patterns.txt" ]] \
    || die "$BENCH does not look like the shared bench directory (set BENCH=...)"
  mkdir -p "$WORK"
}

# The release binary, built once per run.
build_release() {
  [[ -n "${_BENCH_BUILT:-}" ]] && return
  say "building $BIN ..."
  (cd "$ROOT" && cargo build --release --locked --quiet)
  _BENCH_BUILT=1
}

# ensure_corpus SEED LINES PATH: the seeded corpus and its truth (PATH.truth.json), generated
# unless a file with that seed and size is already there. The single-file name that
# bench-classify and bench-tail used ($WORK/corpus.log) is linked instead when it matches.
ensure_corpus() {
  local seed="$1" lines="$2" out="$3"
  local truth="$out.truth.json"
  if [[ -s "$out" ]] && helper corpus-ok "$truth" "$seed" "$lines"; then
    return
  fi
  if [[ -s "$WORK/corpus.log" ]] && helper corpus-ok "$WORK/corpus.truth.json" "$seed" "$lines" \
    && ln -f "$WORK/corpus.log" "$out" 2>/dev/null && ln -f "$WORK/corpus.truth.json" "$truth" 2>/dev/null; then
    say "linked $WORK/corpus.log (seed $seed, $lines lines) as $out"
    return
  fi
  say "generating $out (seed $seed, $lines lines) ..."
  "$PY" "$BENCH/gen_corpus.py" --seed "$seed" --lines "$lines" --out "$out.tmp" --truth "$truth"
  mv "$out.tmp" "$out"
}

# The shared bench's 13 patterns as one alternation for rg -f / grep -f (as run_peers.sh builds it).
bench_alternation() {
  grep -v -e '^#' -e '^$' "$BENCH/patterns.txt" | cut -f2- | sed 's/^/(/; s/$/)/' | paste -sd'|' > "$1"
}

# measure JSONL [measure.py options] -- CMD...: paired runs through ../shared/bench/measure.py;
# its report goes to stderr, one JSON record is appended to JSONL.
measure() {
  local jsonl="$1"
  shift
  "$PY" "$BENCH/measure.py" --json "$jsonl" "$@" >&2
}

# ---------- the report: one markdown table per sub-benchmark ----------
# Rows accumulate in $ROWS (a file, so helpers can append); table_print prints the table to
# stdout and appends it to $REPORT.
ROWS="$WORK/.rows"
table_row() { printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$5" >> "$ROWS"; }
table_start() { : > "$ROWS"; }
# table_print TITLE [NOTE ...]
table_print() {
  local title="$1"
  shift
  {
    printf '\n### %s\n\n' "$title"
    printf '| measure | ours | peer | ratio | target |\n|---|---|---|---|---|\n'
    cat "$ROWS"
    local note
    for note in "$@"; do printf '\n%s\n' "$note"; done
  } | tee -a "$REPORT"
  : > "$ROWS"
}

load_average() { cut -d' ' -f1-3 /proc/loadavg; }

# The machine and the tree, as markdown bullets.
machine_description() {
  local cpu commit dirty
  cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  dirty="$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)"
  printf -- '- date: %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)"
  printf -- '- machine: %s cores (`nproc`), %s, %s RAM; kernel %s\n' "$(nproc)" "$cpu" \
    "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)" "$(uname -r)"
  printf -- '- load average at start: %s\n' "$(load_average)"
  printf -- '- tree: %s%s; %s; release profile (thin LTO, codegen-units 1)\n' "$commit" \
    "${dirty:+ (uncommitted changes)}" "$(rustc --version 2>/dev/null || echo 'rustc ?')"
  printf -- '- peers: %s; %s; %s; %s; %s\n' "$(rg --version 2>/dev/null | head -1 || echo 'rg missing')" \
    "$(grep --version | head -1)" "$(mtail --version 2>/dev/null | head -1 | cut -d' ' -f1-3 || echo 'mtail missing')" \
    "$(valgrind --version 2>/dev/null || echo 'valgrind missing')" "$("$PY" --version 2>&1)"
  printf -- '- corpus: `gen_corpus.py --seed %s --lines %s`; RUNS=%s paired runs (WARMUP=%s)%s\n' \
    "$SEED" "$N" "$RUNS" "$WARMUP" "$([[ "$QUICK" == 1 ]] && echo '; QUICK=1')"
}
