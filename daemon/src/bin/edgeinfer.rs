//! `edgeinfer`: the command-line tool. `check` answers "will this model run here, on which
//! execution provider, how fast, and does it agree with the CPU?".

use clap::{Parser, Subcommand};
use edgeinfer_daemon::check::{self, CheckArgs};
use edgeinfer_daemon::exit::{CliError, ExitCode};
use edgeinfer_daemon::local::{self, LocalArgs};
use edgeinfer_daemon::logging;

#[derive(Parser, Debug)]
#[command(name = "edgeinfer", version, about = "edgeinfer: on-device inference tools")]
struct Cli {
    /// Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load an ONNX model on each backend / execution provider, time it, and compare outputs.
    Check(CheckArgs),
    /// Run a task in-process on a model directory (no daemon): segment, embed, classify, gallery, generate.
    Local(LocalArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init_cli(cli.log.as_deref(), "warn");
    logging::quiet_panics();
    let result: Result<ExitCode, CliError> = match &cli.command {
        Command::Check(args) => check::run(args),
        Command::Local(args) => local::run(args).map(|()| ExitCode::Ok).map_err(|e| CliError {
            code: ExitCode::from_api(e.code.exit_code()),
            message: format!("{}: {}", e.code.as_str(), e.message),
        }),
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {}", e.message);
            std::process::ExitCode::from(e.code as u8)
        }
    }
}
