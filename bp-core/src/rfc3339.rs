//! A [`Timestamp`] in JSON exactly as chrono writes it (RFC 3339 in UTC with `Z`, and the
//! shortest of 0, 3, 6 or 9 fractional digits that keeps it whole), without chrono's formatting
//! machinery: about 2,900 instructions a timestamp through `collect_str`, which every posting of
//! a history page and every transfer answer paid for. For the hot fields, with
//! `#[serde(serialize_with = "crate::rfc3339::serialize")]` (or [`serialize_option`]); reading
//! stays chrono's.

use chrono::{Datelike as _, Timelike as _};
use serde::{Serialize as _, Serializer};

use crate::Timestamp;

/// Serializes `at` as chrono does.
pub fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match write(at, &mut buf) {
        Some(text) => serializer.serialize_str(text),
        // Years outside 0..=9999, or a leap second: chrono's own form.
        None => at.serialize(serializer),
    }
}

/// Serializes `at`, when there is one, as chrono does.
pub fn serialize_option<S: Serializer>(at: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// `at` as `YYYY-MM-DDTHH:MM:SS[.fff[fff[fff]]]Z` in `buf`; None for a year outside 0..=9999 or
/// a leap second (nanoseconds past 999,999,999), which chrono writes in forms of its own.
fn write<'b>(at: &Timestamp, buf: &'b mut [u8; 30]) -> Option<&'b str> {
    write_fraction(at, buf, None)
}

/// `at` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (always six fractional digits, as log lines stamp
/// their events) in `buf`; None as for [`serialize`]'s own form.
pub fn write_micros<'b>(at: &Timestamp, buf: &'b mut [u8; 30]) -> Option<&'b str> {
    write_fraction(at, buf, Some(6))
}

/// The text of `at` with `fixed` fractional digits, or the fewest of 0, 3, 6, 9 that keep it
/// whole.
fn write_fraction<'b>(at: &Timestamp, buf: &'b mut [u8; 30], fixed: Option<u32>) -> Option<&'b str> {
    let (date, time) = (at.date_naive(), at.time());
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut put = |at: usize, digits: usize, mut value: u32| {
        for i in (at..at + digits).rev() {
            buf[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, date.month());
    put(8, 2, date.day());
    put(11, 2, time.hour());
    put(14, 2, time.minute());
    put(17, 2, time.second());
    let digits: u32 = fixed.unwrap_or(match nanos {
        0 => 0,
        n if n % 1_000_000 == 0 => 3,
        n if n % 1_000 == 0 => 6,
        _ => 9,
    });
    let (dot, end) = (19, 20 + digits as usize);
    if digits > 0 {
        put(20, digits as usize, nanos / 10u32.pow(9 - digits));
    }
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b'T';
    buf[13] = b':';
    buf[16] = b':';
    let len = if digits > 0 {
        buf[dot] = b'.';
        buf[end] = b'Z';
        end + 1
    } else {
        buf[dot] = b'Z';
        dot + 1
    };
    std::str::from_utf8(&buf[..len]).ok()
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone as _, Utc};

    use super::*;

    /// What chrono's own `Serialize` writes.
    fn chrono_json(at: &Timestamp) -> String {
        serde_json::to_string(at).expect("json")
    }

    fn ours(at: &Timestamp) -> String {
        let mut out = Vec::new();
        serialize(at, &mut serde_json::Serializer::new(&mut out)).expect("json");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        let mut cases: Vec<Timestamp> = vec![
            DateTime::UNIX_EPOCH,
            Utc.with_ymd_and_hms(2000, 2, 29, 23, 59, 59).single().expect("valid"),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().expect("valid"),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single().expect("valid"),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single().expect("valid"),
            Utc.with_ymd_and_hms(-1, 6, 15, 12, 0, 0).single().expect("valid"),
        ];
        // Every fraction width, and a walk over four centuries in odd steps.
        let mut seconds: i64 = 0;
        let mut nanos: u32 = 0;
        for i in 0..20_000u32 {
            seconds += 631_152_013 / 1_000 * 7 + i64::from(i % 97);
            nanos = match i % 5 {
                0 => 0,
                1 => (nanos / 1_000_000 % 1_000 + 1) * 1_000_000,
                2 => (nanos / 1_000 % 1_000_000 + 1) * 1_000,
                3 => (nanos + 7_919) % 1_000_000_000,
                _ => i * 1_000,
            };
            cases.push(DateTime::from_timestamp(seconds % 12_622_780_800, nanos).expect("in range"));
        }
        for at in &cases {
            assert_eq!(ours(at), chrono_json(at), "{at:?}");
        }
        assert_eq!(ours(&cases[0]), r#""1970-01-01T00:00:00Z""#);
    }

    #[test]
    fn an_absent_timestamp_is_null() {
        let mut out = Vec::new();
        serialize_option(&None, &mut serde_json::Serializer::new(&mut out)).expect("json");
        assert_eq!(out, b"null");
        let mut out = Vec::new();
        let at = DateTime::from_timestamp(1_796_000_000, 123_456_000).expect("in range");
        serialize_option(&Some(at), &mut serde_json::Serializer::new(&mut out)).expect("json");
        assert_eq!(String::from_utf8(out).expect("utf-8"), r#""2026-11-30T00:53:20.123456Z""#);
    }
}
