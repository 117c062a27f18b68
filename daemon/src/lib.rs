//! `edgeinfer-daemon`: the `edgeinfer` command-line tool (and, later, the `edgeinferd` daemon).
//! Library modules here are shared by the binaries and exercised by the integration tests.

pub mod api;
pub mod bench;
pub mod check;
pub mod client;
pub mod config;
pub mod embedded_broker;
pub mod engine;
pub mod exit;
pub mod local;
pub mod logging;
pub mod mqtt;
pub mod registry;
pub mod systemd;
pub mod tasks;
pub mod worker;
