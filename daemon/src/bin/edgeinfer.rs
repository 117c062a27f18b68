//! `edgeinfer`: the command-line tool. `check` answers "will this model run here, on which
//! execution provider, how fast, and does it agree with the CPU?"; `local` runs a task
//! in-process; the other commands talk to a running edgeinferd over D-Bus (default) or MQTT.

use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use edgeinfer_daemon::api::{ApiError, GenerateParams, Response, Task};
use edgeinfer_daemon::cli::check::{self, CheckArgs};
use edgeinfer_daemon::cli::exit::{CliError, ExitCode};
use edgeinfer_daemon::cli::local::{self, LocalArgs};
use edgeinfer_daemon::cli::remote::{Daemon, Target};
use edgeinfer_daemon::cli::tasks::{
    ClassifyArgs, EmbedArgs, GalleryCommand, GenerateArgs, SegmentArgs, TaskCommand, print_event, print_response,
};
use edgeinfer_daemon::logging;
use edgeinfer_daemon::mqtt::client::Remote;
use edgeinfer_models::llama::Message;

#[derive(Parser, Debug)]
#[command(
    name = "edgeinfer",
    version,
    about = "edgeinfer: on-device inference tools and client",
    after_help = "Examples:\n  \
                  edgeinfer check model.onnx --ep cuda,cpu        will this model run here, and how fast?\n  \
                  edgeinfer pull onnx-community/dinov2-small      fetch a model from the Hugging Face Hub\n  \
                  edgeinfer local -m hf:onnx-community/dinov2-small embed photo.jpg   try it in-process\n  \
                  edgeinfer models                                 the daemon's models (D-Bus, system bus)\n  \
                  edgeinfer --mqtt mqtt://robot-1:1883 embed -m dino photo.jpg      through the broker"
)]
struct Cli {
    /// Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    command: Command,
}

/// How to reach the daemon: D-Bus by default, MQTT with `--mqtt`. Given before the command
/// (`edgeinfer --mqtt URL embed ...`) or after it (`edgeinfer embed --mqtt URL ...`); only the
/// commands that talk to the daemon take them.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Daemon connection")]
struct RemoteArgs {
    /// D-Bus bus of the daemon: `system` (default), `session`, or a bus address.
    #[arg(long, env = "EDGEINFER_DBUS")]
    bus: Option<String>,
    /// Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus.
    #[arg(long, env = "EDGEINFER_MQTT")]
    mqtt: Option<String>,
    /// MQTT node name (default: the only node online).
    #[arg(long, env = "EDGEINFER_NODE")]
    node: Option<String>,
    /// MQTT topic prefix (default: edgeinfer).
    #[arg(long)]
    prefix: Option<String>,
    /// Seconds to wait for an answer (default: 120).
    #[arg(long)]
    timeout: Option<u64>,
    /// Send the task to the fleet's shared queue over MQTT: any node of the group that serves
    /// the model answers (docs/fleet.md).
    #[arg(long)]
    fleet: bool,
}

impl RemoteArgs {
    /// These settings, each falling back to `outer`'s (the flags given before the command).
    fn or(&self, outer: &RemoteArgs) -> RemoteArgs {
        RemoteArgs {
            bus: self.bus.clone().or_else(|| outer.bus.clone()),
            mqtt: self.mqtt.clone().or_else(|| outer.mqtt.clone()),
            node: self.node.clone().or_else(|| outer.node.clone()),
            prefix: self.prefix.clone().or_else(|| outer.prefix.clone()),
            timeout: self.timeout.or(outer.timeout),
            fleet: self.fleet || outer.fleet,
        }
    }

    fn bus(&self) -> String {
        self.bus.clone().unwrap_or_else(|| "system".into())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(120))
    }
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
    #[command(after_help = "Examples:\n  edgeinfer models\n  edgeinfer models --json\n  \
                            edgeinfer --mqtt mqtt://robot-1:1883 models")]
    Models {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: RemoteArgs,
    },
    /// Every node seen on the MQTT broker: state, version, models, load, last seen.
    #[command(after_help = "Examples:\n  edgeinfer --mqtt mqtt://broker:1883 nodes\n  \
                            edgeinfer --mqtt mqtt://broker:1883 nodes --json")]
    Nodes {
        /// Print JSON (each node's retained status and stats documents).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: RemoteArgs,
    },
    /// The daemon's counters: uptime, memory, per-model requests, errors, latency.
    #[command(after_help = "Examples:\n  edgeinfer stats\n  \
                            edgeinfer stats --prometheus > /var/lib/node_exporter/textfile/edgeinfer.prom\n  \
                            edgeinfer --mqtt mqtt://broker:1883 --node robot-1 stats")]
    Stats {
        /// Print the Prometheus text exposition (for node_exporter's textfile collector)
        /// instead of JSON.
        #[arg(long)]
        prometheus: bool,
        #[command(flatten)]
        conn: RemoteArgs,
    },
    /// Load a model now.
    #[command(after_help = "Example:\n  edgeinfer load dino")]
    Load {
        /// Model id.
        model: String,
        #[command(flatten)]
        conn: RemoteArgs,
    },
    /// Unload a model now.
    #[command(after_help = "Example:\n  edgeinfer unload dino")]
    Unload {
        /// Model id.
        model: String,
        #[command(flatten)]
        conn: RemoteArgs,
    },
    /// Segment an image (SAM).
    #[command(
        after_help = "Examples:\n  edgeinfer segment -m sam photo.jpg --point 320,240 --best --png mask.png\n  edgeinfer segment -m sam photo.jpg --box 40,15,150,110 --json"
    )]
    Segment {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(flatten)]
        args: SegmentArgs,
        #[command(flatten)]
        conn: RemoteArgs,
    },
    /// Embed images (DINOv2).
    #[command(
        after_help = "Examples:\n  edgeinfer embed -m dino a.jpg b.jpg --normalize\n  edgeinfer embed -m dino photo.jpg --pooling mean --json"
    )]
    Embed {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(flatten)]
        args: EmbedArgs,
        #[command(flatten)]
        conn: RemoteArgs,
    },
    /// Classify an image against the gallery (DINOv2).
    #[command(after_help = "Examples:\n  edgeinfer classify -m dino photo.jpg -k 3")]
    Classify {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(flatten)]
        args: ClassifyArgs,
        #[command(flatten)]
        conn: RemoteArgs,
    },
    /// Gallery: add, remove, list (DINOv2).
    #[command(after_help = "Examples:\n  edgeinfer gallery -m dino add --label mug mug.jpg\n  \
                            edgeinfer gallery -m dino list\n  edgeinfer gallery -m dino remove --label mug")]
    Gallery {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(flatten)]
        conn: RemoteArgs,
        #[command(subcommand)]
        command: GalleryCommand,
    },
    /// Reload a local edgeinferd's configuration and wait until it is applied (the unit's
    /// ExecReload=): exits non-zero when the new configuration is refused.
    #[command(after_help = "Example (what systemctl reload edgeinferd runs):\n  \
                            edgeinfer reload --pid $MAINPID --wait 280")]
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
    #[command(after_help = "Examples:\n  edgeinfer bench mqtt --help\n  edgeinfer bench dbus --help")]
    Bench {
        #[command(flatten)]
        conn: RemoteArgs,
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Generate text (LLM), streamed.
    #[command(after_help = "Examples:\n  edgeinfer generate -m llm \"Once upon a time\" --max-new-tokens 64\n  \
                            edgeinfer generate -m llm --chat --system \"Be brief.\" \"What is ONNX?\"\n  \
                            git diff | edgeinfer generate -m llm --chat -          (the prompt from stdin)")]
    Generate {
        /// Model id.
        #[arg(long, short)]
        model: String,
        #[command(flatten)]
        args: GenerateArgs,
        #[command(flatten)]
        conn: RemoteArgs,
    },
    /// Shell completions on stdout (packaged ones: daemon/assets/completions/).
    #[command(
        after_help = "Examples:\n  edgeinfer completions bash > ~/.local/share/bash-completion/completions/edgeinfer\n  \
                            edgeinfer completions zsh > ~/.zfunc/_edgeinfer"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Man pages of edgeinfer (one per command) and edgeinferd, written into a folder.
    #[command(after_help = "Example:\n  edgeinfer manpages /usr/local/share/man/man1")]
    Manpages {
        /// The folder.
        dir: std::path::PathBuf,
    },
    /// Chat with an LLM interactively: each line you type is a user message, the answer streams
    /// back, and the conversation is kept (Ctrl-D or an empty line ends it).
    #[command(after_help = "Example:\n  edgeinfer chat -m llm --system \"You are a robot's voice. Be brief.\"")]
    Chat {
        /// Model id.
        #[arg(long, short)]
        model: String,
        /// A system message that starts the conversation.
        #[arg(long)]
        system: Option<String>,
        /// Most new tokens per answer.
        #[arg(long)]
        max_new_tokens: Option<usize>,
        /// Sampling temperature (0 = greedy).
        #[arg(long)]
        temperature: Option<f32>,
        #[command(flatten)]
        conn: RemoteArgs,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// MQTT request → reply overhead against the model call alone, and concurrency.
    Mqtt(edgeinfer_daemon::cli::bench::BenchMqttArgs),
    /// D-Bus call → reply overhead against the model call alone, and a camera frame passed as a
    /// file descriptor vs as a byte array.
    Dbus(edgeinfer_daemon::cli::bench::BenchDbusArgs),
}

fn api_error(e: ApiError) -> CliError {
    CliError { code: ExitCode::from_api(e.code.exit_code()), message: format!("{}: {}", e.code.as_str(), e.message) }
}

/// The connection settings of the command: its own flags, then those given before it.
fn conn(cli: &Cli) -> RemoteArgs {
    let own = match &cli.command {
        Command::Models { conn, .. }
        | Command::Nodes { conn, .. }
        | Command::Stats { conn, .. }
        | Command::Load { conn, .. }
        | Command::Unload { conn, .. }
        | Command::Segment { conn, .. }
        | Command::Embed { conn, .. }
        | Command::Classify { conn, .. }
        | Command::Gallery { conn, .. }
        | Command::Bench { conn, .. }
        | Command::Generate { conn, .. }
        | Command::Chat { conn, .. } => conn.clone(),
        Command::Check(_)
        | Command::Local(_)
        | Command::Pull(_)
        | Command::Reload { .. }
        | Command::Completions { .. }
        | Command::Manpages { .. } => RemoteArgs::default(),
    };
    own.or(&cli.remote)
}

fn remote(conn: &RemoteArgs) -> Remote {
    Remote {
        url: conn.mqtt.clone().unwrap_or_else(|| "mqtt://127.0.0.1:1883".into()),
        prefix: conn.prefix.clone().unwrap_or_else(|| "edgeinfer".into()),
        node: conn.node.clone(),
        timeout: conn.timeout(),
        fleet: conn.fleet,
    }
}

fn target(conn: &RemoteArgs) -> Target {
    if conn.mqtt.is_some() || conn.fleet {
        Target::Mqtt(remote(conn))
    } else {
        Target::Dbus { bus: conn.bus(), timeout: conn.timeout() }
    }
}

fn run_remote(cli: &Cli) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(e.to_string()))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let conn = conn(cli);
    runtime.block_on(async {
        let (model, task) = match &cli.command {
            Command::Bench { command: BenchCommand::Mqtt(args), .. } => {
                edgeinfer_daemon::cli::bench::mqtt(args, &remote(&conn)).await.map_err(api_error)?;
                return Ok(ExitCode::Ok);
            }
            Command::Bench { command: BenchCommand::Dbus(args), .. } => {
                edgeinfer_daemon::cli::bench::dbus(args, &conn.bus()).await.map_err(api_error)?;
                return Ok(ExitCode::Ok);
            }
            Command::Nodes { json, .. } => {
                let nodes = edgeinfer_daemon::mqtt::client::nodes(&remote(&conn)).await.map_err(api_error)?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&nodes).unwrap_or_default());
                } else {
                    print!("{}", edgeinfer_daemon::cli::nodes::table(&nodes, std::time::SystemTime::now()));
                }
                return Ok(ExitCode::Ok);
            }
            Command::Stats { prometheus, .. } => {
                let mut daemon = Daemon::connect(&target(&conn)).await.map_err(api_error)?;
                let text = daemon.stats(*prometheus).await.map_err(api_error)?;
                daemon.close().await;
                print!("{text}");
                return Ok(ExitCode::Ok);
            }
            Command::Models { json, .. } => {
                let mut daemon = Daemon::connect(&target(&conn)).await.map_err(api_error)?;
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
            Command::Load { model, .. } | Command::Unload { model, .. } => {
                let load = matches!(cli.command, Command::Load { .. });
                let mut daemon = Daemon::connect(&target(&conn)).await.map_err(api_error)?;
                let state = daemon.load(model, load).await.map_err(api_error)?;
                daemon.close().await;
                println!("{model}: {state}");
                return Ok(ExitCode::Ok);
            }
            Command::Chat { model, system, max_new_tokens, temperature, .. } => {
                let mut daemon = Daemon::connect(&target(&conn)).await.map_err(api_error)?;
                let chatted = chat(&mut daemon, model, system.as_deref(), *max_new_tokens, *temperature).await;
                daemon.close().await;
                chatted.map_err(api_error)?;
                return Ok(ExitCode::Ok);
            }
            Command::Segment { model, args, .. } => (model, TaskCommand::Segment(args.clone())),
            Command::Embed { model, args, .. } => (model, TaskCommand::Embed(args.clone())),
            Command::Classify { model, args, .. } => (model, TaskCommand::Classify(args.clone())),
            Command::Gallery { model, command, .. } => (model, TaskCommand::Gallery(command.clone())),
            Command::Generate { model, args, .. } => (model, TaskCommand::Generate(args.clone())),
            Command::Check(_)
            | Command::Local(_)
            | Command::Pull(_)
            | Command::Reload { .. }
            | Command::Completions { .. }
            | Command::Manpages { .. } => {
                return Ok(ExitCode::Ok);
            }
        };
        let json = task.json();
        let built = task.to_task().map_err(api_error)?;
        let mut daemon = Daemon::connect(&target(&conn)).await.map_err(api_error)?;
        let response = daemon.task(model, &built, &mut |e| print_event(&e, json)).await.map_err(api_error);
        daemon.close().await;
        print_response(&task, &response?).map_err(api_error)?;
        Ok(ExitCode::Ok)
    })
}

/// `edgeinfer chat`: one user message per line read, the answer streamed, the conversation kept.
async fn chat(
    daemon: &mut Daemon,
    model: &str,
    system: Option<&str>,
    max_new_tokens: Option<usize>,
    temperature: Option<f32>,
) -> Result<(), ApiError> {
    use std::io::{BufRead, IsTerminal, Write};
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(Message { role: "system".into(), content: s.to_string() });
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("chatting with '{model}': type a message, an empty line or Ctrl-D ends the conversation");
    }
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let line = match lines.next() {
            Some(Ok(l)) if !l.trim().is_empty() => l,
            Some(Err(e)) => return Err(ApiError::bad_input(format!("cannot read stdin: {e}"))),
            _ => return Ok(()),
        };
        messages.push(Message { role: "user".into(), content: line });
        let task = Task::Generate(GenerateParams {
            messages: Some(messages.clone()),
            max_new_tokens,
            temperature,
            stream: Some(true),
            ..GenerateParams::default()
        });
        let answer = daemon.task(model, &task, &mut |e| print_event(&e, false)).await?;
        println!();
        let Response::Generation(done) = answer else {
            return Err(ApiError::internal("the daemon answered a chat turn with something other than text"));
        };
        messages.push(Message { role: "assistant".into(), content: done.text });
    }
}

/// `edgeinfer.1`, `edgeinfer-<command>.1` for each command (and nested ones; not `help`),
/// `edgeinferd.1`.
fn manpages(dir: &std::path::Path) -> Result<ExitCode, CliError> {
    fn write(cmd: &clap::Command, prefix: Option<&str>, dir: &std::path::Path) -> std::io::Result<()> {
        let name = match prefix {
            Some(p) => format!("{p}-{}", cmd.get_name()),
            None => cmd.get_name().to_string(),
        };
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone().name(name.clone())).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help" && !s.is_hide_set()) {
            write(sub, Some(&name), dir)?;
        }
        Ok(())
    }
    let io = |e: std::io::Error| CliError::internal(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    for mut cmd in [Cli::command(), edgeinfer_daemon::cli::daemon_args::Args::command()] {
        cmd.build();
        write(&cmd, None, dir).map_err(io)?;
    }
    Ok(ExitCode::Ok)
}

fn reload(pid: u32, state_dir: &std::path::Path, wait: u64) -> Result<ExitCode, CliError> {
    let path = edgeinfer_daemon::server::reload::status_path(state_dir);
    let status = edgeinfer_daemon::server::reload::request(pid, &path, Duration::from_secs(wait))
        .map_err(|message| CliError { code: ExitCode::Unavailable, message })?;
    if !status.ok {
        return Err(CliError { code: ExitCode::Failure, message: status.message });
    }
    println!("reloaded: {}", status.message);
    Ok(ExitCode::Ok)
}

fn main() -> std::process::ExitCode {
    // Output into a closed pipe (`edgeinfer ... | head`) ends the process quietly, as for any
    // Unix tool, instead of a panic in println!.
    sigpipe::reset();
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
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "edgeinfer", &mut std::io::stdout());
            Ok(ExitCode::Ok)
        }
        Command::Manpages { dir } => manpages(dir),
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
