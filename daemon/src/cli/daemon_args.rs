//! `edgeinferd`'s command line, here rather than in the binary so that `edgeinfer manpages`
//! can write its man page too.

use std::path::PathBuf;

use clap::Parser;

use crate::server::config;

/// `edgeinferd`'s arguments.
#[derive(Parser, Debug)]
#[command(
    name = "edgeinferd",
    version,
    about = "edgeinfer inference daemon: serves SAM, DINOv2 and LLaMA models over D-Bus and MQTT",
    after_help = "Examples:\n  \
                  edgeinferd --config /etc/edgeinfer/edgeinferd.toml --check-config\n  \
                  edgeinferd --config ./edgeinferd.toml --log debug,rumqttc=warn\n\n\
                  As a service: systemctl start edgeinferd; systemctl reload edgeinferd after editing the\n\
                  configuration; journalctl -u edgeinferd MODEL=sam for one model's log."
)]
pub struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate the configuration and exit (0 if valid, 2 if not).
    #[arg(long)]
    pub check_config: bool,
    /// Log filter, an EnvFilter (`info`, `debug,rumqttc=warn`, ...; default: info, or RUST_LOG).
    #[arg(long)]
    pub log: Option<String>,
}
