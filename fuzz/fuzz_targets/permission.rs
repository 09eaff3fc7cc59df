//! Permissions (`keygate_core::permission`): grants (`check_grant`, `check_name`, `Grants`) and
//! requirement expressions (`Requirement::from_str`, `Display`, `is_met_by`, serde).
//! Invariants: nothing panics; `check_grant` and `check_name` agree with a reference written from
//! the grammar; `Grants::allows` agrees with a naive check of the valid grants and `iter` is their
//! sorted set; a requirement that parses prints to a canonical form of at most
//! `MAX_REQUIREMENT_LEN` bytes that parses to the same requirement (also through JSON), names the
//! permissions written, in order, and is met exactly when a reference evaluator, reading the text
//! as written and the canonical text, says so; every error is one line of ASCII.
//! Input: a line of grants separated by spaces, then the requirement expression (the rest, newlines
//! included).
#![no_main]

use keygate_core::permission::{self, Grants, MAX_REQUIREMENT_LEN, Requirement};
use libfuzzer_sys::fuzz_target;

/// A name from the grammar: 1 to 100 of `[A-Za-z0-9_.:-]`, no `.` at either end, no `..`, not a
/// keyword.
fn ref_name(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && !s.eq_ignore_ascii_case("and")
        && !s.eq_ignore_ascii_case("or")
}

/// A grant: a name, `*`, or a name and `.*`, 100 characters at most.
fn ref_grant(s: &str) -> bool {
    s == "*" || (s.len() <= 100 && ref_name(s.strip_suffix(".*").unwrap_or(s)))
}

fn ref_allows(granted: &[&str], name: &str) -> bool {
    granted.iter().any(|g| {
        *g == "*" || *g == name || g.strip_suffix('*').is_some_and(|p| p.ends_with('.') && name.starts_with(p))
    })
}

/// Words, `(` and `)`, split at ASCII whitespace.
fn tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for word in s.split_ascii_whitespace() {
        let mut rest = word;
        while let Some(i) = rest.find(['(', ')']) {
            if i > 0 {
                out.push(&rest[..i]);
            }
            out.push(&rest[i..i + 1]);
            rest = &rest[i + 1..];
        }
        if !rest.is_empty() {
            out.push(rest);
        }
    }
    out
}

fn is_op(t: &str, op: &str) -> bool {
    t.eq_ignore_ascii_case(op)
}

/// A reference evaluator of a valid expression's tokens (no short cut: every operand is read).
fn ref_or(t: &[&str], i: &mut usize, allows: &dyn Fn(&str) -> bool) -> bool {
    let mut v = ref_and(t, i, allows);
    while t.get(*i).is_some_and(|w| is_op(w, "or")) {
        *i += 1;
        v |= ref_and(t, i, allows);
    }
    v
}

fn ref_and(t: &[&str], i: &mut usize, allows: &dyn Fn(&str) -> bool) -> bool {
    let mut v = ref_atom(t, i, allows);
    while t.get(*i).is_some_and(|w| is_op(w, "and")) {
        *i += 1;
        v &= ref_atom(t, i, allows);
    }
    v
}

fn ref_atom(t: &[&str], i: &mut usize, allows: &dyn Fn(&str) -> bool) -> bool {
    let tok = t[*i];
    *i += 1;
    if tok == "(" {
        let v = ref_or(t, i, allows);
        assert_eq!(t[*i], ")", "accepted with an unclosed parenthesis");
        *i += 1;
        v
    } else {
        assert!(ref_name(tok), "accepted {tok:?} as a name");
        allows(tok)
    }
}

fn ref_eval(text: &str, allows: &dyn Fn(&str) -> bool) -> bool {
    let t = tokens(text);
    let mut i = 0;
    let v = ref_or(&t, &mut i, allows);
    assert_eq!(i, t.len(), "{text:?}: accepted with tokens left over");
    v
}

fn check_message(e: &permission::PermissionError) {
    let m = e.to_string();
    assert!(!m.is_empty() && m.is_ascii() && !m.contains(['\n', '\r']), "{m:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (grant_line, expression) = text.split_once('\n').unwrap_or((&text, ""));

    // Grants.
    let words: Vec<&str> = grant_line.split(' ').filter(|w| !w.is_empty()).collect();
    for w in &words {
        match permission::check_grant(w) {
            Ok(()) => assert!(ref_grant(w), "{w:?} granted"),
            Err(e) => {
                assert!(!ref_grant(w), "{w:?} refused: {e}");
                check_message(&e);
            }
        }
        assert_eq!(permission::check_name(w).is_ok(), ref_name(w), "{w:?}");
    }
    let valid: Vec<&str> = words.iter().copied().filter(|w| ref_grant(w)).collect();
    assert_eq!(Grants::new(&words).is_ok(), valid.len() == words.len());
    let grants = Grants::new(&valid).expect("valid grants");
    let mut set = valid.clone();
    set.sort_unstable();
    set.dedup();
    assert_eq!(grants.iter().collect::<Vec<_>>(), set);
    assert_eq!(grants.is_empty(), valid.is_empty());
    for word in tokens(&text) {
        assert_eq!(grants.allows(word), ref_allows(&valid, word), "{word:?} with {valid:?}");
    }

    // The requirement.
    let r = match expression.parse::<Requirement>() {
        Ok(r) => r,
        Err(e) => return check_message(&e),
    };
    let shown = r.to_string();
    assert!(shown.len() <= MAX_REQUIREMENT_LEN);
    assert_eq!(shown.parse::<Requirement>().as_ref(), Ok(&r), "{expression:?} -> {shown:?}");
    let json = serde_json::to_string(&r).expect("serializes");
    assert_eq!(json, serde_json::to_string(&shown).unwrap());
    assert_eq!(serde_json::from_str::<Requirement>(&json).expect("deserializes"), r);
    let written: Vec<&str> = tokens(expression)
        .into_iter()
        .filter(|t| !["(", ")"].contains(t) && !is_op(t, "and") && !is_op(t, "or"))
        .collect();
    assert_eq!(r.names().collect::<Vec<_>>(), written);

    let allows = |name: &str| ref_allows(&valid, name);
    let met = r.is_met_by(&grants);
    assert_eq!(met, ref_eval(expression, &allows), "{expression:?} with {valid:?}");
    assert_eq!(met, ref_eval(&shown, &allows), "{shown:?} with {valid:?}");
    // Monotone: every name it names meets it, nothing never does.
    assert!(r.is_met_by(&Grants::new(r.names()).expect("names are grants")));
    assert!(!r.is_met_by(&Grants::default()));
    assert!(r.is_met_by(&Grants::new(["*"]).unwrap()));
});
