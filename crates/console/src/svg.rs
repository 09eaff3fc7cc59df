//! The usage chart: requests per day over the last 30 days as an SVG bar chart stacked by outcome
//! (let in, rate limited, insufficient credits, refused), with the credits spent as a line on a
//! scale of its own. Laid out here and drawn by the `chart.html` template (inline in the page:
//! no image request, no script, colours from the stylesheet, a `<title>` per day and a table for
//! screen readers).

use keygate_store::{DAY_MS, UsageBucket};

pub const DAYS: i64 = 30;
const WIDTH: u32 = 600;
const HEIGHT: u32 = 150;
const SLOT: u32 = WIDTH / DAYS as u32;
const BAR: u32 = SLOT - 6;

/// What the chart tells apart, bottom to top of a day's bar: the business codes of the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 1000.
    LetIn,
    /// 1005.
    RateLimited,
    /// 1006.
    InsufficientCredits,
    /// Any other code: the credential was refused (1101 revoked or rotated out, 1200 banned, ...).
    Refused,
}

impl Outcome {
    const ALL: [Outcome; 4] = [Self::LetIn, Self::RateLimited, Self::InsufficientCredits, Self::Refused];

    pub fn of(code: u32) -> Self {
        match code {
            1000 => Self::LetIn,
            1005 => Self::RateLimited,
            1006 => Self::InsufficientCredits,
            _ => Self::Refused,
        }
    }

    /// Its CSS class (`seg-...`, `key-...`).
    pub fn class(self) -> &'static str {
        match self {
            Self::LetIn => "ok",
            Self::RateLimited => "limited",
            Self::InsufficientCredits => "credits",
            Self::Refused => "refused",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::LetIn => "let in",
            Self::RateLimited => "rate limited",
            Self::InsufficientCredits => "insufficient credits",
            Self::Refused => "refused",
        }
    }
}

/// Requests per outcome (in [`Outcome::ALL`]'s order) and credits spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub by_outcome: [u64; 4],
    pub credits: u64,
}

impl Counts {
    fn add(&mut self, b: &UsageBucket) {
        self.by_outcome[Outcome::ALL.iter().position(|o| *o == Outcome::of(b.outcome)).unwrap_or(3)] += b.requests;
        self.credits += b.credits;
    }
    fn sum(&mut self, other: &Counts) {
        for (a, b) in self.by_outcome.iter_mut().zip(other.by_outcome) {
            *a += b;
        }
        self.credits += other.credits;
    }
    pub fn total(&self) -> u64 {
        self.by_outcome.iter().sum()
    }
    pub fn let_in(&self) -> u64 {
        self.by_outcome[0]
    }
    pub fn rate_limited(&self) -> u64 {
        self.by_outcome[1]
    }
    pub fn insufficient_credits(&self) -> u64 {
        self.by_outcome[2]
    }
    pub fn refused(&self) -> u64 {
        self.by_outcome[3]
    }
    /// "3 requests", with the outcomes when not all were let in, and the credits spent:
    /// "5 requests (3 let in, 2 rate limited); 6 credits spent".
    pub fn describe(&self) -> String {
        let total = self.total();
        let mut s = format!("{total} request{}", if total == 1 { "" } else { "s" });
        let parts: Vec<String> = Outcome::ALL
            .iter()
            .zip(self.by_outcome)
            .filter(|(_, n)| *n > 0)
            .map(|(o, n)| format!("{n} {}", o.label()))
            .collect();
        if parts.len() > 1 || (parts.len() == 1 && self.let_in() == 0) {
            s.push_str(&format!(" ({})", parts.join(", ")));
        }
        if self.credits > 0 {
            s.push_str(&format!("; {} credit{} spent", self.credits, if self.credits == 1 { "" } else { "s" }));
        }
        s
    }
}

/// A part of a day's bar above the let-in part, drawn over it.
pub struct Segment {
    pub class: &'static str,
    pub y: u32,
    pub height: u32,
}

pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub date: String,
    /// All the day's requests, whatever their outcome.
    pub requests: u64,
    pub counts: Counts,
    /// The day in words, for its `<title>`.
    pub label: String,
    pub segments: Vec<Segment>,
}

pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    pub max: u64,
    pub total: u64,
    /// The whole period's counts.
    pub counts: Counts,
    /// The busiest day's credits (the line's scale).
    pub credits_max: u64,
    /// The credits line (`x,y` pairs), when any were spent.
    pub credits_points: Option<String>,
    pub first: String,
    pub last: String,
    /// y of the top gridline (the `max` value).
    pub top: u32,
}

/// The date (UTC) of a day number (days since 1970-01-01), as YYYY-MM-DD.
pub fn date(day: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The chart of the `DAYS` days ending with `today`, from the store's daily buckets (missing
/// days are 0).
pub fn chart(rows: &[UsageBucket], today: i64) -> Chart {
    let first_day = today - (DAYS - 1);
    let days: Vec<Counts> = (first_day..=today)
        .map(|day| {
            let mut c = Counts::default();
            rows.iter().filter(|r| r.start.div_euclid(DAY_MS) == day).for_each(|r| c.add(r));
            c
        })
        .collect();
    let mut counts = Counts::default();
    days.iter().for_each(|d| counts.sum(d));
    let max = days.iter().map(Counts::total).max().unwrap_or(0);
    let credits_max = days.iter().map(|d| d.credits).max().unwrap_or(0);
    let top = 10;
    let area = HEIGHT - top;
    let scale = |n: u64, of: u64| if of == 0 { 0 } else { ((n as f64 / of as f64) * area as f64).round() as u32 };
    let bars = days
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let requests = c.total();
            let x = i as u32 * SLOT + (SLOT - BAR) / 2;
            // Proportional heights; a day with any request shows at least a sliver. The parts
            // are stacked by their running sums, so they add up to the bar's height.
            let h = if requests > 0 { scale(requests, max).max(2) } else { 0 };
            let mut segments = Vec::new();
            let mut below = c.let_in();
            for (k, o) in Outcome::ALL.iter().enumerate().skip(1) {
                let n = c.by_outcome[k];
                if n == 0 {
                    continue;
                }
                // The topmost part reaches the bar's top; every part is at least 1 px high.
                let mut lo = scale(below, max).min(h);
                let mut hi = if below + n == requests { h } else { scale(below + n, max).min(h) };
                if hi <= lo {
                    if lo < h { hi = lo + 1 } else { lo = h - 1 }
                }
                segments.push(Segment { class: o.class(), y: HEIGHT - hi, height: hi - lo });
                below += n;
            }
            Bar {
                x,
                y: HEIGHT - h,
                width: BAR,
                height: h,
                date: date(first_day + i as i64),
                requests,
                counts: *c,
                label: c.describe(),
                segments,
            }
        })
        .collect();
    let credits_points = (counts.credits > 0).then(|| {
        days.iter()
            .enumerate()
            .map(|(i, c)| format!("{},{}", i as u32 * SLOT + SLOT / 2, HEIGHT - scale(c.credits, credits_max)))
            .collect::<Vec<_>>()
            .join(" ")
    });
    Chart {
        width: WIDTH,
        height: HEIGHT,
        bars,
        max,
        total: counts.total(),
        counts,
        credits_max,
        credits_points,
        first: date(first_day),
        last: date(today),
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(day: i64, outcome: u32, requests: u64, credits: u64) -> UsageBucket {
        UsageBucket { start: day * DAY_MS, outcome, requests, credits }
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(19_782), "2024-02-29");
        assert_eq!(date(-1), "1969-12-31");
    }

    #[test]
    fn layout() {
        let rows = [b(100, 1000, 10, 0), b(90, 1000, 1, 0), b(50, 1000, 99, 0)];
        let c = chart(&rows, 100);
        assert_eq!(c.bars.len(), DAYS as usize);
        assert_eq!((c.max, c.total), (10, 11), "days before the window are left out");
        let last = c.bars.last().unwrap();
        assert_eq!((last.requests, last.height, last.y), (10, HEIGHT - c.top, c.top));
        assert_eq!(c.bars[19].requests, 1);
        assert_eq!(c.bars[19].height, 14);
        assert!(c.bars.iter().all(|b| b.x + b.width <= WIDTH && b.y + b.height == HEIGHT));
        assert!(c.bars.iter().all(|b| b.segments.is_empty()), "all let in: one part");
        assert_eq!(c.credits_points, None);
        assert_eq!(last.label, "10 requests");
        let empty = chart(&[], 100);
        assert!(empty.bars.iter().all(|b| b.height == 0));
    }

    #[test]
    fn stacked_by_outcome_with_credits() {
        let rows = [
            b(100, 1000, 60, 120),
            b(100, 1005, 20, 0),
            b(100, 1006, 10, 0),
            b(100, 1101, 6, 0),
            b(100, 1200, 4, 0),
            b(99, 1005, 1, 0),
            b(98, 1000, 1, 1),
        ];
        let c = chart(&rows, 100);
        let today = c.bars.last().unwrap();
        assert_eq!((today.requests, today.height), (100, HEIGHT - c.top));
        assert_eq!(today.counts.by_outcome, [60, 20, 10, 10]);
        assert_eq!(
            today.label,
            "100 requests (60 let in, 20 rate limited, 10 insufficient credits, 10 refused); 120 credits spent"
        );
        // Over the let-in part (84 px of 140): 28 px rate limited, 14 insufficient credits, 14 refused.
        let parts: Vec<_> = today.segments.iter().map(|s| (s.class, s.y, s.height)).collect();
        assert_eq!(parts, [("limited", 150 - 112, 28), ("credits", 150 - 126, 14), ("refused", 10, 14)]);
        // A day of only refusals is all refusal; its label says so.
        let yesterday = &c.bars[DAYS as usize - 2];
        assert_eq!(yesterday.label, "1 request (1 rate limited)");
        assert_eq!(yesterday.segments.len(), 1);
        assert_eq!((yesterday.segments[0].y, yesterday.segments[0].height), (yesterday.y, yesterday.height));
        assert_eq!(c.bars[DAYS as usize - 3].label, "1 request; 1 credit spent");
        assert_eq!((c.counts.total(), c.counts.credits, c.credits_max), (102, 121, 120));
        let points = c.credits_points.unwrap();
        assert_eq!(points.split(' ').count(), DAYS as usize);
        assert!(points.ends_with(&format!("{},{}", 29 * SLOT + SLOT / 2, c.top)), "{points}");
        for bar in &c.bars {
            assert!(bar.segments.iter().all(|s| s.y >= bar.y && s.y + s.height <= HEIGHT && s.height > 0));
        }
    }
}
