//! weir's log lines on standard error: a small [`tracing`] subscriber that
//! writes each event as `time LEVEL message field=value …` (UTC, RFC 3339
//! with milliseconds), coloured on a terminal, filtered by `RUST_LOG`
//! directives ([`Targets`]). weir logs events only, no spans; this is all
//! it needs of `tracing-subscriber`'s formatter and span registry, and a
//! gateway's binary is about 25 KB smaller without them.

use std::fmt::{self, Write as _};
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;

/// The subscriber: events that `filter` enables, one line each.
pub struct StderrLog {
    filter: Targets,
    ansi: bool,
}

impl StderrLog {
    /// Writes the events `filter` enables; with ANSI colours if `ansi`.
    pub fn new(filter: Targets, ansi: bool) -> Self {
        StderrLog { filter, ansi }
    }

    /// One event's line (without the newline).
    fn line(&self, ms: i64, event: &Event<'_>) -> String {
        let level = *event.metadata().level();
        let mut line = crate::timefmt::format_datetime_ms(ms).replacen(' ', "T", 1);
        if ms % 1000 == 0 {
            line.push_str(".000");
        }
        line.push('Z');
        let (name, colour) = match level {
            Level::ERROR => ("ERROR", "31"),
            Level::WARN => (" WARN", "33"),
            Level::INFO => (" INFO", "32"),
            Level::DEBUG => ("DEBUG", "34"),
            Level::TRACE => ("TRACE", "35"),
        };
        if self.ansi {
            let _ = write!(line, " \x1b[{colour}m{name}\x1b[0m ");
        } else {
            let _ = write!(line, " {name} ");
        }
        let mut v = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut v);
        line.push_str(&v.message);
        if !v.message.is_empty() && !v.rest.is_empty() {
            line.push(' ');
        }
        line.push_str(&v.rest);
        line
    }
}

/// An event's message and its other fields, `name=value` separated by
/// spaces.
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.rest.is_empty() {
                self.rest.push(' ');
            }
            let _ = write!(self.rest, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl Subscriber for StderrLog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.filter.would_enable(m.target(), m.level())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut line = self.line(ms, event);
        line.push('\n');
        // One write per line: lines of several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures the lines [`StderrLog::line`] makes.
    struct Capture(StderrLog, Arc<Mutex<Vec<String>>>);

    impl Subscriber for Capture {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            self.0.enabled(m)
        }
        fn new_span(&self, a: &Attributes<'_>) -> Id {
            self.0.new_span(a)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            self.1
                .lock()
                .unwrap()
                .push(self.0.line(1_700_000_000_000, e));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn a_line_has_the_time_level_message_and_fields_and_the_filter_holds() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let filter: Targets = "info,weir_agent::log=warn,noisy=off".parse().unwrap();
        let sub = Capture(StderrLog::new(filter, false), lines.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(readings = 3, topic = "p/1", "published {} rows", 2);
            tracing::info!("left out: this module logs warnings only");
            tracing::error!(target: "other", "kept");
            tracing::error!(target: "noisy", "left out");
        });
        let lines = lines.lock().unwrap();
        assert_eq!(
            *lines,
            [
                "2023-11-14T22:13:20.000Z  WARN published 2 rows readings=3 topic=\"p/1\"",
                "2023-11-14T22:13:20.000Z ERROR kept",
            ]
        );
    }
}
