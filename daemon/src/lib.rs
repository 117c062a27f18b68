//! `edgeinfer-daemon`: the `edgeinfer` command-line tool (and, later, the `edgeinferd` daemon).
//! Library modules here are shared by the binaries and exercised by the integration tests.

pub mod check;
pub mod exit;
pub mod logging;
