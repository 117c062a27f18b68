//! `edgeinfer bench mqtt|dbus`: what each transport costs on top of the model call. Both run the
//! same task N times in-process (the model call alone, as the daemon's worker makes it) and N
//! times through a running edgeinferd. `mqtt`: request → reply through the broker, then C clients
//! in parallel (throughput, p99, busy refusals). `dbus`: a camera frame passed as a sealed memfd
//! vs as a byte array, and each transport alone (a mis-sized frame the daemon refuses after
//! receiving it).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use edgeinfer_onnx::BackendKind;

use crate::api::{ApiError, ErrorCode, ImageData, Task};
use crate::mqtt::client::{Connection, Remote};
use crate::server::engine::{Engine, EngineOptions};

/// What both benchmarks share: the model, and how to run the in-process baseline.
#[derive(Args, Debug, Clone)]
pub struct Baseline {
    /// Model directory (for the in-process baseline; the daemon must serve the same one).
    #[arg(long)]
    pub model_dir: PathBuf,
    /// The daemon's id for that model.
    #[arg(long)]
    pub model: String,
    /// Backend of the in-process baseline (match the daemon's).
    #[arg(long, default_value = "tract")]
    pub backend: BackendKind,
    /// Threads of the in-process baseline.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Requests per measurement.
    #[arg(long, default_value_t = 30)]
    pub requests: usize,
}

impl Baseline {
    /// Loads the model in-process, as the daemon's worker does.
    fn load(&self) -> Result<Engine, ApiError> {
        let mut options = EngineOptions { backend: self.backend, ..EngineOptions::default() };
        options.session.intra_threads = self.threads;
        Engine::load(&self.model, &self.model_dir, None, &options, None)
    }
}

/// Arguments of `bench mqtt`.
#[derive(Args, Debug, Clone)]
pub struct BenchMqttArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub baseline: Baseline,
    /// Image to embed.
    #[arg(long)]
    pub image: PathBuf,
    /// Parallel clients for the concurrency run.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

fn pct(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Runs the benchmark and prints the table.
pub async fn mqtt(args: &BenchMqttArgs, remote: &Remote) -> Result<(), ApiError> {
    let image =
        std::fs::read(&args.image).map_err(|e| ApiError::bad_input(format!("{}: {e}", args.image.display())))?;
    let task = Task::Embed { images: vec![ImageData::Encoded(image.into())], params: Default::default() };

    // The model call alone, as the worker makes it.
    let engine = args.baseline.load()?;
    engine.execute(&task, None, &mut |_| {})?; // warm-up (plans, caches)
    let mut local = Vec::new();
    for _ in 0..args.baseline.requests {
        let t = Instant::now();
        engine.execute(&task, None, &mut |_| {})?;
        local.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(engine);

    // Request → reply over MQTT, one client, sequential.
    let mut conn = Connection::open(remote).await?;
    conn.task(&args.baseline.model, &task, &mut |_| {}).await?; // warm-up (load, plans)
    let mut over = Vec::new();
    for _ in 0..args.baseline.requests {
        let t = Instant::now();
        conn.task(&args.baseline.model, &task, &mut |_| {}).await?;
        over.push(t.elapsed().as_secs_f64() * 1e3);
    }
    conn.close().await;

    // C clients in parallel.
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (remote, task, model, n) =
            (remote.clone(), task.clone(), args.baseline.model.clone(), args.baseline.requests);
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut busy = 0usize;
            let mut conn = Connection::open(&remote).await?;
            for _ in 0..n {
                let t = Instant::now();
                match conn.task(&model, &task, &mut |_| {}).await {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(e) if e.code == ErrorCode::Busy => busy += 1,
                    Err(e) => return Err(e),
                }
            }
            conn.close().await;
            Ok::<_, ApiError>((lat, busy))
        }));
    }
    let mut all = Vec::new();
    let mut busy = 0;
    for h in handles {
        let (lat, b) = h.await.map_err(|e| ApiError::internal(e.to_string()))??;
        all.extend(lat);
        busy += b;
    }
    let wall = started.elapsed();

    let (l50, o50) = (pct(local.clone(), 0.5), pct(over.clone(), 0.5));
    println!("task: embed 1 image on '{}' ({} requests each)", args.baseline.model, args.baseline.requests);
    header();
    row("model call alone (in-process)", &local);
    row("request -> reply over MQTT", &over);
    println!("overhead: {:.2} ms per request, ratio {:.3} (target <= 1 ms / <= 1.05x)", o50 - l50, o50 / l50.max(1e-9));
    println!(
        "{} clients in parallel: {} answered in {:.2} s = {:.1} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} refused busy",
        args.concurrency,
        all.len(),
        wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64().max(1e-9),
        pct(all.clone(), 0.5),
        pct(all, 0.99),
        busy
    );
    Ok(())
}

/// Arguments of `bench dbus`.
#[derive(Args, Debug, Clone)]
pub struct BenchDbusArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub baseline: Baseline,
    /// Camera frame size, WIDTHxHEIGHT (raw RGB8).
    #[arg(long, default_value = "1920x1080")]
    pub frame: String,
}

/// A deterministic test pattern (gradients and a checkerboard), RGB8.
fn test_frame(width: u32, height: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        for x in 0..width {
            let check = if ((x / 64) + (y / 64)) % 2 == 0 { 40 } else { 0 };
            data.push(((x * 255 / width.max(1)) as u8).saturating_add(check));
            data.push((y * 255 / height.max(1)) as u8);
            data.push((((x + y) / 4) % 256) as u8);
        }
    }
    data
}

fn header() {
    println!("{:<44} {:>10} {:>10} {:>10}", "", "p50 ms", "p90 ms", "p99 ms");
}

fn row(name: &str, v: &[f64]) {
    println!(
        "{:<44} {:>10.3} {:>10.3} {:>10.3}",
        name,
        pct(v.to_vec(), 0.5),
        pct(v.to_vec(), 0.9),
        pct(v.to_vec(), 0.99)
    );
}

/// Runs `bench dbus` and prints the table.
pub async fn dbus(args: &BenchDbusArgs, bus: &str) -> Result<(), ApiError> {
    use crate::dbus::proxy::Embedder1Proxy;
    use std::collections::HashMap;
    use zbus::zvariant::{Fd, Value};

    let (w, h) = args
        .frame
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|&(w, h)| w >= 2 && h >= 1)
        .ok_or_else(|| ApiError::bad_input(format!("--frame {}: expected WIDTHxHEIGHT (at least 2x1)", args.frame)))?;
    let frame = bytes::Bytes::from(test_frame(w, h));
    let task = Task::Embed {
        images: vec![ImageData::Rgb8 { width: w, height: h, data: frame.clone() }],
        params: Default::default(),
    };
    let n = args.baseline.requests.max(1);

    // The model call alone, as the worker makes it.
    let engine = args.baseline.load()?;
    engine.execute(&task, None, &mut |_| {})?;
    let mut local = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        engine.execute(&task, None, &mut |_| {})?;
        local.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(engine);

    let client = crate::dbus::client::DbusClient::connect(bus, std::time::Duration::from_secs(300)).await?;
    let embedder: Embedder1Proxy = zbus::proxy::Builder::new(client.connection())
        .destination(crate::dbus::NAME)
        .and_then(|b| b.path(crate::dbus::ROOT))
        .map_err(crate::dbus::error::to_api_error)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(crate::dbus::error::to_api_error)?;
    let opts: Vec<(&str, Value<'static>)> =
        vec![("format", Value::from("rgb8")), ("width", Value::U32(w)), ("height", Value::U32(h))];
    let dict = || opts.iter().map(|(k, v)| (*k, v)).collect::<HashMap<&str, &Value<'static>>>();
    let api = crate::dbus::error::to_api_error;

    // What a client pays to put a frame it holds in ordinary memory into a sealed memfd (a camera
    // pipeline that captures into shared memory does not pay it).
    let mut memfd_ms = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let fd = crate::frame::sealed_memfd("bench", &frame).map_err(|e| ApiError::internal(e.to_string()))?;
        memfd_ms.push(t.elapsed().as_secs_f64() * 1e3);
        drop(fd);
    }
    let fd = crate::frame::sealed_memfd("bench-frame", &frame).map_err(|e| ApiError::internal(e.to_string()))?;
    embedder.embed_fd(&args.baseline.model, Fd::from(&fd), dict()).await.map_err(api)?; // warm-up
    let mut via_fd = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        embedder.embed_fd(&args.baseline.model, Fd::from(&fd), dict()).await.map_err(api)?;
        via_fd.push(t.elapsed().as_secs_f64() * 1e3);
    }
    embedder.embed(&args.baseline.model, &frame, dict()).await.map_err(api)?;
    let mut via_bytes = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        embedder.embed(&args.baseline.model, &frame, dict()).await.map_err(api)?;
        via_bytes.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // The transport alone: the same frames declared one pixel narrower, so the daemon receives
    // (maps or unmarshals) the whole frame, then refuses it before any model work.
    let wrong: Vec<(&str, Value<'static>)> =
        vec![("format", Value::from("rgb8")), ("width", Value::U32(w - 1)), ("height", Value::U32(h))];
    let wrong_dict = || wrong.iter().map(|(k, v)| (*k, v)).collect::<HashMap<&str, &Value<'static>>>();
    let expect_refusal = |r: Result<Vec<f64>, zbus::Error>| match r {
        Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.edgeinfer.Error.BadInput" => Ok(()),
        other => Err(ApiError::internal(format!("expected BadInput for a mis-sized frame, got {other:?}"))),
    };
    let mut fd_only = Vec::new();
    let mut bytes_only = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        expect_refusal(embedder.embed_fd(&args.baseline.model, Fd::from(&fd), wrong_dict()).await)?;
        fd_only.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        expect_refusal(embedder.embed(&args.baseline.model, &frame, wrong_dict()).await)?;
        bytes_only.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // The floor: a D-Bus round trip through the bus daemon with no payload at all.
    let peer = zbus::fdo::PeerProxy::builder(client.connection())
        .destination(crate::dbus::NAME)
        .and_then(|b| b.path(crate::dbus::ROOT))
        .map_err(api)?
        .build()
        .await
        .map_err(api)?;
    let mut ping = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        peer.ping().await.map_err(|e| ApiError::internal(e.to_string()))?;
        ping.push(t.elapsed().as_secs_f64() * 1e3);
    }

    let l50 = pct(local.clone(), 0.5);
    println!(
        "task: embed one {w}x{h} RGB8 frame ({:.1} MB) on '{}', {n} requests each",
        frame.len() as f64 / 1e6,
        args.baseline.model
    );
    header();
    row("model call alone (in-process)", &local);
    row("D-Bus EmbedFd (sealed memfd, mapped)", &via_fd);
    row("D-Bus Embed (byte array)", &via_bytes);
    row("client: copy the frame into a sealed memfd", &memfd_ms);
    row("D-Bus round trip, no payload (Peer.Ping)", &ping);
    row("transport only, frame as fd (call->refusal)", &fd_only);
    row("transport only, frame as bytes (call->refusal)", &bytes_only);
    let (f50, b50) = (pct(via_fd, 0.5), pct(via_bytes, 0.5));
    println!("call -> reply overhead, frame as fd:    {:>8.3} ms  (ratio {:.3})", f50 - l50, f50 / l50.max(1e-9));
    println!("call -> reply overhead, frame as bytes: {:>8.3} ms  (ratio {:.3})", b50 - l50, b50 / l50.max(1e-9));
    Ok(())
}
