//! The journald output of the daemon's one tracing pipeline (the same `EnvFilter` as on stderr).
//! Each event goes to journald with its own fields and those of every span it happened in (the
//! innermost wins), named as journald wants them: `MODEL=`, `TASK=`, `CODE=`, `ERROR=`. The
//! native protocol is systemd-journal-logger's client; this layer only carries the fields over.

use std::fmt;

use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A `tracing` layer writing to journald.
pub struct JournalLayer {
    log: JournalLog,
}

impl JournalLayer {
    /// Opens the journal socket; `identifier` becomes `SYSLOG_IDENTIFIER`.
    pub fn new(identifier: &str) -> std::io::Result<JournalLayer> {
        Ok(JournalLayer { log: JournalLog::new()?.with_syslog_identifier(identifier.to_string()) })
    }
}

/// Field names and values, in the order first seen.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.remove(at).1)
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field.name(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for JournalLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(theirs) = span.extensions().get::<Fields>() {
                    for (k, v) in &theirs.0 {
                        fields.set(k, v.clone());
                    }
                }
            }
        }
        let mut own = Fields::default();
        event.record(&mut own);
        let message = own.take("message").unwrap_or_default();
        for (k, v) in own.0 {
            fields.set(&k, v);
        }
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        };
        let pairs: Vec<(&str, &str)> = fields.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Nowhere to report a failed log write.
        let _ = self.log.journal_send(
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(level)
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .key_values(&pairs)
                .build(),
        );
    }
}
