//! `fnmatch(3)`-style matching for `modules.alias` patterns. **Pure.**
//!
//! Supports what `depmod` writes: `*` (any run, including none), `?` (one byte), and bracket
//! expressions `[abc]`, `[a-z]`, `[!x]`/`[^x]` (with `]` literal when first). A `\` escapes the
//! next byte. An unterminated `[` matches a literal `[`. Matching is bytewise and has no
//! special case for `/` (modaliases contain none), like `fnmatch` with no flags.
//!
//! The algorithm is the classic single-backtrack-point star matcher: linear in practice and
//! never recursive, so hostile patterns cannot blow the stack.

/// True when `text` matches `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after the star, text index).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => match bracket(p, pi, t.get(ti).copied()) {
                Some((true, len)) => Some(len),
                Some((false, _)) => None,
                // unterminated: a literal '['
                None => (t.get(ti) == Some(&b'[')).then_some(1),
            },
            Some(b'\\') => match p.get(pi + 1) {
                Some(c) if t.get(ti) == Some(c) => Some(2),
                Some(_) => None,
                None => (t.get(ti) == Some(&b'\\')).then_some(1),
            },
            Some(c) => (t.get(ti) == Some(c)).then_some(1),
            None => None,
        };
        match step {
            Some(len) => {
                pi += len;
                ti += 1;
            }
            None => match star {
                // let the last star swallow one more byte and retry
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    pi = sp;
                    ti = st + 1;
                }
                None => return false,
            },
        }
    }
    // text consumed: the rest of the pattern must be stars
    p.get(pi..).unwrap_or_default().iter().all(|&c| c == b'*')
}

/// Evaluates the bracket expression starting at `p[start] == b'['` against `c`.
/// Returns `(matched, pattern length consumed)`, or `None` when the bracket is unterminated.
fn bracket(p: &[u8], start: usize, c: Option<u8>) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let b = *p.get(i)?;
        if b == b']' && !first {
            break;
        }
        first = false;
        let lo = if b == b'\\' {
            i += 1;
            *p.get(i)?
        } else {
            b
        };
        // a range `lo-hi`, unless the '-' is the last char before ']'
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = *p.get(i + 2)?;
            if c.is_some_and(|c| lo <= c && c <= hi) {
                matched = true;
            }
            i += 3;
        } else {
            if c == Some(lo) {
                matched = true;
            }
            i += 1;
        }
    }
    let consumed = i + 1 - start;
    Some((c.is_some() && matched != negate, consumed))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything", true),
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*c", "ac", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("[abc]x", "bx", true),
            ("[abc]x", "dx", false),
            ("[a-f]", "e", true),
            ("[a-f]", "g", false),
            ("[!a-f]", "g", true),
            ("[^a-f]", "a", false),
            ("[]]", "]", true),
            ("[a-]", "-", true),
            ("[", "[", true),
            ("[ab", "[ab", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("[*]", "*", true),
            // real depmod patterns
            (
                "pci:v00001AF4d00001041sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00",
                true,
            ),
            (
                "pci:v00001AF4d00001041sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001042sv00001AF4sd00001100bc02sc00i00",
                false,
            ),
            ("virtio:d00000001v*", "virtio:d00000001v00001AF4", true),
            ("virtio:d00000001v*", "virtio:d00000002v00001AF4", false),
            (
                "pci:v*d*sv*sd*bc01sc06i01*",
                "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
                true,
            ),
            ("acpi*:PNP0C0[9A]:*", "acpi:PNP0C0A:", true),
            ("acpi*:PNP0C0[9A]:*", "acpi:PNP0C0B:", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(matches(p, t), *want, "pattern {p:?} text {t:?}");
        }
    }

    #[test]
    fn pathological_patterns_finish() {
        let p = "*a".repeat(40) + "b";
        let t = "a".repeat(4000);
        assert!(!matches(&p, &t));
    }
}
