//! `edgeinfer bench mqtt`: what the MQTT API costs on top of the model call. Runs the same task
//! N times in-process (the model call alone, as the daemon's worker makes it) and N times as a
//! request → reply through the broker to a running edgeinferd, then C clients in parallel; prints
//! the overhead in ms and as a ratio, throughput, p99, and how many requests were refused busy.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use edgeinfer_onnx::BackendKind;

use crate::api::{ApiError, ErrorCode, ImageData, Task};
use crate::client::{Connection, Remote};
use crate::engine::{Engine, EngineOptions};

/// Arguments.
#[derive(Args, Debug, Clone)]
pub struct BenchMqttArgs {
    /// Model directory (for the in-process baseline; the daemon must serve the same one).
    #[arg(long)]
    pub model_dir: PathBuf,
    /// The daemon's id for that model.
    #[arg(long)]
    pub model: String,
    /// Image to embed.
    #[arg(long)]
    pub image: PathBuf,
    /// Backend of the in-process baseline (match the daemon's).
    #[arg(long, default_value = "tract")]
    pub backend: BackendKind,
    /// Threads of the in-process baseline.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Requests per measurement.
    #[arg(long, default_value_t = 30)]
    pub requests: usize,
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
    let task = Task::Embed { images: vec![ImageData::Encoded(image)], params: Default::default() };

    // The model call alone, as the worker makes it.
    let mut options = EngineOptions { backend: args.backend, ..EngineOptions::default() };
    options.session.intra_threads = args.threads;
    let engine = Engine::load(&args.model, &args.model_dir, None, &options, None)?;
    engine.execute(&task, None, &mut |_| {})?; // warm-up (plans, caches)
    let mut local = Vec::new();
    for _ in 0..args.requests {
        let t = Instant::now();
        engine.execute(&task, None, &mut |_| {})?;
        local.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(engine);

    // Request → reply over MQTT, one client, sequential.
    let mut conn = Connection::open(remote).await?;
    conn.task(&args.model, &task, &mut |_| {}).await?; // warm-up (load, plans)
    let mut over = Vec::new();
    for _ in 0..args.requests {
        let t = Instant::now();
        conn.task(&args.model, &task, &mut |_| {}).await?;
        over.push(t.elapsed().as_secs_f64() * 1e3);
    }
    conn.close().await;

    // C clients in parallel.
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (remote, task, model, n) = (remote.clone(), task.clone(), args.model.clone(), args.requests);
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
    println!("task: embed 1 image on '{}' ({} requests each)", args.model, args.requests);
    println!("{:<38} {:>10} {:>10} {:>10}", "", "p50 ms", "p90 ms", "p99 ms");
    println!(
        "{:<38} {:>10.2} {:>10.2} {:>10.2}",
        "model call alone (in-process)",
        l50,
        pct(local.clone(), 0.9),
        pct(local.clone(), 0.99)
    );
    println!(
        "{:<38} {:>10.2} {:>10.2} {:>10.2}",
        "request -> reply over MQTT",
        o50,
        pct(over.clone(), 0.9),
        pct(over.clone(), 0.99)
    );
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
