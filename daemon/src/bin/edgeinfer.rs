//! `edgeinfer`: the command-line tool. `check` answers "will this model run here, on which
//! execution provider, how fast, and does it agree with the CPU?"; `local` runs a task
//! in-process; the other commands talk to a running edgeinferd over D-Bus (default) or MQTT.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use edgeinfer_daemon::api::ApiError;
use edgeinfer_daemon::check::{self, CheckArgs};
use edgeinfer_daemon::client::Remote;
use edgeinfer_daemon::exit::{CliError, ExitCode};
use edgeinfer_daemon::local::{self, LocalArgs};
use edgeinfer_daemon::logging;
use edgeinfer_daemon::remote::{Daemon, Target};
use edgeinfer_daemon::tasks::{
    ClassifyArgs, EmbedArgs, GalleryCommand, GenerateArgs, SegmentArgs, TaskCommand, print_event, print_response,
};

#[derive(Parser, Debug)]
#[command(name = "edgeinfer", version, about = "edgeinfer: on-device inference tools and client")]
struct Cli {
    /// Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: Command,
}

/// How to reach the daemon: D-Bus by default, MQTT with `--mqtt`.
#[derive(Args, Debug)]
struct RemoteArgs {
    /// D-Bus bus of the daemon: `system`, `session`, or a bus address.
    #[arg(long, global = true, env = "EDGEINFER_DBUS", default_value = "system")]
    bus: String,
    /// Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus.
    #[arg(long, global = true, env = "EDGEINFER_MQTT")]
    mqtt: Option<String>,
    /// MQTT node name (default: the only node online).
    #[arg(long, global = true, env = "EDGEINFER_NODE")]
    node: Option<String>,
    /// MQTT topic prefix.
    #[arg(long, global = true, default_value = "edgeinfer")]
    prefix: String,
    /// Seconds to wait for an answer.
    #[arg(long, global = true, default_value_t = 120)]
    timeout: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load an ONNX model on each backend / execution provider, time it, and compare outputs.
    Check(CheckArgs),
    /// Run a task in-process on a model directory (no daemon).
    Local(LocalArgs),
    /// Download a model folder from the Hugging Face Hub into the local cache (only the files the
    /// chosen precision variant needs; resumable; checked against the Hub's sha256).
    Pull(edgeinfer_daemon::hub::pull::PullArgs),
    /// List the daemon's models and their state.
    Models {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load a model now.
    Load {
        /// Model id.
        model: String,
    },
    /// Unload a model now.
    Unload {
        /// Model id.
        model: String,
    },
    /// Segment an image (SAM).
    Segment {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(flatten)]
        args: SegmentArgs,
    },
    /// Embed images (DINOv2).
    Embed {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(flatten)]
        args: EmbedArgs,
    },
    /// Classify an image against the gallery (DINOv2).
    Classify {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(flatten)]
        args: ClassifyArgs,
    },
    /// Gallery: add, remove, list (DINOv2).
    Gallery {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(subcommand)]
        command: GalleryCommand,
    },
    /// Reload a local edgeinferd's configuration and wait until it is applied (the unit's
    /// ExecReload=): exits non-zero when the new configuration is refused.
    Reload {
        /// The daemon's pid (`$MAINPID` in the unit).
        #[arg(long)]
        pid: u32,
        /// The daemon's state folder, where it reports reloads unless `$RUNTIME_DIRECTORY` is set.
        #[arg(long, default_value = "/var/lib/edgeinfer")]
        state_dir: std::path::PathBuf,
        /// Seconds to wait for the reload (models it adds or changes are loaded by then).
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
    /// Benchmarks against a running daemon.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Generate text (LLM), streamed.
    Generate {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(flatten)]
        args: GenerateArgs,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// MQTT request → reply overhead against the model call alone, and concurrency.
    Mqtt(edgeinfer_daemon::bench::BenchMqttArgs),
    /// D-Bus call → reply overhead against the model call alone, and a camera frame passed as a
    /// file descriptor vs as a byte array.
    Dbus(edgeinfer_daemon::bench::BenchDbusArgs),
}

fn api_error(e: ApiError) -> CliError {
    CliError { code: ExitCode::from_api(e.code.exit_code()), message: format!("{}: {}", e.code.as_str(), e.message) }
}

fn remote(cli: &Cli) -> Remote {
    Remote {
        url: cli.remote.mqtt.clone().unwrap_or_else(|| "mqtt://127.0.0.1:1883".into()),
        prefix: cli.remote.prefix.clone(),
        node: cli.remote.node.clone(),
        timeout: Duration::from_secs(cli.remote.timeout),
    }
}

fn target(cli: &Cli) -> Target {
    match cli.remote.mqtt {
        Some(_) => Target::Mqtt(remote(cli)),
        None => Target::Dbus { bus: cli.remote.bus.clone(), timeout: Duration::from_secs(cli.remote.timeout) },
    }
}

fn run_remote(cli: &Cli) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(e.to_string()))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async {
        let (model, task) = match &cli.command {
            Command::Bench(BenchCommand::Mqtt(args)) => {
                edgeinfer_daemon::bench::mqtt(args, &remote(cli)).await.map_err(api_error)?;
                return Ok(ExitCode::Ok);
            }
            Command::Bench(BenchCommand::Dbus(args)) => {
                edgeinfer_daemon::bench::dbus(args, &cli.remote.bus).await.map_err(api_error)?;
                return Ok(ExitCode::Ok);
            }
            Command::Models { json } => {
                let mut daemon = Daemon::connect(&target(cli)).await.map_err(api_error)?;
                let models = daemon.models().await.map_err(api_error)?;
                daemon.close().await;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&models).unwrap_or_default());
                } else {
                    for m in models {
                        println!(
                            "{:<16} {:<8} {:<10} {:<6} {:<9} {}{}{}",
                            m.id,
                            if m.family.is_empty() { "-" } else { &m.family },
                            m.state,
                            m.backend,
                            m.variant,
                            m.providers.join(","),
                            if m.graph.is_empty() { String::new() } else { format!("  {}", m.graph) },
                            m.error.map(|e| format!("  error: {e}")).unwrap_or_default(),
                        );
                    }
                }
                return Ok(ExitCode::Ok);
            }
            Command::Load { model } | Command::Unload { model } => {
                let load = matches!(cli.command, Command::Load { .. });
                let mut daemon = Daemon::connect(&target(cli)).await.map_err(api_error)?;
                let state = daemon.load(model, load).await.map_err(api_error)?;
                daemon.close().await;
                println!("{model}: {state}");
                return Ok(ExitCode::Ok);
            }
            Command::Segment { model, args } => (model, TaskCommand::Segment(args.clone())),
            Command::Embed { model, args } => (model, TaskCommand::Embed(args.clone())),
            Command::Classify { model, args } => (model, TaskCommand::Classify(args.clone())),
            Command::Gallery { model, command } => (model, TaskCommand::Gallery(command.clone())),
            Command::Generate { model, args } => (model, TaskCommand::Generate(args.clone())),
            Command::Check(_) | Command::Local(_) | Command::Pull(_) | Command::Reload { .. } => {
                return Ok(ExitCode::Ok);
            }
        };
        let json = task.json();
        let built = task.to_task().map_err(api_error)?;
        let mut daemon = Daemon::connect(&target(cli)).await.map_err(api_error)?;
        let response = daemon.task(model, &built, &mut |e| print_event(&e, json)).await.map_err(api_error);
        daemon.close().await;
        print_response(&task, &response?).map_err(api_error)?;
        Ok(ExitCode::Ok)
    })
}

fn reload(pid: u32, state_dir: &std::path::Path, wait: u64) -> Result<ExitCode, CliError> {
    let path = edgeinfer_daemon::reload::status_path(state_dir);
    let status = edgeinfer_daemon::reload::request(pid, &path, Duration::from_secs(wait))
        .map_err(|message| CliError { code: ExitCode::Unavailable, message })?;
    if !status.ok {
        return Err(CliError { code: ExitCode::Failure, message: status.message });
    }
    println!("reloaded: {}", status.message);
    Ok(ExitCode::Ok)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init_cli(cli.log.as_deref(), "warn");
    logging::quiet_panics();
    let result: Result<ExitCode, CliError> = match &cli.command {
        Command::Check(args) => check::run(args),
        Command::Local(args) => local::run(args).map(|()| ExitCode::Ok).map_err(api_error),
        Command::Pull(args) => edgeinfer_daemon::hub::pull::run(args)
            .map(|_| ExitCode::Ok)
            .map_err(|message| CliError { code: ExitCode::Failure, message }),
        Command::Reload { pid, state_dir, wait } => reload(*pid, state_dir, *wait),
        _ => run_remote(&cli),
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {}", e.message);
            std::process::ExitCode::from(e.code as u8)
        }
    }
}
