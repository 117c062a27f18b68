//! `edgeinfer-daemon`: `edgeinferd` (the daemon: registry, workers, MQTT and D-Bus adapters) and
//! `edgeinfer` (the command-line tool and client).
//! Library modules here are shared by the binaries and exercised by the integration tests.

pub mod api;
pub mod bench;
pub mod check;
pub mod cli_daemon;
pub mod cli_values;
pub mod client;
pub mod config;
pub mod dbus;
pub mod embedded_broker;
pub mod engine;
pub mod exit;
pub mod frame;
pub mod hub;
pub mod journal;
pub mod local;
pub mod logging;
pub mod mqtt;
mod puback_order;
pub mod registry;
pub mod reload;
pub mod remote;
pub mod reply_topics;
pub mod status;
pub mod systemd;
pub mod tasks;
pub mod worker;
