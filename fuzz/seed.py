#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the repository's fixtures.

Run once (scripts/fuzz --seed); the fuzzer grows the corpora from there and `cargo fuzz cmin`
keeps them small. Deterministic: the same fixtures give the same files.
"""
import hashlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def chunks(lines, n):
    for i in range(0, len(lines), n):
        yield lines[i : i + n]


def main():
    worker = (ROOT / "fixtures/demo/worker.log").read_bytes().split(b"\n")
    labeled = [
        row.split("\t", 2)[2].encode()
        for row in (ROOT / "fixtures/labeled-dev.tsv").read_text().splitlines()
        if row and not row.startswith("#") and row.count("\t") >= 2
    ][1:]
    default_pack = (ROOT / "patterns/default.toml").read_text()

    # config: every shipped and fixture config, and a few small ones.
    for f in sorted((ROOT / "config").glob("*.toml")) + sorted((ROOT / "fixtures/config").glob("*.toml")):
        write("config", f.read_text())
    write("config", "")
    write("config", '[[rule]]\nname = "r"\ntype = "count"\nkinds = ["error"]\nwindow = "5m"\nthreshold = 3\n')
    write("config", '[[receiver]]\nname = "s"\ntype = "slack"\nurl = "https://hooks.slack.com/services/T/B/x"\n')
    write("config", '[[queue]]\nurl = "redis://:pw@127.0.0.1:6379/0"\nkeys = ["q"]\n')

    # pack: each default pattern alone, with log lines after a NUL byte.
    blocks = re.split(r"(?m)^(?=\[\[pattern\]\])", default_pack)[1:]
    sample = b"\n".join(worker[:40] + labeled[:40])
    for i, b in enumerate(blocks):
        # drop folds: a lone pattern cannot name the others
        b = re.sub(r"(?m)^folds = .*$", "", b)
        write("pack", b.encode() + b"\0" + (b"\n".join(labeled[i * 4 : i * 4 + 8]) + b"\r\nx\ry\n"))
    write("pack", (ROOT / "fixtures/bench-pack.toml").read_bytes() + b"\0" + sample)
    write("pack", b"[[pattern]]\nname = \"a\"\nkind = \"error\"\nregex = '^a.b$'\n\0a\rb\nab\r\n")

    # classify: groups of labeled lines, and the demo log in pieces.
    for c in chunks(labeled, 6):
        write("classify", b"\n".join(c))
    for c in chunks(worker, 20):
        write("classify", b"\n".join(c))
    write("classify", b"bad utf8 \xff\xfe \x00 ERROR\n")

    # splitter: cap byte, four chunk sizes, then text with CRLF, CR and long lines.
    for i, c in enumerate(chunks(worker, 12)):
        text = b"\n".join(c)
        if i % 2:
            text = text.replace(b"\n", b"\r\n")
        write("splitter", bytes([i * 7 % 64, 3, 1, 17, 250]) + text)
    write("splitter", bytes([3, 0, 0, 0, 0]) + b"abc\r\nabcd\r\n\r\n\rx")

    # records: the demo log in record-sized pieces (tracebacks), some lines tagged with
    # control bytes (source, stream, time step, tick).
    for i, c in enumerate(chunks(worker, 25)):
        out = []
        for j, line in enumerate(c):
            tag = (i + j) % 0x20
            out.append((bytes([tag]) if tag not in (9, 10) and j % 3 == 0 else b"") + line)
        write("records", b"\n".join(out))
    for c in chunks(labeled, 30):
        write("records", b"\n".join(c))

    # timestamp: one line per input, from both fixtures, plus custom-format lines.
    for line in worker[::9] + labeled[::7]:
        write("timestamp", line)
    for s in [
        b"2026/11/23T10:00:00.123+01:00 x",
        b"2026/Nov/23T10:00:00Z",
        b"@1795428000.5 x",
        b"Nov 23 10:00:00 host app[1]: x",
        b"23/Nov/2026:10:00:00 +0000",
        b'{"ts":1795428000.123,"msg":"x"}',
    ]:
        write("timestamp", s)


if __name__ == "__main__":
    main()
