//! `edgeinfer-daemon`: `edgeinferd` (the daemon) and `edgeinfer` (the command-line tool and
//! client), grouped by role (docs/architecture.md draws the picture):
//!
//! - [`server`]: the daemon's core, which knows no transport: configuration, the model registry,
//!   the workers and engines that run the pipelines, systemd integration, logging to journald;
//! - [`mqtt`] and [`dbus`]: the transports, thin adapters between the wire and [`api`] (each with
//!   its client side, and for MQTT the embedded broker);
//! - [`cli`]: the `edgeinfer` commands (tasks, `local`, `check`, `bench`, the daemon client);
//! - [`hub`]: Hugging Face Hub folders (`edgeinfer pull`, `hf:` paths);
//! - [`api`] and [`frame`], shared by all: the request and answer types, error codes, frames.
//!
//! The dependencies run one way: binaries → cli → {mqtt, dbus} → server → api.

pub mod api;
pub mod cli;
pub mod dbus;
pub mod frame;
pub mod hub;
pub mod logging;
pub mod mqtt;
pub mod server;
