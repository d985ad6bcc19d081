//! Maintenance windows: `DAYS HH:MM-HH:MM` in the site's time zone. DAYS is `daily`, a day
//! (`Mon`), a range (`Mon-Fri`, `Fri-Mon` wraps) or a comma list of those (`Sat,Sun`). An end
//! before the start crosses midnight: the window starts on the listed day and ends the next.
//! `24:00` ends at midnight. Several windows: any open one is open; none at all: always open.
//!
//! Every question is answered from the same absolute intervals (local start and end turned
//! into instants by the time zone's rules, a time skipped by a DST change moving forward as
//! `jiff` does by default), so `open_at` and `open_ms_between` never disagree.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Most windows a rollout may have.
pub const MAX_WINDOWS: usize = 16;
/// Longest window text (`Mon,Tue,Wed,Thu,Fri,Sat,Sun 22:00-05:00` is 38 bytes).
pub const MAX_WINDOW_BYTES: usize = 64;

const DAY_MS: i64 = 86_400_000;
/// Longest span `open_ms_between` walks; longer spans count from their last part only.
const MAX_SPAN_DAYS: i64 = 3660;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One parsed window: the weekdays it starts on (bit 0 = Monday) and its local minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    days: u8,
    start_min: u16,
    /// 1..=1440; at or below `start_min` the window ends the next day.
    end_min: u16,
}

/// A rollout's windows, parsed. Empty = always open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Windows(Vec<Window>);

impl Windows {
    /// Parses the texts; Err names the window and what is wrong.
    pub fn parse(texts: &[String]) -> Result<Windows, String> {
        if texts.len() > MAX_WINDOWS {
            return Err(format!(
                "{} windows, at most {MAX_WINDOWS} allowed",
                texts.len()
            ));
        }
        texts
            .iter()
            .map(|t| {
                if t.len() > MAX_WINDOW_BYTES {
                    return Err(format!(
                        "a window is {} bytes, at most {MAX_WINDOW_BYTES} allowed",
                        t.len()
                    ));
                }
                parse_one(t).map_err(|e| format!("window {t:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Windows)
    }

    /// Whether no window limits the time (the rollout is always open).
    pub fn always_open(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a window is open at `at_ms` in `tz`.
    pub fn open_at(&self, tz: &TimeZone, at_ms: i64) -> bool {
        self.always_open() || self.open_ms_between(tz, at_ms, at_ms.saturating_add(1)) > 0
    }

    /// Milliseconds of [from_ms, to_ms) inside a window (overlapping windows count once).
    pub fn open_ms_between(&self, tz: &TimeZone, from_ms: i64, to_ms: i64) -> i64 {
        if to_ms <= from_ms {
            return 0;
        }
        if self.always_open() {
            return to_ms - from_ms;
        }
        let from_ms = from_ms.max(to_ms.saturating_sub(MAX_SPAN_DAYS * DAY_MS));
        let mut spans = self.intervals(tz, from_ms, to_ms);
        spans.sort_unstable();
        let mut total = 0i64;
        let mut reached = from_ms;
        for (s, e) in spans {
            let s = s.max(reached);
            let e = e.min(to_ms);
            if e > s {
                total += e - s;
                reached = e;
            }
        }
        total
    }

    /// Every window occurrence that may meet [from_ms, to_ms), as instants (ms).
    fn intervals(&self, tz: &TimeZone, from_ms: i64, to_ms: i64) -> Vec<(i64, i64)> {
        let (Some(first), Some(last)) = (local_date(tz, from_ms), local_date(tz, to_ms)) else {
            return vec![];
        };
        // A window that started the day before may still be open at `from_ms`.
        let mut day = first.checked_sub(1.day()).unwrap_or(first);
        let mut out = Vec::new();
        while day <= last {
            let weekday = day.weekday().to_monday_zero_offset();
            for w in &self.0 {
                if w.days & (1 << weekday) == 0 {
                    continue;
                }
                let end_day = if w.end_min <= w.start_min {
                    day.checked_add(1.day()).ok()
                } else {
                    Some(day)
                };
                let start = instant(tz, day, w.start_min);
                let end = end_day.and_then(|d| instant(tz, d, w.end_min));
                if let (Some(s), Some(e)) = (start, end) {
                    out.push((s, e));
                }
            }
            match day.checked_add(1.day()) {
                Ok(next) => day = next,
                Err(_) => break,
            }
        }
        out
    }
}

/// The site's time zone from config `site.timezone` (an IANA name, from the tz database built
/// into the binary, the same on every node); None or empty = UTC.
pub fn site_timezone(name: Option<&str>) -> Result<TimeZone, String> {
    match name.map(str::trim) {
        None | Some("") => Ok(TimeZone::UTC),
        Some(n) => jiff::tz::db()
            .get(n)
            .map_err(|_| format!("site.timezone {n:?} is not a known IANA time zone")),
    }
}

fn local_date(tz: &TimeZone, ms: i64) -> Option<Date> {
    let ts = Timestamp::from_millisecond(ms).ok()?;
    Some(ts.to_zoned(tz.clone()).date())
}

/// The instant of local `day` at `minute` (0..=1440; 1440 is the next midnight).
fn instant(tz: &TimeZone, day: Date, minute: u16) -> Option<i64> {
    let (day, minute) = if minute >= 1440 {
        (day.checked_add(1.day()).ok()?, 0)
    } else {
        (day, minute)
    };
    let hour = i8::try_from(minute / 60).ok()?;
    let min = i8::try_from(minute % 60).ok()?;
    let time = Time::new(hour, min, 0, 0).ok()?;
    let zoned = day.to_datetime(time).to_zoned(tz.clone()).ok()?;
    Some(zoned.timestamp().as_millisecond())
}

fn parse_one(text: &str) -> Result<Window, String> {
    let mut parts = text.split_whitespace();
    let (Some(days), Some(times), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("write DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 22:00-05:00\"".to_owned());
    };
    let days = parse_days(days)?;
    let Some((start, end)) = times.split_once('-') else {
        return Err(format!("{times:?} is not HH:MM-HH:MM"));
    };
    let start_min = parse_time(start, false)?;
    let end_min = parse_time(end, true)?;
    if start_min == end_min {
        return Err("it starts and ends at the same time".to_owned());
    }
    Ok(Window {
        days,
        start_min,
        end_min,
    })
}

fn parse_days(text: &str) -> Result<u8, String> {
    if text.eq_ignore_ascii_case("daily") {
        return Ok(0x7f);
    }
    let day = |d: &str| {
        DAYS.iter()
            .position(|n| n.eq_ignore_ascii_case(d.trim()))
            .ok_or_else(|| format!("{d:?} is not a day (Mon Tue Wed Thu Fri Sat Sun or daily)"))
    };
    let mut mask = 0u8;
    for item in text.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << day(item)?,
        }
    }
    Ok(mask)
}

/// `HH:MM` into minutes of the day; `24:00` only as an end.
fn parse_time(text: &str, end: bool) -> Result<u16, String> {
    let bad = || format!("{text:?} is not a time HH:MM");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    match (h, m) {
        (24, 0) if end => Ok(1440),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const M: i64 = 60_000;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>()
            .map(|t| t.as_millisecond())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn w(texts: &[&str]) -> Windows {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        Windows::parse(&texts).unwrap_or_else(|e| panic!("{texts:?}: {e}"))
    }

    #[test]
    fn parse_table() {
        // (text, Ok(days, start, end) or Err(substring))
        type Want = Result<(u8, u16, u16), &'static str>;
        let cases: [(&str, Want); 11] = [
            ("Mon-Fri 22:00-05:00", Ok((0x1f, 1320, 300))),
            ("Sat,Sun 08:00-12:30", Ok((0x60, 480, 750))),
            ("mon 00:00-24:00", Ok((0x01, 0, 1440))),
            ("daily 01:00-02:00", Ok((0x7f, 60, 120))),
            ("Fri-Mon 10:00-11:00", Ok((0x71, 600, 660))),
            ("Mon-Fri", Err("write DAYS HH:MM-HH:MM")),
            ("Someday 10:00-11:00", Err("\"Someday\" is not a day")),
            ("Mon 25:00-26:00", Err("\"25:00\" is not a time")),
            ("Mon 24:00-01:00", Err("\"24:00\" is not a time")),
            ("Mon 10:00-10:00", Err("same time")),
            ("Mon 1000-1100", Err("\"1000\" is not a time")),
        ];
        for (text, want) in cases {
            match (parse_one(text), want) {
                (Ok(got), Ok((days, s, e))) => assert_eq!(
                    got,
                    Window {
                        days,
                        start_min: s,
                        end_min: e
                    },
                    "{text}"
                ),
                (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        let many: Vec<String> = (0..=MAX_WINDOWS)
            .map(|_| "daily 01:00-02:00".into())
            .collect();
        assert!(Windows::parse(&many).is_err());
        let long = format!("Mon 10:00-11:00{}", " ".repeat(MAX_WINDOW_BYTES));
        assert!(Windows::parse(&[long]).is_err_and(|e| e.starts_with("a window is 79 bytes")));
        assert!(
            Windows::parse(&["Mon 1:00-2:00".into(), "Tue x".into()])
                .is_err_and(|e| e.starts_with("window \"Tue x\""))
        );
    }

    #[test]
    fn open_at_table_utc() {
        let utc = TimeZone::UTC;
        let night = w(&["Mon-Fri 22:00-05:00"]);
        // 2026-12-07 is a Monday.
        let cases = [
            ("2026-12-07T21:59:59Z", false),
            ("2026-12-07T22:00:00Z", true),
            ("2026-12-08T04:59:59Z", true),
            ("2026-12-08T05:00:00Z", false),
            ("2026-12-07T03:00:00Z", false), // Sunday night's window does not exist
            ("2026-12-12T03:00:00Z", true),  // Friday's window runs into Saturday
            ("2026-12-12T22:30:00Z", false), // Saturday: none starts
        ];
        for (at, want) in cases {
            assert_eq!(night.open_at(&utc, ms(at)), want, "{at}");
        }
        assert!(Windows::default().open_at(&utc, 0));
        let two = w(&["Sat,Sun 08:00-12:00", "Wed 13:00-14:00"]);
        assert!(two.open_at(&utc, ms("2026-12-09T13:30:00Z")));
        assert!(two.open_at(&utc, ms("2026-12-13T08:00:00Z")));
        assert!(!two.open_at(&utc, ms("2026-12-10T13:30:00Z")));
    }

    #[test]
    fn time_zones_and_dst() {
        let berlin = site_timezone(Some("Europe/Berlin")).unwrap_or(TimeZone::UTC);
        let day = w(&["daily 02:00-04:00"]);
        // Winter: Berlin is UTC+1, so 02:00-04:00 local is 01:00-03:00 UTC.
        assert!(day.open_at(&berlin, ms("2026-12-07T01:30:00Z")));
        assert!(!day.open_at(&berlin, ms("2026-12-07T03:30:00Z")));
        // Summer: UTC+2.
        assert!(day.open_at(&berlin, ms("2026-07-07T00:30:00Z")));
        assert!(!day.open_at(&berlin, ms("2026-07-07T02:30:00Z")));
        // 2026-03-29: 02:00 local does not exist (clocks jump to 03:00 at 01:00 UTC): the
        // window runs from 03:00 to 04:00 local, one hour.
        let spring = day.open_ms_between(
            &berlin,
            ms("2026-03-29T00:00:00Z"),
            ms("2026-03-29T12:00:00Z"),
        );
        assert_eq!(spring, H);
        // 2026-10-25: 02:00-03:00 local happens twice; 02:00 (first) to 04:00 is 3 hours.
        let autumn = day.open_ms_between(
            &berlin,
            ms("2026-10-25T00:00:00Z"),
            ms("2026-10-25T12:00:00Z"),
        );
        assert_eq!(autumn, 3 * H);
        assert_eq!(site_timezone(None), Ok(TimeZone::UTC));
        assert_eq!(site_timezone(Some("")), Ok(TimeZone::UTC));
        assert!(site_timezone(Some("Mars/Olympus")).is_err_and(|e| e.contains("Mars/Olympus")));
    }

    #[test]
    fn soak_counts_only_time_inside_windows() {
        let utc = TimeZone::UTC;
        let night = w(&["Mon-Fri 22:00-05:00"]);
        // Monday 20:00 to Tuesday 12:00: 22:00-05:00 = 7 hours.
        let from = ms("2026-12-07T20:00:00Z");
        assert_eq!(night.open_ms_between(&utc, from, from + 16 * H), 7 * H);
        // Half inside: Monday 23:30 to Tuesday 01:00.
        let at = ms("2026-12-07T23:30:00Z");
        assert_eq!(night.open_ms_between(&utc, at, at + 90 * M), 90 * M);
        // A whole week: 5 windows of 7 hours.
        let monday = ms("2026-12-07T00:00:00Z");
        assert_eq!(
            night.open_ms_between(&utc, monday, monday + 7 * 24 * H),
            35 * H
        );
        // Overlapping windows count once.
        let overlap = w(&["daily 10:00-12:00", "daily 11:00-13:00"]);
        assert_eq!(
            overlap.open_ms_between(&utc, monday, monday + 24 * H),
            3 * H
        );
        // No windows: all the time; an empty or reversed span: nothing.
        assert_eq!(Windows::default().open_ms_between(&utc, 0, 5), 5);
        assert_eq!(night.open_ms_between(&utc, 10, 10), 0);
        assert_eq!(night.open_ms_between(&utc, 10, 5), 0);
    }
}
