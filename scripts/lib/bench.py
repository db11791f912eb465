#!/usr/bin/env python3
"""Helpers of scripts/bench (the parts that are easier in Python than in bash).

    bench.py corpus-ok TRUTH SEED LINES        exit 0 when TRUTH describes that corpus
    bench.py first-json FILE                   the first line of FILE that is a JSON object
    bench.py check-counts OURS TRUTH           OURS' first JSON line must equal TRUTH's counts
    bench.py count-line FILE                   a `rg -c`/`grep -c` output: the number
    bench.py count-diff A B                    "equal", or each kind's difference A - B (JSON files)
    bench.py summary-rows SCRIPT FILE          table rows from a bench-* script's summary lines
    bench.py export-pack TOML OUT              a pack's regexes as one alternation for rg -f
    bench.py explain-excludes TOML LINES       how many LINES (rg's matches that we call `other`) excludes explain
    bench.py pair JSONL --measure M ...        table rows from measure.py's last --vs record
    bench.py mtail-counts FILE                 per-class counts from `mtail --one_shot` json
    bench.py callgrind-total FILE              total instructions (Ir) of a callgrind.out file
    bench.py callgrind-check BASELINE CURRENT  rows comparing CURRENT with BASELINE; exit 1 over tolerance
    bench.py callgrind-update BASELINE CURRENT write CURRENT as the new baseline

Table rows are markdown: | measure | ours | peer | ratio | target |. Ratios are "peer time /
our time" per pair of runs (A B A B ...), median and range: above 1 we are faster.
"""
import json
import os
import re
import statistics
import sys


def die(msg):
    print(f"bench: {msg}", file=sys.stderr)
    sys.exit(1)


def first_json(path):
    """A file that is one JSON object (a truth file), or the first line that is one (our
    `--format counts` output, whose later lines are details)."""
    with open(path, errors="replace") as f:
        try:
            d = json.load(f)
            if isinstance(d, dict):
                return d
        except ValueError:
            f.seek(0)
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if isinstance(d, dict):
                    return d
    die(f"no JSON object in {path}")


def corpus_ok(truth, seed, lines):
    try:
        t = json.load(open(truth))
    except (OSError, ValueError):
        return 1
    return 0 if t.get("seed") == int(seed) and t.get("lines") == int(lines) else 1


def check_counts(ours_path, truth_path):
    ours = first_json(ours_path)
    truth = json.load(open(truth_path))["counts"]
    if ours != truth:
        print(f"counts of {ours_path} differ from the truth:", file=sys.stderr)
        for k in sorted(set(ours) | set(truth)):
            mark = "" if ours.get(k) == truth.get(k) else "   <-- differs"
            print(f"  {k:<11} ours {ours.get(k)!s:>9}  truth {truth.get(k)!s:>9}{mark}", file=sys.stderr)
        return 1
    return 0


def count_line(path):
    with open(path) as f:
        text = f.read().strip()
    # rg -c on one file prints nothing (exit 1) when no line matches.
    return int(text.splitlines()[-1].rsplit(":", 1)[-1]) if text else 0


def count_diff(a_path, b_path):
    a, b = first_json(a_path), first_json(b_path)
    a, b = a.get("counts", a), b.get("counts", b)
    diff = [f"{k} {a.get(k, 0) - b.get(k, 0):+,}" for k in sorted(set(a) | set(b)) if a.get(k, 0) != b.get(k, 0)]
    print(", ".join(diff) if diff else "equal")
    return 0


# Targets of the other scripts' measurements (from their issues), by script and line prefix.
TARGETS = {
    "bench-tail": [("throughput", "tail/classify ≥ 0.80"), ("latency, inotify", "p99 < 50 ms"),
                   ("latency, poll", "≤ poll interval"), ("idle", "< 0.5 % of a core")],
    "bench-notify": [("latency", "p99 < 1 s"),
                     ("storm", "configured messages + one digest; ingestion never blocked")],
}


def summary_rows(script, path):
    """One row per summary line `key: value`; headers (`== ...`) and markdown tables (which
    scripts/bench copies as they are) are skipped."""
    rows = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip()
            if not line.strip() or line.startswith("==") or line.lstrip().startswith("|"):
                continue
            if re.match(r"^bench-[a-z]+: [0-9]+ cpu", line):
                continue  # bench-tail's machine line: the report has its own
            m = re.match(r"^\s*([^:|]{1,100}):\s+(.*)$", line)
            key, value = (m.group(1).strip(), m.group(2)) if m else (line.strip(), "")
            target = next((t for p, t in TARGETS.get(script, []) if key.startswith(p)), "—")
            rows.append(f"| {key} | {value.replace('|', '/')} | — | — | {target} |")
    print("\n".join(rows))
    return 0


NAMED_GROUP = re.compile(r"(?<!\\)\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>")


def export_pack(toml_path, out):
    """Writes one line `(?:re1)|(?:re2)|...` (rg -f reads one pattern per line). Each regex keeps
    its inline flags (`(?-u)` ends with its group). Named groups become non-capturing: several
    patterns name a group `task`, and one regex may not repeat a name. Excludes cannot be said in
    one alternation: rg counts the lines they would drop."""
    import tomllib

    with open(toml_path, "rb") as f:
        pack = tomllib.load(f)
    pats = pack.get("pattern", [])
    parts, renamed, excl, flagged = [], 0, 0, []
    for p in pats:
        rx = p["regex"]
        if "\n" in rx:
            die(f"{toml_path}: pattern {p['name']!r} spans lines; rg -f cannot read it")
        renamed += len(NAMED_GROUP.findall(rx))
        excl += len(p.get("exclude", []))
        if p.get("exclude"):
            flagged.append(p["name"])
        parts.append("(?:%s)" % NAMED_GROUP.sub("(?:", rx))
    with open(out, "w") as f:
        f.write("|".join(parts) + "\n")
    print(json.dumps({"patterns": len(pats), "named_groups": renamed, "excludes": excl,
                      "patterns_with_excludes": len(flagged), "bytes": sum(map(len, parts)) + len(parts) - 1}))
    return 0


def explain_excludes(toml_path, lines_path):
    """LINES: lines that rg's alternation matches and we classify as `other`. A line is explained
    when every pattern that matches it has an exclude that matches it too (then the pack drops it,
    as it should). Prints {"lines": n, "explained": k, "unexplained": [first few]}."""
    import subprocess
    import tomllib

    with open(toml_path, "rb") as f:
        pats = tomllib.load(f)["pattern"]

    def hits(args):
        p = subprocess.run(["rg", "-n", "--no-filename"] + args + ["--", lines_path], capture_output=True, text=True)
        if p.returncode not in (0, 1):
            die(f"rg: {p.stderr.strip()}")
        return {int(l.split(":", 1)[0]) for l in p.stdout.splitlines()}

    with open(lines_path, errors="replace") as f:
        lines = f.read().splitlines()
    seen = {}
    for p in pats:
        excluded = hits(sum((["-e", e] for e in p.get("exclude", [])), [])) if p.get("exclude") else set()
        for i in hits(["-e", p["regex"]]):
            seen.setdefault(i, []).append(i in excluded)
    bad = [i for i in range(1, len(lines) + 1) if not seen.get(i) or not all(seen[i])]
    print(json.dumps({"lines": len(lines), "explained": len(lines) - len(bad),
                      "unexplained": [lines[i - 1][:200] for i in bad[:5]]}))
    return 0


def ratio_cell(xs):
    med = statistics.median(xs)

    def f(x):
        return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"

    return f"**{f(med)}×** ({f(min(xs))}–{f(max(xs))})" if len(xs) > 1 else f"**{f(med)}×**"


def pair(argv):
    import argparse

    ap = argparse.ArgumentParser(prog="bench.py pair")
    ap.add_argument("jsonl")
    ap.add_argument("--measure", required=True, help="what is compared (the measure column)")
    ap.add_argument("--bytes", type=int, default=0, help="input size, for MB/s")
    ap.add_argument("--target", default="—", help="target of the wall ratio")
    ap.add_argument("--cpu-target", default="—")
    ap.add_argument("--rss", action="store_true", help="also a peak-RSS row")
    a = ap.parse_args(argv)
    with open(a.jsonl) as f:
        rec = [json.loads(l) for l in f if l.strip()][-1]
    if rec.get("exit_codes") != [0]:
        die(f"{rec['label']}: exit codes {rec.get('exit_codes')}")
    ra, rb = rec["runs"], rec["vs"]["runs"]
    bad = sorted({r["rc"] for r in rb} - {0, 1})  # rg/grep -c exit 1 when no line matches
    if bad:
        die(f"{rec['vs_label']}: exit codes {bad}")
    n = len(ra)
    rows = []
    for k, name, target in (("wall", "wall", a.target), ("cpu", "cpu (user+sys)", a.cpu_target)):
        ours = statistics.median(r[k] for r in ra)
        peer = statistics.median(r[k] for r in rb)
        rat = [y[k] / x[k] for x, y in zip(ra, rb) if x[k] > 0]
        cell_o, cell_p = f"{ours:.3f} s", f"{peer:.3f} s"
        if k == "wall" and a.bytes:
            cell_o += f", {a.bytes / ours / 1e6:.0f} MB/s"
            cell_p += f", {a.bytes / peer / 1e6:.0f} MB/s"
        rows.append(f"| {name}: {a.measure} | {cell_o} | {cell_p} | {ratio_cell(rat)} | {target} |")
    if a.rss:
        ours = statistics.median(r["peak_mib"] for r in ra)
        peer = statistics.median(r["peak_mib"] for r in rb)
        rows.append(f"| peak RSS: {a.measure} | {ours:.1f} MiB | {peer:.1f} MiB | — | — |")
    print("\n".join(rows))
    print(f"{rec['label']} vs {rec['vs_label']}: {n} pairs", file=sys.stderr)
    return 0


def mtail_counts(path):
    """`mtail --one_shot --one_shot_format json` prints its metric store; the program counts
    lines_total{class}."""
    text = open(path, errors="replace").read()
    start = text.find("{")
    if start < 0:
        die(f"no JSON in {path}")
    store = json.loads(text[start:])
    counts = {}
    for metric in (store.get("lines_total") or []) if isinstance(store, dict) else []:
        for ld in metric.get("LabelValues", []):
            counts[ld["Labels"][0]] = int(ld["Value"]["Value"])
    print(json.dumps(counts, sort_keys=True))
    return 0


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                print(int(line.split()[1]))
                return 0
    die(f"no totals in {path}")


def read_tsv(path):
    rows = {}
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            c = line.rstrip("\n").split("\t")
            rows[c[0]] = {"instructions": int(c[1]), "commit": c[2], "date": c[3],
                          "rustc": c[4] if len(c) > 4 else "", "input": c[5] if len(c) > 5 else "",
                          "runs": c[6] if len(c) > 6 else ""}
    return rows


HEADER = ("# Instruction counts (valgrind --tool=callgrind, total Ir of the process and its threads) of\n"
          "# `scripts/bench callgrind`; rewritten by `UPDATE_BASELINE=1 scripts/bench callgrind`.\n"
          "# input = the first 16 hex digits of the input file's sha256; runs = every run's count.\n"
          "# name\tinstructions\tcommit\tdate\trustc\tinput\truns\n")


def callgrind_check(baseline, current, tolerance):
    base, cur = read_tsv(baseline), read_tsv(current)
    worst, missing = 0.0, []
    for name, c in cur.items():
        runs = [int(x) for x in c["runs"].split(",")]
        spread = (max(runs) - min(runs)) / min(runs) * 100
        b = base.get(name)
        ours = (f"{c['instructions']:,} (runs {', '.join(f'{x:,}' for x in runs)}; spread {spread:.3f}%)"
                if len(runs) > 1 else f"{c['instructions']:,} (1 run)")
        if not b:
            missing.append(name)
            print(f"| `{name}` | {ours} | no baseline | — | ≤ +{tolerance:g}% |")
            continue
        delta = (c["instructions"] - b["instructions"]) / b["instructions"] * 100
        worst = max(worst, delta)
        notes = []
        if b["rustc"] and b["rustc"] != c["rustc"]:
            notes.append(f"baseline built by {b['rustc']}")
        if b["input"] and b["input"] != c["input"]:
            notes.append("input differs from the baseline's")
        peer = f"{b['instructions']:,} ({b['commit']}, {b['date']})"
        mark = "" if delta <= tolerance else " **over**"
        note = f" ({'; '.join(notes)})" if notes else ""
        print(f"| `{name}` | {ours} | {peer} | **{delta:+.2f}%**{mark}{note} | ≤ +{tolerance:g}% |")
    if missing:
        print(f"no baseline for {', '.join(missing)}: UPDATE_BASELINE=1 writes one", file=sys.stderr)
    return 1 if worst > tolerance else 0


def callgrind_update(baseline, current):
    cur = read_tsv(current)
    with open(baseline, "w") as f:
        f.write(HEADER)
        for name, c in cur.items():
            f.write("\t".join([name, str(c["instructions"]), c["commit"], c["date"], c["rustc"], c["input"],
                               c["runs"]]) + "\n")
    print(f"wrote {baseline}", file=sys.stderr)
    return 0


def main():
    if len(sys.argv) < 2:
        die("usage: bench.py COMMAND ... (see the docstring)")
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "corpus-ok":
        return corpus_ok(*args)
    if cmd == "first-json":
        print(json.dumps(first_json(args[0]), sort_keys=True))
        return 0
    if cmd == "check-counts":
        return check_counts(*args)
    if cmd == "count-line":
        print(count_line(args[0]))
        return 0
    if cmd == "count-diff":
        return count_diff(*args)
    if cmd == "summary-rows":
        return summary_rows(*args)
    if cmd == "export-pack":
        return export_pack(*args)
    if cmd == "explain-excludes":
        return explain_excludes(*args)
    if cmd == "pair":
        return pair(args)
    if cmd == "mtail-counts":
        return mtail_counts(args[0])
    if cmd == "callgrind-total":
        return callgrind_total(args[0])
    if cmd == "callgrind-check":
        return callgrind_check(args[0], args[1], float(args[2]))
    if cmd == "callgrind-update":
        return callgrind_update(*args)
    die(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main())
