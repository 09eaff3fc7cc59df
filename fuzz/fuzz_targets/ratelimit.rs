//! Rate limits as operators write them: the line form `NAME=LIMIT/DURATION` (`RateLimit::from_str`,
//! the CLI and the console), a window (`Window::from_str`), and a JSON set (`Vec<RateLimit>`, the
//! admin API) checked by `keygate_core::ratelimit::validate`.
//! Invariants: whatever parses prints back to text that parses to the same value; a window is
//! within 1 s..=30 d and agrees with `WINDOW_PATTERN`; a parsed line is a valid set of one; JSON
//! round-trips; a valid set prints to lines that parse back to it; GCRA on what was parsed
//! does not panic.
#![no_main]

use keygate_core::ratelimit::{self, Bucket, MAX_LIMIT, MAX_WINDOW, MIN_WINDOW, RateLimit, Take, Window};
use libfuzzer_sys::fuzz_target;

/// `^[1-9][0-9]{0,6}[smhd]$`, by hand.
fn window_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b.len() <= 8
        && (b'1'..=b'9').contains(&b[0])
        && b[1..b.len() - 1].iter().all(u8::is_ascii_digit)
        && matches!(b[b.len() - 1], b's' | b'm' | b'h' | b'd')
}

fn check_window(s: &str) {
    match s.parse::<Window>() {
        Ok(w) => {
            assert!(window_pattern(s), "{s:?} parsed but is not of WINDOW_PATTERN's form");
            assert!((MIN_WINDOW.as_secs()..=MAX_WINDOW.as_secs()).contains(&w.as_secs()));
            assert_eq!(w.as_nanos(), w.as_secs() * 1_000_000_000);
            let shown = w.to_string();
            assert!(window_pattern(&shown));
            assert_eq!(shown.parse::<Window>(), Ok(w), "{s:?} -> {shown:?}");
            // Serialize (a hand-written fast path) agrees with Display.
            assert_eq!(serde_json::to_string(&w).unwrap(), format!("\"{shown}\""));
            assert_eq!(serde_json::from_str::<Window>(&format!("\"{shown}\"")).unwrap(), w);
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fn exercise(l: &RateLimit) {
    let p = l.policy();
    let mut b = Bucket::new(p);
    let now = 1_000 * 1_000_000_000u64;
    for cost in [0, 1, l.limit, u64::MAX] {
        if let Take::Pass(tat) = b.take(p, cost, now) {
            b.tat = tat;
        }
        let _ = (b.remaining(p, now), b.reset(p, now));
    }
    b.adopt(RateLimit::new("x", 1, l.duration).policy(), now);
}

fn check_line(s: &str) {
    match s.parse::<RateLimit>() {
        Ok(l) => {
            assert!(ratelimit::validate(std::slice::from_ref(&l)).is_ok());
            assert!(ratelimit::valid_name(&l.name) && l.limit <= MAX_LIMIT);
            let shown = l.to_string();
            assert_eq!(shown.parse::<RateLimit>().as_ref(), Ok(&l), "{s:?} -> {shown:?}");
            let json = serde_json::to_vec(&l).unwrap();
            assert_eq!(serde_json::from_slice::<RateLimit>(&json).unwrap(), l);
            exercise(&l);
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fn check_set(data: &[u8]) {
    let Ok(set) = serde_json::from_slice::<Vec<RateLimit>>(data) else {
        let _ = serde_json::from_slice::<RateLimit>(data);
        return;
    };
    let json = serde_json::to_vec(&set).unwrap();
    assert_eq!(serde_json::from_slice::<Vec<RateLimit>>(&json).unwrap(), set);
    for l in &set {
        check_window(&l.duration.to_string());
    }
    match ratelimit::validate(&set) {
        Ok(()) => {
            assert!(set.len() <= ratelimit::MAX_LIMITS);
            for l in &set {
                assert_eq!(l.to_string().parse::<RateLimit>().as_ref(), Ok(l));
                exercise(l);
            }
            let plan = [RateLimit::new("requests", 10, "1s".parse().unwrap())];
            let account = ratelimit::account_limits(Some(("plan", &plan)), &set);
            let _ = ratelimit::EffectiveLimit::for_credential(&set, &account);
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // One input feeds each parser: the whole text, and each line of it.
    check_window(&text);
    check_line(&text);
    for line in text.lines().take(32) {
        check_window(line);
        check_line(line);
    }
    check_set(data);
});
