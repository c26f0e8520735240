//! Simulated time. Nothing here reads a clock: every value is handed in by a driver.
//!
//! ag2's hub reads two time sources, and so does hubsim's:
//! - [`Timestamp`], the hub clock that stamps envelopes, channels and audit records, printed the
//!   way Python's `datetime.isoformat()` prints it (`+00:00`, microseconds omitted when zero);
//! - [`Instant`], the event loop's monotonic clock behind real timers (`invite_ack_timeout`,
//!   sweeper intervals, RPC timeouts).
//!
//! On a simulated network both advance together; the in-process oracle driver keeps the hub clock
//! frozen between `advance` steps while its monotonic clock moves only when a step waits, exactly
//! as the reference runner's mock clock and asyncio loop do.

use std::fmt;

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// A moment on the hub clock: microseconds since the Unix epoch, displayed at a fixed UTC offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    /// Microseconds since 1970-01-01T00:00:00Z.
    pub micros: i64,
    /// The UTC offset the hub clock prints, in seconds (the epoch's offset).
    pub offset_seconds: i32,
}

/// A point on the monotonic (event-loop) clock, in microseconds since the driver started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instant(pub u64);

impl Instant {
    /// The instant `micros` microseconds after this one, saturating at the end of time.
    pub fn plus_micros(self, micros: u64) -> Instant {
        Instant(self.0.saturating_add(micros))
    }
}

/// The pair of clocks every hub input is stamped with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// The hub clock.
    pub wall: Timestamp,
    /// The event-loop clock.
    pub mono: Instant,
}

/// The default scenario epoch of the reference runner.
pub const DEFAULT_EPOCH: &str = "2026-01-01T00:00:00+00:00";

impl Timestamp {
    /// This moment shifted by `micros` (negative moves back), keeping the display offset.
    pub fn plus_micros(self, micros: i64) -> Timestamp {
        Timestamp {
            micros: self.micros.saturating_add(micros),
            offset_seconds: self.offset_seconds,
        }
    }

    /// True between years 1 and 9999, the range of Python's `datetime`.
    pub fn in_python_range(self) -> bool {
        // 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z, in microseconds since the Unix epoch.
        const MIN: i64 = -62_135_596_800 * MICROS_PER_SECOND;
        const MAX: i64 = 253_402_300_800 * MICROS_PER_SECOND;
        let local = self
            .micros
            .saturating_add(i64::from(self.offset_seconds) * MICROS_PER_SECOND);
        (MIN..MAX).contains(&local)
    }

    /// Python's `datetime.timestamp()`: seconds since the Unix epoch as a float, computed the way
    /// CPython computes it (integer microseconds divided by 10**6, correctly rounded).
    pub fn as_epoch_seconds(self) -> f64 {
        self.micros as f64 / MICROS_PER_SECOND as f64
    }

    /// Parses the ISO-8601 forms Python's `datetime.fromisoformat` produces and the oracle's
    /// normaliser matches: `YYYY-MM-DDTHH:MM:SS[.f+](Z|±HH:MM)`. A missing offset means UTC.
    pub fn parse_iso(text: &str) -> Option<Timestamp> {
        let bytes = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = bytes.get(range)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(part).ok()?.parse().ok()
        };
        if bytes.len() < 19 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
            return None;
        }
        if bytes[13] != b':' || bytes[16] != b':' {
            return None;
        }
        let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let mut idx = 19;
        let mut fraction_micros = 0i64;
        if bytes.get(idx) == Some(&b'.') {
            let start = idx + 1;
            let mut end = start;
            while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start || end - start > 6 {
                return None;
            }
            let value = digits(start..end)?;
            fraction_micros = value * 10i64.pow(6 - (end - start) as u32);
            idx = end;
        }
        let offset_seconds = match bytes.get(idx) {
            None => 0,
            Some(b'Z') if idx + 1 == bytes.len() => 0,
            Some(sign @ (b'+' | b'-')) if idx + 6 == bytes.len() && bytes[idx + 3] == b':' => {
                let hours = digits(idx + 1..idx + 3)?;
                let minutes = digits(idx + 4..idx + 6)?;
                if hours > 23 || minutes > 59 {
                    return None;
                }
                let magnitude = (hours * 3600 + minutes * 60) as i32;
                if *sign == b'-' {
                    -magnitude
                } else {
                    magnitude
                }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let local_seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
        let utc_seconds = local_seconds - i64::from(offset_seconds);
        Some(Timestamp {
            micros: utc_seconds * MICROS_PER_SECOND + fraction_micros,
            offset_seconds,
        })
    }
}

impl fmt::Display for Timestamp {
    /// Python's `datetime.isoformat()` for an aware datetime.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = self.micros + i64::from(self.offset_seconds) * MICROS_PER_SECOND;
        let seconds = local.div_euclid(MICROS_PER_SECOND);
        let micros = local.rem_euclid(MICROS_PER_SECOND);
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return write!(f, "{year:04}-{month:02}-{day:02}T{second_of_day}s");
        }
        // Digits are written by hand: this runs for every stamp the hub prints.
        let mut buf = [0u8; 32];
        let mut len = 0;
        let mut push = |value: i64, width: usize| {
            let mut digits = [b'0'; 6];
            let mut rest = value;
            for slot in digits[..width].iter_mut().rev() {
                *slot = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            buf[len..len + width].copy_from_slice(&digits[..width]);
            len += width;
        };
        push(year, 4);
        push(month, 2);
        push(day, 2);
        push(second_of_day / 3600, 2);
        push(second_of_day / 60 % 60, 2);
        push(second_of_day % 60, 2);
        let offset = self.offset_seconds.unsigned_abs() as i64;
        push(offset / 3600, 2);
        push(offset / 60 % 60, 2);
        push(micros, 6);
        let d =
            |range: std::ops::Range<usize>| std::str::from_utf8(&buf[range]).expect("ASCII digits");
        let sign = if self.offset_seconds < 0 { '-' } else { '+' };
        f.write_str(d(0..4))?;
        f.write_str("-")?;
        f.write_str(d(4..6))?;
        f.write_str("-")?;
        f.write_str(d(6..8))?;
        f.write_str("T")?;
        f.write_str(d(8..10))?;
        f.write_str(":")?;
        f.write_str(d(10..12))?;
        f.write_str(":")?;
        f.write_str(d(12..14))?;
        if micros != 0 {
            f.write_str(".")?;
            f.write_str(d(18..24))?;
        }
        f.write_fmt(format_args!("{sign}"))?;
        f.write_str(d(14..16))?;
        f.write_str(":")?;
        f.write_str(d(16..18))
    }
}

/// Seconds given as a float, rounded to whole microseconds the way `timedelta(seconds=x)` does.
pub fn seconds_to_micros(seconds: f64) -> i64 {
    (seconds * MICROS_PER_SECOND as f64).round_ties_even() as i64
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isoformat_round_trips_and_omits_zero_micros() {
        for text in [
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T12:34:56.500000+00:00",
            "2024-02-29T23:59:59.000001+05:30",
            "1969-12-31T23:59:59-01:00",
        ] {
            let parsed = Timestamp::parse_iso(text).expect(text);
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn parse_accepts_z_and_short_fractions() {
        let stamp = Timestamp::parse_iso("2026-01-01T00:00:00.5Z").expect("parses");
        assert_eq!(stamp.to_string(), "2026-01-01T00:00:00.500000+00:00");
        assert!(Timestamp::parse_iso("2026-13-01T00:00:00+00:00").is_none());
        assert!(Timestamp::parse_iso("2026-02-30T00:00:00+00:00").is_none());
        assert!(Timestamp::parse_iso("2026-01-01 00:00:00+00:00").is_none());
    }

    #[test]
    fn shifting_crosses_days_and_years() {
        let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch");
        assert_eq!(
            epoch.plus_micros(7200 * MICROS_PER_SECOND).to_string(),
            "2026-01-01T02:00:00+00:00"
        );
        assert_eq!(
            epoch.plus_micros(-1).to_string(),
            "2025-12-31T23:59:59.999999+00:00"
        );
        assert_eq!(epoch.as_epoch_seconds(), 1_767_225_600.0);
    }
}
