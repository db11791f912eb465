//! Required literals: for a regex, a small set of byte strings at least one of which occurs in
//! every match. A line that holds none of a pattern's literals cannot match it, so one
//! Aho-Corasick pass over a line (or a whole buffer) tells which few patterns are worth
//! running at all.
//!
//! The walk is over the parsed [`Hir`]: a node's *exact* set is every string it can match (when
//! that is finite and small: `(ERROR|CRITICAL)`, `[Ee]rror`), and its *required* set is what
//! every match must contain. A concatenation joins runs of exact children into longer
//! literals (`" (ERROR|CRITICAL) \["` gives `" ERROR ["` and `" CRITICAL ["`) and keeps the
//! best candidate; an alternation needs a required set from every branch. A pattern with no
//! good set (`x*`, `[A-Z]`, `.{3}`) has none and is searched by the regex engine instead.

use regex_syntax::hir::{Class, Hir, HirKind};

/// Most strings an exact or required set may hold for one node.
const MAX_SET: usize = 64;
/// Most strings a pattern's required set may hold (alternations add up).
const MAX_PATTERN_SET: usize = 256;
/// Shortest literal worth searching for: one byte makes nearly every line a candidate. Two
/// bytes (`] `, `::`) still beat searching every line for the pattern (measured with the
/// default pack: 5% fewer instructions than a 3-byte minimum).
const MIN_LEN: usize = 2;
/// Most characters a class may have to be expanded into single-character strings.
const MAX_CLASS: usize = 4;
/// How many children of a concatenation one run of exact children may join.
const MAX_RUN: usize = 16;

/// The required literals of `hir` (per-line semantics: no string holds `\n`), or `None` when
/// the pattern has no useful set. `Some(vec![])` means the pattern can never match inside one
/// line (every match would contain a newline).
pub fn required(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    let set = req(hir)?;
    if set.len() > MAX_PATTERN_SET || set.iter().any(|s| s.len() < MIN_LEN) {
        return None;
    }
    let mut set: Vec<Vec<u8>> = set.into_iter().filter(|s| !s.contains(&b'\n')).collect();
    set.sort();
    set.dedup();
    // A string holding another one of the set adds nothing: wherever it occurs, so does the
    // other (`Killed by OOM killer` and `Killed by OOM`). Fewer, shorter strings make a
    // smaller automaton.
    let redundant: Vec<bool> = set
        .iter()
        .map(|s| {
            set.iter()
                .any(|t| t.len() < s.len() && memchr::memmem::find(s, t).is_some())
        })
        .collect();
    let mut keep = redundant.iter().map(|r| !r);
    set.retain(|_| keep.next().unwrap_or(true));
    Some(set)
}

/// The strings one of which ends every match of `hir`: the trailing run of exact children
/// of a top-level concatenation (`[0-9]+:[0-9]+\] ` gives `] `), or `None`.
pub fn suffix(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    let HirKind::Concat(subs) = hir.kind() else {
        return None;
    };
    let mut acc = vec![Vec::new()];
    for sub in subs.iter().rev().take(MAX_RUN) {
        let Some(e) = exact(sub) else { break };
        match product(&e, &acc) {
            Some(p) => acc = p,
            None => break,
        }
    }
    let mut set = nonempty(acc)?;
    set.sort();
    set.dedup();
    Some(set)
}

/// Every string `hir` matches, when that set is finite and small.
fn exact(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(vec![Vec::new()]),
        HirKind::Literal(lit) => Some(vec![lit.0.to_vec()]),
        HirKind::Class(Class::Bytes(c)) => {
            let n: usize = c.ranges().iter().map(|r| r.len()).sum();
            (n <= MAX_CLASS).then(|| {
                c.iter()
                    .flat_map(|r| r.start()..=r.end())
                    .map(|b| vec![b])
                    .collect()
            })
        }
        HirKind::Class(Class::Unicode(c)) => {
            let n: usize = c
                .ranges()
                .iter()
                .map(|r| r.end() as usize - r.start() as usize + 1)
                .sum();
            (n <= MAX_CLASS).then(|| {
                c.iter()
                    .flat_map(|r| r.start()..=r.end())
                    .map(|ch| ch.to_string().into_bytes())
                    .collect()
            })
        }
        HirKind::Capture(c) => exact(&c.sub),
        HirKind::Repetition(r) => {
            let max = r.max?;
            if max > 8 {
                return None;
            }
            let sub = exact(&r.sub)?;
            let mut out: Vec<Vec<u8>> = Vec::new();
            let mut acc = vec![Vec::new()];
            for k in 0..=max {
                if k >= r.min {
                    out.extend(acc.iter().cloned());
                }
                if k < max {
                    acc = product(&acc, &sub)?;
                }
                if out.len() > MAX_SET {
                    return None;
                }
            }
            Some(out)
        }
        HirKind::Concat(subs) => {
            let mut acc = vec![Vec::new()];
            for s in subs {
                acc = product(&acc, &exact(s)?)?;
            }
            Some(acc)
        }
        HirKind::Alternation(subs) => {
            let mut out = Vec::new();
            for s in subs {
                out.extend(exact(s)?);
                if out.len() > MAX_SET {
                    return None;
                }
            }
            Some(out)
        }
    }
}

/// Every concatenation of a string of `a` with one of `b`, if there are few enough.
fn product(a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if a.len().saturating_mul(b.len()) > MAX_SET {
        return None;
    }
    Some(
        a.iter()
            .flat_map(|x| {
                b.iter().map(move |y| {
                    let mut s = x.clone();
                    s.extend_from_slice(y);
                    s
                })
            })
            .collect(),
    )
}

/// A set every match contains one of (may hold short strings; [`required`] judges them).
fn req(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => None,
        HirKind::Literal(_) | HirKind::Class(_) => nonempty(exact(hir)?),
        HirKind::Capture(c) => req(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => better(exact(hir).and_then(nonempty), req(&r.sub)),
        HirKind::Repetition(_) => None,
        HirKind::Alternation(subs) => {
            let mut out = Vec::new();
            for s in subs {
                out.extend(req(s)?);
                if out.len() > MAX_PATTERN_SET {
                    return None;
                }
            }
            Some(out)
        }
        HirKind::Concat(subs) => {
            let exacts: Vec<Option<Vec<Vec<u8>>>> = subs.iter().map(exact).collect();
            let mut best: Option<Vec<Vec<u8>>> = None;
            for (i, sub) in subs.iter().enumerate() {
                if exacts[i].is_none() {
                    best = better(best, req(sub));
                    continue;
                }
                // The longest run of exact children from `i`, kept at every step.
                let mut acc = vec![Vec::new()];
                for e in exacts[i..].iter().take(MAX_RUN) {
                    let Some(e) = e else { break };
                    match product(&acc, e) {
                        Some(p) => acc = p,
                        None => break,
                    }
                    best = better(best, nonempty(acc.clone()));
                }
            }
            best
        }
    }
}

/// `set` unless it holds the empty string (then it requires nothing).
fn nonempty(set: Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
    (!set.iter().any(Vec::is_empty)).then_some(set)
}

/// The more selective of two candidate sets: longer shortest string, then fewer strings.
fn better(a: Option<Vec<Vec<u8>>>, b: Option<Vec<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
    let score = |s: &Vec<Vec<u8>>| {
        let min = s.iter().map(Vec::len).min().unwrap_or(0).min(16);
        (min, std::cmp::Reverse(s.len()))
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(if score(&b) > score(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `of(pattern's HIR)` as text.
    fn strings(pattern: &str, of: fn(&Hir) -> Option<Vec<Vec<u8>>>) -> Option<Vec<String>> {
        let hir = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(pattern)
            .unwrap();
        of(&hir).map(|s| {
            s.into_iter()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .collect()
        })
    }

    fn lits(pattern: &str) -> Option<Vec<String>> {
        strings(pattern, required)
    }

    fn strs(v: &[&str]) -> Option<Vec<String>> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        Some(v)
    }

    #[test]
    fn alternation_of_literals_needs_one_per_branch() {
        assert_eq!(
            lits("Out of memory: Killed process [0-9]+|invoked oom-killer: "),
            strs(&["Out of memory: Killed process ", "invoked oom-killer: "])
        );
    }

    #[test]
    fn exact_children_join_across_small_alternations() {
        assert_eq!(
            lits(r"^[0-9]{4}-[0-9]{2} (ERROR|CRITICAL) \["),
            strs(&[" CRITICAL [", " ERROR ["])
        );
    }

    #[test]
    fn small_classes_expand_and_case_insensitive_words_stay_literal() {
        assert_eq!(lits("[Ee]rror: x"), strs(&["Error: x", "error: x"]));
        assert_eq!(lits("(?i)oom").map(|v| v.len()), Some(8));
    }

    #[test]
    fn patterns_without_a_good_literal_have_none() {
        for p in ["x*", "[A-Z][a-z]+", ".{3}", "(a|bcd)", "^$", "[0-9]+s"] {
            assert_eq!(lits(p), None, "{p}");
        }
        assert_eq!(lits("[0-9]+ ms"), strs(&[" ms"]));
        assert_eq!(lits(r"[0-9]+\] "), strs(&["] "]));
    }

    #[test]
    fn optional_parts_are_not_required() {
        assert_eq!(lits("(?:foo)?barbaz"), strs(&["barbaz"]));
        assert_eq!(lits("x(?:foo)?y"), strs(&["xfooy", "xy"]));
        assert_eq!(lits("x(?:foo)?"), None);
    }

    #[test]
    fn suffixes_are_the_trailing_exact_run() {
        let suf = |p: &str| strings(p, suffix);
        assert_eq!(suf(r"[0-9]+:[0-9]+\] "), strs(&["] "]));
        assert_eq!(suf(r"x[0-9] (ERROR|WARN)"), strs(&[" ERROR", " WARN"]));
        assert_eq!(suf(r"ab[0-9]+"), None);
        assert_eq!(suf(r"abc|d"), None);
    }

    #[test]
    fn newline_literals_can_never_match_a_line() {
        assert_eq!(lits("abc\ndef"), Some(vec![]));
    }
}
