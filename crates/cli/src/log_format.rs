//! The log's line format: tracing-subscriber's default ("full") format, with the access line
//! (one per request, target `teeserve_serving::access`) written without its general machinery.
//!
//! The access line is the only one logged per request, so its cost is paid on every answer:
//! formatting it the general way (a calendar date computed from the clock, every field through
//! `core::fmt`) took about 9,700 instructions of a request's 200,000 on the digits model. Here
//! the date and time up to the second are kept per thread and rebuilt once a second, and plain
//! string fields are copied as they are. The line is the same, byte for byte, as the default
//! format writes (a test holds the two together); anything the short path does not cover (a span
//! around the event, colours, a field that needs escaping in an unusual way) takes the default
//! path.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime as Clock;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::log_sink::ACCESS;

/// The event format of the log: [`Format`]`<Full>` without targets, and access lines the short
/// way.
#[derive(Debug)]
pub struct LineFormat {
    full: Format<Full, Clock>,
}

impl Default for LineFormat {
    fn default() -> Self {
        Self {
            full: tracing_subscriber::fmt::format().with_target(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let short = meta.target() == ACCESS
            && *meta.level() == Level::INFO
            && !writer.has_ansi_escapes()
            && ctx.event_scope().is_none_or(|mut s| s.next().is_none());
        let Some(stamp) = short.then(Timestamp::now).flatten() else {
            return self.full.format_event(ctx, writer, event);
        };
        let mut fields = Fields {
            line: String::with_capacity(128),
            unusual: false,
        };
        event.record(&mut fields);
        if fields.unusual {
            return self.full.format_event(ctx, writer, event);
        }
        stamp.write(&mut writer)?;
        // The default format: the time, a space, the level right-aligned in five, a space.
        writer.write_str("  INFO ")?;
        writer.write_str(&fields.line)?;
        writer.write_char('\n')
    }
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` in UTC, as tracing-subscriber's `SystemTime` timer writes it.
struct Timestamp {
    /// Up to the seconds, from this thread's cache.
    seconds: [u8; 19],
    micros: u32,
}

thread_local! {
    /// The second last written on this thread, and its text.
    static LAST_SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// The last second a four-digit year can write (9999-12-31T23:59:59Z); past it, and before
/// 1970, the default format writes the time.
const LAST_FOUR_DIGIT_SECOND: u64 = 253_402_300_799;

impl Timestamp {
    fn now() -> Option<Self> {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        let secs = since.as_secs();
        if secs > LAST_FOUR_DIGIT_SECOND {
            return None;
        }
        let (cached, text) = LAST_SECOND.get();
        let seconds = if cached == secs {
            text
        } else {
            let text = seconds_text(secs);
            LAST_SECOND.set((secs, text));
            text
        };
        Some(Self {
            seconds,
            micros: since.subsec_micros(),
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> fmt::Result {
        let mut out = [0u8; 27];
        out[..19].copy_from_slice(&self.seconds);
        out[19] = b'.';
        digits(self.micros, &mut out[20..26]);
        out[26] = b'Z';
        // Only ASCII digits and punctuation were written.
        w.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

/// Writes `n` in decimal into all of `out`, zero-padded on the left.
fn digits(mut n: u32, out: &mut [u8]) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since the Unix epoch (at most [`LAST_FOUR_DIGIT_SECOND`]).
fn seconds_text(secs: u64) -> [u8; 19] {
    let (year, month, day) = civil_date(secs / 86_400);
    let s = secs % 86_400;
    let mut t = *b"0000-00-00T00:00:00";
    digits(year, &mut t[0..4]);
    digits(month, &mut t[5..7]);
    digits(day, &mut t[8..10]);
    digits((s / 3600) as u32, &mut t[11..13]);
    digits((s / 60 % 60) as u32, &mut t[14..16]);
    digits((s % 60) as u32, &mut t[17..19]);
    t
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01: the calendar
/// repeats every 400 years (146,097 days); within an era, counting years from March puts the
/// leap day last, so a day of the year gives its month by a linear formula (153 days per five
/// months from March).
fn civil_date(days: u64) -> (u32, u32, u32) {
    // Days from 0000-03-01 (1970-01-01 is day 719,468 of that count).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

/// The fields of an event as the default format writes them: the message as it is, the others
/// as `name=value` with the value's `Debug`, separated by single spaces. Anything written
/// otherwise there (a message that holds characters the default format escapes, a message or a
/// `log.` field given as a plain string, an error) makes the event `unusual`: it then takes the
/// default format.
struct Fields {
    line: String,
    unusual: bool,
}

impl Fields {
    fn pad(&mut self) {
        if !self.line.is_empty() {
            self.line.push(' ');
        }
    }

    fn name(field: &Field) -> &str {
        let name = field.name();
        name.strip_prefix("r#").unwrap_or(name)
    }
}

/// Characters the default format escapes in a message (ANSI and C1 controls), which the short
/// way leaves to it.
fn escaped_in_messages(c: char) -> bool {
    matches!(
        c,
        '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
    )
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let name = field.name();
        if name == "message" || name.starts_with("log.") {
            self.unusual = true;
            return;
        }
        self.pad();
        // `Debug` of a str quotes it and escapes quotes, backslashes and anything but printable
        // ASCII; a value of printable ASCII without those is written between quotes as it is.
        let plain = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if plain {
            self.line.push_str(Self::name(field));
            self.line.push_str("=\"");
            self.line.push_str(value);
            self.line.push('"');
        } else {
            let _ = write!(self.line, "{}={value:?}", Self::name(field));
        }
    }

    fn record_error(&mut self, _field: &Field, _value: &(dyn std::error::Error + 'static)) {
        self.unusual = true;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        self.pad();
        if name == "message" {
            let at = self.line.len();
            let _ = write!(self.line, "{value:?}");
            self.unusual |= self.line[at..].chars().any(escaped_in_messages);
        } else {
            let _ = write!(self.line, "{}={value:?}", Self::name(field));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn dates_are_the_calendars() {
        // Expected values from Python's datetime.utcfromtimestamp.
        let cases: [(u64, &[u8; 19]); 6] = [
            (0, b"1970-01-01T00:00:00"),
            (951_782_400, b"2000-02-29T00:00:00"),
            (951_868_799, b"2000-02-29T23:59:59"),
            (1_796_584_326, b"2026-12-06T19:12:06"),
            (4_107_542_400, b"2100-03-01T00:00:00"),
            (LAST_FOUR_DIGIT_SECOND, b"9999-12-31T23:59:59"),
        ];
        for (secs, want) in cases {
            assert_eq!(
                &seconds_text(secs),
                want,
                "{secs}: {}",
                String::from_utf8_lossy(&seconds_text(secs))
            );
        }
    }

    /// A `MakeWriter` that keeps what is written.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Kept {
        type Writer = Kept;
        fn make_writer(&'a self) -> Kept {
            self.clone()
        }
    }

    fn log(events: impl Fn(), short: bool) -> String {
        let kept = Kept::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(kept.clone())
            .with_ansi(false);
        let subscriber: Box<dyn Subscriber + Send + Sync> = if short {
            Box::new(builder.event_format(LineFormat::default()).finish())
        } else {
            Box::new(builder.with_target(false).finish())
        };
        tracing::subscriber::with_default(subscriber, events);
        let out = kept.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    /// Each line with its time cut off, after checking the time's shape.
    fn untimed(log: &str) -> Vec<String> {
        log.lines()
            .map(|l| {
                let (time, rest) = l.split_at(27);
                let shape: String = time
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '9' } else { c })
                    .collect();
                assert_eq!(shape, "9999-99-99T99:99:99.999999Z", "{l}");
                rest.to_owned()
            })
            .collect()
    }

    #[test]
    fn access_lines_are_the_default_formats_byte_for_byte() {
        let events = || {
            for model in ["digits", "a \"quoted\" model", "naïve\n\\path", ""] {
                tracing::info!(
                    target: "teeserve_serving::access",
                    entry = "grpc",
                    method = "Predict",
                    model,
                    status = %"OK",
                    latency_ms = format!("{:.3}", 0.0284),
                    "request"
                );
            }
            tracing::info!(target: "teeserve_serving::access", r#type = 7, flag = true, "other {}", 1);
            // What the short way leaves to the default format.
            tracing::info!(target: "teeserve_serving::access", "a \x1b[31mcoloured\x07 message\u{9b}");
            tracing::info!(target: "teeserve_serving::access", message = "a plain str", model = "m");
            let error = std::io::Error::other("disk on fire");
            tracing::info!(
                target: "teeserve_serving::access",
                error = &error as &(dyn std::error::Error + 'static),
                "an error"
            );
            tracing::warn!(target: "teeserve_serving::access", model = "digits", "a warning");
            tracing::info!(target: "elsewhere", model = "digits", "not an access line");
            let span = tracing::info_span!("scope", id = 3);
            let _entered = span.enter();
            tracing::info!(target: "teeserve_serving::access", model = "digits", "in a span");
        };
        let short = untimed(&log(events, true));
        let full = untimed(&log(events, false));
        assert_eq!(short.len(), 11);
        assert_eq!(short, full);
        assert_eq!(
            short[0],
            "  INFO request entry=\"grpc\" method=\"Predict\" model=\"digits\" status=OK latency_ms=\"0.028\""
        );
    }
}
