//! The `edgeinfer` command line: the task flags shared by `local` and the daemon client
//! ([`tasks`]), `local` (in-process), `check` (will this model run here), `bench` (transport
//! overheads), the daemon client ([`remote`], over D-Bus or MQTT), value parsers, exit codes, and
//! `edgeinferd`'s own arguments ([`daemon_args`]).

pub mod bench;
pub mod check;
pub mod daemon_args;
pub mod exit;
pub mod local;
pub mod nodes;
pub mod remote;
pub mod tasks;
pub mod values;
