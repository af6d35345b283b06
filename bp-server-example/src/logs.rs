//! The log lines: one JSON object per event (the default), or `tracing`'s text format.
//!
//! The JSON lines are those of `tracing_subscriber`'s JSON format with the event's fields
//! flattened and no current span (`.json().flatten_event(true).with_current_span(false)`), key
//! for key and byte for byte: `timestamp` (RFC 3339, microseconds, UTC), `level`, the event's
//! fields, `target`, and inside a span `spans` (root first, each its fields and `name`; the
//! fields in the order they were recorded, where that format sorts them). [`JsonLines`] writes them directly instead of through `serde`:
//! every request logs a line, and that format cost about 18,000 instructions per HTTP payment.
//! One difference: a float field is written as a string (its `Debug` form), not a JSON number.
//! The server logs none (floats are kept out of its code, `.semgrep/bp-money-no-float.yaml`).

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Installs the process's logs: events `filter` lets through, as JSON lines (`json`) or text, to
/// `writer`. Also takes the `log` crate's records.
pub fn init<W>(filter: EnvFilter, json: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if json {
        builder.fmt_fields(JsonFields::new()).event_format(JsonLines::new()).init();
    } else {
        builder.init();
    }
}

/// The JSON line format (see the module's documentation).
#[derive(Clone, Copy, Debug)]
pub struct JsonLines {
    now: fn() -> SystemTime,
}

impl JsonLines {
    /// Lines stamped with the system clock.
    pub fn new() -> Self {
        Self { now: SystemTime::now }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, JsonFields>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, (self.now)())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut fields = Fields { w: &mut w, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        write_str_value(&mut w, meta.target())?;
        // As `tracing_subscriber` writes them: inside a span (the event's parent, or the current
        // one), the current span's scope.
        if event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current()).is_some() {
            w.write_str(",\"spans\":[")?;
            if let Some(leaf) = ctx.lookup_current() {
                for (i, span) in leaf.scope().from_root().enumerate() {
                    if i > 0 {
                        w.write_char(',')?;
                    }
                    w.write_char('{')?;
                    let extensions = span.extensions();
                    // The span's fields as `JsonFields` stored them: a JSON object, or nothing.
                    let inner = extensions
                        .get::<FormattedFields<JsonFields>>()
                        .and_then(|f| f.fields.as_str().strip_prefix('{'))
                        .and_then(|f| f.strip_suffix('}'))
                        .unwrap_or("");
                    if !inner.is_empty() {
                        w.write_str(inner)?;
                        w.write_char(',')?;
                    }
                    w.write_str("\"name\":")?;
                    write_str_value(&mut w, span.metadata().name())?;
                    w.write_char('}')?;
                }
            }
            w.write_char(']')?;
        }
        w.write_str("}\n")
    }
}

/// Writes an event's fields as `,"name":value` entries.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.w.write_char(',')?;
                write_str_value(self.w, field.name())?;
                self.w.write_char(':')?;
                value(self.w)
            })();
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| write_str_value(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// A JSON string: `s` quoted and escaped.
fn write_str_value(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string, as serde_json escapes it:
/// `"`, `\` and the control characters below U+0020 (short forms where JSON has them).
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let short = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if short.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(short)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// `at` as `tracing_subscriber`'s system time: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC.
fn write_timestamp(w: &mut Writer<'_>, at: SystemTime) -> fmt::Result {
    let mut buf = [0u8; 30];
    // After 9999 only on a broken clock: written as that year's end then.
    w.write_str(bp_core::rfc3339::write_micros(&at.into(), &mut buf).unwrap_or("9999-12-31T23:59:59.999999Z"))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// A log destination the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()).expect("utf-8")
        }
    }

    const AT_S: u64 = 1_796_000_000;
    const AT_US: u32 = 123_456;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::new(AT_S, AT_US * 1_000)
    }

    /// Events of every kind of field, inside spans and outside.
    fn log_events() {
        #[derive(Debug)]
        #[allow(dead_code, reason = "read through Debug")]
        struct Thing {
            name: &'static str,
        }
        let error = std::io::Error::other("disk \"full\"\nagain");
        tracing::info!(
            request_id = "r-1",
            method = "POST",
            route = "/v1/transfers",
            status = 201u16,
            duration_us = 42u64,
            "request"
        );
        tracing::warn!(
            text = "quote \" backslash \\ tab \t bell \u{7} nul \0 del \u{7f} é 💶",
            negative = -7i64,
            yes = true
        );
        tracing::error!(shown = %"display", debugged = ?Thing { name: "x\"y" }, error = &error as &(dyn std::error::Error + 'static), "failed: {}", 3);
        let outer = tracing::info_span!("outer", customer = "c-1", n = 5u64);
        let _outer = outer.enter();
        tracing::info!("in one span");
        let inner = tracing::info_span!("inner \"quoted\"");
        let _inner = inner.enter();
        tracing::info!(k = "v", "in two spans");
        tracing::info!(target: "other::target", "another target");
    }

    /// Every event's line, by the given format.
    fn lines_of(json_lines: bool) -> String {
        let out = Captured::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let builder = tracing_subscriber::fmt().with_env_filter(EnvFilter::new("trace")).with_writer(writer);
        if json_lines {
            let subscriber = builder.fmt_fields(JsonFields::new()).event_format(JsonLines { now: at }).finish();
            tracing::subscriber::with_default(subscriber, log_events);
        } else {
            let subscriber = builder.json().flatten_event(true).with_current_span(false).finish();
            tracing::subscriber::with_default(subscriber, log_events);
        }
        out.text()
    }

    #[test]
    fn json_lines_are_those_of_the_serde_format() {
        let ours = lines_of(true);
        let theirs = lines_of(false);
        assert_eq!(ours.lines().count(), 6, "{ours}");
        // The reference format reads the real clock: the timestamps are compared apart.
        let stamp = "\"timestamp\":\"";
        let strip = |text: &str| -> Vec<String> {
            text.lines()
                .map(|l| {
                    let rest = l.strip_prefix(&format!("{{{stamp}")).expect("timestamp first");
                    rest.split_once('"').expect("timestamp's end").1.to_owned()
                })
                .collect()
        };
        assert_eq!(strip(&ours), strip(&theirs));
        for line in ours.lines() {
            let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
            assert_eq!(value["timestamp"], "2026-11-30T00:53:20.123456Z");
        }
        assert!(ours.contains(r#","spans":[{"customer":"c-1","n":5,"name":"outer"},{"name":"inner \"quoted\""}]}"#));
    }

    #[test]
    fn timestamps_are_rfc_3339_in_utc_with_microseconds() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000001Z"),
            (4_107_542_399, 999_999, "2100-02-28T23:59:59.999999Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
            (253_402_300_799, 500_000, "9999-12-31T23:59:59.500000Z"),
        ];
        for (secs, micros, expected) in cases {
            let mut out = String::new();
            write_timestamp(&mut Writer::new(&mut out), UNIX_EPOCH + Duration::new(secs, micros * 1_000))
                .expect("write");
            assert_eq!(out, expected);
        }
        // Every day of four centuries, against chrono's calendar.
        for days in (0..146_097 * 4).step_by(7) {
            let secs = days * 86_400 + 3_723;
            let mut out = String::new();
            write_timestamp(&mut Writer::new(&mut out), UNIX_EPOCH + Duration::from_secs(secs)).expect("write");
            let chrono = chrono::DateTime::from_timestamp(i64::try_from(secs).expect("secs"), 0).expect("in range");
            assert_eq!(out, chrono.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        }
    }
}
