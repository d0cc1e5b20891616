//! Structured logging: one line per event, plain or JSON, filtered by a `RUST_LOG`-style directive.

use clap::{Args, ValueEnum};
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Plain,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Logging flags shared by both binaries.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log filter, in `RUST_LOG` syntax (e.g. `info,konnector_executor=debug`).
    #[arg(long = "log-level", env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long = "log-format", env = "KONNECTOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global subscriber. Fails if the filter does not parse, so a typo is not silently ignored.
    pub fn init(&self) -> anyhow::Result<()> {
        let filter = EnvFilter::try_new(&self.log_level)?;
        let registry = tracing_subscriber::registry().with(filter);
        match self.log_format {
            LogFormat::Plain => registry.with(fmt::layer().with_target(true)).try_init()?,
            LogFormat::Json => registry
                .with(fmt::layer().json().flatten_event(true).with_current_span(false))
                .try_init()?,
        }
        Ok(())
    }
}
