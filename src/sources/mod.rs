//! Sources turn bytes into [`Line`]s: stdin here, files in [`file`].
//!
//! Every source splits its bytes with one [`LineSplitter`], so all of them agree on what a
//! line is: split on `\n`, strip one `\r` before it, keep a partial last line until it is
//! completed (or the input ends), and cap a line's length (keep the head, count the rest).
//! Sources never classify and never drop a line: they `send().await` batches into a bounded
//! channel, so a slow classifier pauses reading instead of losing data.
//!
//! What a source holds is bounded in lines, not only in bytes: a batch has at most
//! [`BATCH_LINES`] lines, so the line channel holds at most `limits.channel_capacity` ×
//! [`BATCH_LINES`] lines. Under overload the data waits where it already is, in the file
//! (or the writer's pipe), not in our memory.

pub mod file;
pub mod stdin;

use memchr::memchr;
use tokio::sync::mpsc;

use crate::event::Line;

/// Most lines in one batch sent to classify (a `Line` costs ~90 bytes besides its text:
/// 4,096 lines of 120 bytes ≈ 0.9 MB). Smaller batches cost throughput: with 700–1,050 line
/// batches `scripts/bench-tail`'s daemon took 33–48% more wall time on this 2-core machine
/// (each batch is a few thread hand-offs: the tailer's blocking tick, classify's second
/// thread), for ~3 MiB less peak RSS.
pub const BATCH_LINES: usize = 4096;

/// Sends `lines` in batches of at most [`BATCH_LINES`], each allocated to its length (a
/// batch split off a larger vector would keep that vector's whole capacity). False when the
/// receiver is gone.
pub async fn send_batches(tx: &mpsc::Sender<Vec<Line>>, lines: Vec<Line>) -> bool {
    if lines.len() <= BATCH_LINES {
        return lines.is_empty() || tx.send(lines).await.is_ok();
    }
    let mut rest = lines.into_iter();
    loop {
        let batch: Vec<Line> = rest.by_ref().take(BATCH_LINES).collect();
        if batch.is_empty() {
            return true;
        }
        if tx.send(batch).await.is_err() {
            return false;
        }
    }
}

/// Default cap on one line's length in bytes (64 KiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Splits a byte stream into lines, carrying a partial line across calls.
///
/// Memory is bounded by `max_line` (plus one byte, a possible `\r`): bytes of an over-long
/// line past the cap are discarded as they arrive, never buffered. How the input is cut into
/// writes never changes the lines (checked by the `splitter` fuzz target).
#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    max_line: usize,
    /// True while discarding the tail of an over-long line.
    overflowing: bool,
}

/// One line produced by [`LineSplitter`].
#[derive(Debug, PartialEq, Eq)]
pub struct SplitLine<'a> {
    /// The line without its terminator, at most `max_line` bytes.
    pub bytes: &'a [u8],
    /// True when bytes past the cap were dropped.
    pub truncated: bool,
}

impl LineSplitter {
    /// A splitter whose lines keep at most `max_line` bytes (at least 1).
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            max_line: max_line.max(1),
            overflowing: false,
        }
    }

    /// Bytes held for an incomplete last line.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Feeds `data`; calls `emit` once per completed line, in order.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(SplitLine<'_>)) {
        while !data.is_empty() {
            match memchr(b'\n', data) {
                Some(nl) => {
                    let (head, rest) = (&data[..nl], &data[nl + 1..]);
                    if self.partial.is_empty() && !self.overflowing {
                        // The common case: a whole line inside `data`; no copy.
                        let (bytes, truncated) = cap(strip_cr(head), self.max_line);
                        emit(SplitLine { bytes, truncated });
                    } else {
                        self.append(head);
                        self.emit_buffered(&mut emit);
                    }
                    data = rest;
                }
                None => {
                    self.append(data);
                    data = &[];
                }
            }
        }
    }

    /// Ends the input: emits a pending partial line, if any (a final line without `\n`).
    pub fn finish(&mut self, mut emit: impl FnMut(SplitLine<'_>)) {
        if !self.partial.is_empty() || self.overflowing {
            self.emit_buffered(&mut emit);
        }
    }

    /// Emits the buffered line (stripping one `\r` unless it was cut), capped, and empties the
    /// buffer.
    fn emit_buffered(&mut self, emit: &mut impl FnMut(SplitLine<'_>)) {
        if !self.overflowing && self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let truncated = self.overflowing || self.partial.len() > self.max_line;
        emit(SplitLine {
            bytes: &self.partial[..self.partial.len().min(self.max_line)],
            truncated,
        });
        self.reset();
    }

    /// Drops a pending partial line (e.g. after a file was truncated under us).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.overflowing = false;
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.overflowing {
            return;
        }
        // One byte past the cap is kept: it may be the `\r` of a CRLF line that is exactly at
        // the cap, whose `\n` is in the next write. Without it, such a line would be flagged
        // as cut or not depending on where the writes split it (found by `fuzz/` splitter).
        let room = self.max_line.saturating_add(1) - self.partial.len();
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.overflowing = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn cap(line: &[u8], max: usize) -> (&[u8], bool) {
    if line.len() > max {
        (&line[..max], true)
    } else {
        (line, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| {
                out.push((String::from_utf8_lossy(l.bytes).into_owned(), l.truncated))
            });
        }
        s.finish(|l| out.push((String::from_utf8_lossy(l.bytes).into_owned(), l.truncated)));
        out
    }

    fn plain(v: &[&str]) -> Vec<(String, bool)> {
        v.iter().map(|s| (s.to_string(), false)).collect()
    }

    #[test]
    fn empty_input_has_no_lines() {
        assert_eq!(split(&[], 10), plain(&[]));
        assert_eq!(split(&[b""], 10), plain(&[]));
    }

    #[test]
    fn empty_line_is_a_line() {
        assert_eq!(split(&[b"\n"], 10), plain(&[""]));
        assert_eq!(split(&[b"\n\n"], 10), plain(&["", ""]));
    }

    #[test]
    fn final_line_without_newline() {
        assert_eq!(split(&[b"a\nb"], 10), plain(&["a", "b"]));
    }

    #[test]
    fn crlf_is_stripped_once() {
        assert_eq!(split(&[b"a\r\nb\r\r\n"], 10), plain(&["a", "b\r"]));
        assert_eq!(split(&[b"a\r", b"\n"], 10), plain(&["a"]));
        assert_eq!(split(&[b"a\r"], 10), plain(&["a"]));
    }

    #[test]
    fn line_split_across_writes_is_one_line() {
        assert_eq!(
            split(&[b"Hel", b"lo ", b"World\nx"], 64),
            plain(&["Hello World", "x"])
        );
    }

    #[test]
    fn long_line_keeps_head_and_is_flagged() {
        let out = split(&[b"0123456789abc\nok\n"], 4);
        assert_eq!(out, vec![("0123".into(), true), ("ok".into(), false)]);
        let out = split(&[b"01", b"2345", b"67\nok"], 4);
        assert_eq!(out, vec![("0123".into(), true), ("ok".into(), false)]);
    }

    #[test]
    fn crlf_line_exactly_at_the_cap_is_whole_however_it_is_written() {
        let want = vec![("abc".into(), false), ("abc".into(), true)];
        assert_eq!(split(&[b"abc\r\nabcd\r\n"], 3), want);
        assert_eq!(split(&[b"a", b"bc\r", b"\n", b"abcd\r", b"\n"], 3), want);
        assert_eq!(split(&[b"abc\r\na", b"bcd\r"], 3), want);
        assert_eq!(split(&[b"\r", b"\r"], 1), vec![("\r".into(), false)]);
    }

    #[test]
    fn memory_stays_bounded_for_a_huge_line() {
        let mut s = LineSplitter::new(16);
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            s.push(&chunk, |_| panic!("no line yet"));
            assert!(s.pending() <= 17); // the cap and a possible `\r`
        }
        let mut n = 0;
        s.push(b"\n", |l| {
            assert!(l.truncated);
            assert_eq!(l.bytes.len(), 16);
            n += 1;
        });
        assert_eq!(n, 1);
    }

    #[test]
    fn invalid_utf8_and_nul_pass_through_as_bytes() {
        let mut s = LineSplitter::new(64);
        let mut got = Vec::new();
        s.push(b"a\xff\x00b\n", |l| got.push(l.bytes.to_vec()));
        assert_eq!(got, vec![b"a\xff\x00b".to_vec()]);
    }
}
