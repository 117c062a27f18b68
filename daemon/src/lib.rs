//! `edgeinfer-daemon`: the `edgeinfer` command-line tool (and, later, the `edgeinferd` daemon).
//! Library modules here are shared by the binaries and exercised by the integration tests.

pub mod api;
pub mod check;
pub mod engine;
pub mod exit;
pub mod local;
pub mod logging;
pub mod tasks;
