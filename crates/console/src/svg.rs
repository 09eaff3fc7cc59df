//! The usage chart: requests per day over the last 30 days as an SVG bar chart, laid out here
//! and drawn by the `chart.html` template (inline in the page: no image request, no script,
//! colours from the stylesheet, a `<title>` per bar and a table for screen readers).

use keygate_store::DailyUsage;

pub const DAYS: i64 = 30;
const WIDTH: u32 = 600;
const HEIGHT: u32 = 150;
const SLOT: u32 = WIDTH / DAYS as u32;
const BAR: u32 = SLOT - 6;

pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub date: String,
    pub requests: u64,
}

pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    pub max: u64,
    pub total: u64,
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

/// The chart of the `DAYS` days ending with `today`, from the store's rows (missing days are 0).
pub fn chart(rows: &[DailyUsage], today: i64) -> Chart {
    let first_day = today - (DAYS - 1);
    let counts: Vec<u64> =
        (first_day..=today).map(|day| rows.iter().filter(|r| r.day == day).map(|r| r.requests).sum()).collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    let top = 10;
    let area = HEIGHT - top;
    let bars = counts
        .iter()
        .enumerate()
        .map(|(i, &requests)| {
            // Proportional heights; a day with any request shows at least a sliver.
            let h = if max == 0 { 0 } else { ((requests as f64 / max as f64) * area as f64).round() as u32 };
            let h = if requests > 0 { h.max(2) } else { 0 };
            Bar {
                x: i as u32 * SLOT + (SLOT - BAR) / 2,
                y: HEIGHT - h,
                width: BAR,
                height: h,
                date: date(first_day + i as i64),
                requests,
            }
        })
        .collect();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        bars,
        max,
        total: counts.iter().sum(),
        first: date(first_day),
        last: date(today),
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(19_782), "2024-02-29");
        assert_eq!(date(-1), "1969-12-31");
    }

    #[test]
    fn layout() {
        let rows = [
            DailyUsage { day: 100, requests: 10, limited: 0 },
            DailyUsage { day: 90, requests: 1, limited: 0 },
            DailyUsage { day: 50, requests: 99, limited: 0 },
        ];
        let c = chart(&rows, 100);
        assert_eq!(c.bars.len(), DAYS as usize);
        assert_eq!((c.max, c.total), (10, 11), "days before the window are left out");
        let last = c.bars.last().unwrap();
        assert_eq!((last.requests, last.height, last.y), (10, HEIGHT - c.top, c.top));
        assert_eq!(c.bars[19].requests, 1);
        assert_eq!(c.bars[19].height, 14);
        assert!(c.bars.iter().all(|b| b.x + b.width <= WIDTH && b.y + b.height == HEIGHT));
        let empty = chart(&[], 100);
        assert!(empty.bars.iter().all(|b| b.height == 0));
    }
}
