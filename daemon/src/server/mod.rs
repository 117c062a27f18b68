//! The daemon's core, which knows no transport: configuration, the model registry (load, unload,
//! keep-alive, memory budget, reload), one worker thread per model running its engine (the model
//! family's pipeline), the status and stats documents, systemd notifications and the journald log
//! output. The transports hand it [`crate::api::Task`]s and get [`crate::api::Response`]s back.

pub mod config;
pub mod engine;
pub mod journal;
pub mod metrics;
pub mod metrics_http;
pub mod registry;
pub mod reload;
pub mod status;
pub mod systemd;
pub mod worker;
