//! The daemon over MQTT, end to end: real Mosquitto, real edgeinferd, real clients (rumqttc and
//! the mosquitto_pub/mosquitto_sub tools). Answers are checked against the PyTorch references.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

#[test]
fn status_and_model_state_are_retained_and_readiness_waits_for_preloads() {
    let broker = Mosquitto::start();
    let daemon = Daemon::start(&config(&broker.url(), "status", ""));
    // READY=1 came after the preloaded model was loaded.
    let log = daemon.log();
    let loaded = log.find("model loaded").expect("sam preloaded");
    assert!(
        daemon.notifications.iter().any(|n| n.contains("READY=1") && n.contains("serving 3 models (1 loaded)")),
        "{:?}",
        daemon.notifications
    );
    assert!(loaded < log.find("serving 3 models").unwrap());
    let mut c = Client::connect(broker.port);
    let status = c.wait_message("edgeinfer/status/status", Duration::from_secs(10), |v| v["state"] == "online");
    assert_eq!(status["models"].as_array().unwrap().len(), 3);
    let sam = c.wait_message("edgeinfer/status/models/sam/state", Duration::from_secs(10), |v| v["state"] == "loaded");
    assert_eq!(sam["providers"][0], "tract");
    let llm = c.wait_message("edgeinfer/status/models/llm/state", Duration::from_secs(10), |_| true);
    assert_eq!(llm["state"], "unloaded");
    let stats = c.wait_message("edgeinfer/status/stats", Duration::from_secs(10), |v| v["models"]["sam"].is_object());
    assert!(stats["rss_mb"].as_f64().unwrap() > 1.0);
}

#[test]
fn every_task_answers_on_the_response_topic_with_the_reference_results() {
    let broker = Mosquitto::start();
    let daemon = Daemon::start(&config(&broker.url(), "tasks", ""));
    let mut c = Client::connect(broker.port);
    let f = fixtures();
    // Segment: the same RLEs pycocotools wrote for SamPredictor's masks.
    let req = json!({"image": photo_b64(&f.join("sam/photo.png")), "box": {"x0": 40, "y0": 15, "x1": 150, "y1": 110}});
    let r = c.call(&topic(&daemon, "sam", "segment"), req.to_string());
    assert_eq!(r["result"]["kind"], "segmentation", "{r}");
    let reference: Vec<Value> =
        serde_json::from_slice(&std::fs::read(f.join("sam/e2e/box.rle.json")).unwrap()).unwrap();
    let masks = r["result"]["masks"].as_array().unwrap();
    assert_eq!(masks.len(), 3);
    for (m, want) in masks.iter().zip(&reference) {
        assert_eq!(&m["rle"], want);
    }
    // Same image again by hash: served from the embedding cache.
    let hash = r["result"]["image_hash"].as_str().unwrap();
    let again = c.call(
        &topic(&daemon, "sam", "segment"),
        json!({"image": {"cached": hash}, "points": [{"x": 100, "y": 60}], "best_only": true}).to_string(),
    );
    assert_eq!(again["result"]["cache_hit"], true, "{again}");
    assert_eq!(again["result"]["masks"].as_array().unwrap().len(), 1);
    // Refinement with a previous mask.
    let mask_id = again["result"]["masks"][0]["mask_id"].as_str().unwrap();
    let refined = c.call(
        &topic(&daemon, "sam", "segment"),
        json!({"image": {"cached": hash}, "points": [{"x": 120, "y": 80}], "mask_input": mask_id}).to_string(),
    );
    assert_eq!(refined["result"]["kind"], "segmentation", "{refined}");

    // Embed, gallery, classify.
    let chelsea = photo_b64(&f.join("photos/chelsea.png"));
    let coffee = photo_b64(&f.join("photos/coffee.png"));
    let e =
        c.call(&topic(&daemon, "dino", "embed"), json!({"images": [chelsea, coffee], "normalize": true}).to_string());
    assert_eq!(e["result"]["dim"], 48, "{e}");
    for (label, img) in [("cat", &chelsea), ("mug", &coffee)] {
        let r = c.call(&topic(&daemon, "dino", "gallery/add"), json!({"label": label, "image": img}).to_string());
        assert_eq!(r["result"]["kind"], "gallery_added", "{r}");
    }
    let r = c.call(&topic(&daemon, "dino", "classify"), json!({"image": coffee, "k": 2}).to_string());
    assert_eq!(r["result"]["matches"][0]["label"], "mug", "{r}");
    let r = c.call(&topic(&daemon, "dino", "gallery/list"), "{}");
    assert_eq!(r["result"]["labels"], json!([["cat", 1], ["mug", 1]]));

    // Generate: streamed deltas in order, then the final text and usage; equal to HF greedy.
    let reference: Value =
        serde_json::from_slice(&std::fs::read(f.join("llama/golden/reference.json")).unwrap()).unwrap();
    let case = &reference["generate"][0];
    let corr = c.send(
        &topic(&daemon, "llm", "generate"),
        json!({"prompt": case["prompt"], "max_new_tokens": 40}).to_string(),
        &[],
    );
    let replies = c.replies(std::slice::from_ref(&corr), Duration::from_secs(60));
    let (deltas, last) = replies.split_at(replies.len() - 1);
    let seqs: Vec<u64> = deltas.iter().map(|(_, v)| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..deltas.len() as u64).collect::<Vec<_>>());
    let text: String = deltas.iter().map(|(_, v)| v["delta"].as_str().unwrap()).collect();
    let done = &last[0].1["result"];
    assert_eq!(done["text"].as_str().unwrap(), text);
    assert_eq!(done["token_ids"], case["greedy_new_ids"]);
    assert_eq!(done["usage"]["generated_tokens"], 40);
    drop(daemon);
}

#[test]
fn mqtt_311_clients_use_reply_to_and_id_and_binary_payloads_work() {
    let broker = Mosquitto::start();
    let daemon = Daemon::start(&config(&broker.url(), "v311", ""));
    both_protocol_versions_are_served(&daemon, broker.port);
}

#[test]
fn the_embedded_broker_serves_mqtt_311_and_5_clients_on_one_port() {
    // The demo's default: no broker running, the daemon starts its own on the configured port.
    let port = free_port();
    let cfg = config(&format!("mqtt://127.0.0.1:{port}"), "embedded", "")
        .replace("[mqtt]\n", "[mqtt]\nembedded_broker = true\n");
    let daemon = Daemon::start(&cfg);
    assert!(daemon.log().contains("embedded MQTT broker listening"), "{}", daemon.log());
    // Plain `mosquitto_sub` (MQTT 3.1.1) gets the retained status, which the daemon published
    // with MQTT 5 properties.
    let out = Command::new("mosquitto_sub")
        .args(["-p", &port.to_string(), "-t", "edgeinfer/+/status", "-C", "1", "-W", "10"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "online", "{status}");
    both_protocol_versions_are_served(&daemon, port);
}

/// mosquitto_sub in MQTT 3.1.1 mode gets the answers to a 3.1.1 request (`reply_to` + `id` in
/// the JSON) and to an MQTT 5 one (binary payload, parameters in a user property).
fn both_protocol_versions_are_served(daemon: &Daemon, port: u16) {
    let port = port.to_string();
    let reply = "edgeinfer/replies/v311";
    // mosquitto_sub also subscribes to a retained probe: seeing it proves the subscription is
    // in place before any request is sent. Then it waits for the 2 answers.
    let probe = "v311/probe";
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", probe, "-m", "probe", "-r", "-q", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-t", reply, "-t", probe, "-C", "3", "-W", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(sub.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "probe");
    let photo = fixtures().join("sam/photo.png");
    let req = json!({"reply_to": reply, "id": "one", "image": photo_b64(&photo), "points": [{"x": 100, "y": 60}], "mask_format": "none"});
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv311",
            "-q",
            "1",
            "-t",
            &topic(daemon, "sam", "segment"),
            "-m",
            &req.to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // Binary JPEG/PNG payload with JSON parameters in an MQTT 5 user property.
    let params = json!({"reply_to": reply, "id": "two", "box": {"x0": 40, "y0": 15, "x1": 150, "y1": 110}, "mask_format": "none"}).to_string();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1", "-t", &topic(daemon, "sam", "segment")])
        .args(["-D", "publish", "user-property", "params", &params, "-f"])
        .arg(&photo)
        .status()
        .unwrap();
    assert!(status.success());
    let lines: Vec<Value> = lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    assert!(sub.wait().unwrap().success());
    assert_eq!(lines.len(), 2, "{lines:?}");
    let by_id = |id: &str| lines.iter().find(|v| v["id"] == id).unwrap_or_else(|| panic!("no answer {id}: {lines:?}"));
    assert_eq!(by_id("one")["result"]["masks"].as_array().map(Vec::len), Some(3), "{lines:?}");
    assert_eq!(by_id("two")["result"]["width"], 170);
}

#[test]
fn bad_requests_get_structured_errors_and_the_daemon_keeps_serving() {
    let broker = Mosquitto::start();
    let mut cfg = config(&broker.url(), "bad", "");
    // Tight limits to exercise them.
    cfg = cfg.replace(
        "id = \"sam\"\n",
        "id = \"sam\"\nmax_points = 4\nimage_limits = { max_bytes = 200000, max_pixels = 30000 }\n",
    );
    cfg = cfg.replace("id = \"llm\"\n", "id = \"llm\"\nmax_prompt_tokens = 20\nmax_new_tokens = 50\n");
    let daemon = Daemon::start(&cfg);
    let mut c = Client::connect(broker.port);
    let f = fixtures();
    let photo = std::fs::read(f.join("sam/photo.png")).unwrap();
    let b64 = |b: &[u8]| edgeinfer_daemon::api::b64::encode(b);
    let big = {
        let img = image::RgbImage::from_pixel(200, 200, image::Rgb([1, 2, 3]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    };
    let cases: Vec<(String, Vec<u8>, &str, &str)> = vec![
        (topic(&daemon, "sam", "segment"), b"{not json".to_vec(), "bad_input", "malformed JSON"),
        (topic(&daemon, "nope", "segment"), b"{}".to_vec(), "unknown_model", "no model 'nope'"),
        (topic(&daemon, "sam", "fly"), b"{}".to_vec(), "bad_input", "unknown task 'fly'"),
        (topic(&daemon, "sam", "segment"), json!({"image": b64(&photo[..photo.len() / 2]), "points": [{"x": 1, "y": 1}]}).to_string().into_bytes(), "bad_input", "cannot decode image"),
        (topic(&daemon, "sam", "segment"), json!({"image": b64(b"\xff\xd8\xff\xe0 not a jpeg"), "points": [{"x": 1, "y": 1}]}).to_string().into_bytes(), "bad_input", "cannot decode image"),
        (topic(&daemon, "sam", "segment"), json!({"image": b64(&big), "points": [{"x": 1, "y": 1}]}).to_string().into_bytes(), "too_large", "over the limit of 30000 pixels"),
        (topic(&daemon, "sam", "segment"), json!({"image": b64(&vec![0u8; 300_000]), "points": [{"x": 1, "y": 1}]}).to_string().into_bytes(), "too_large", "over the limit of 200000 bytes"),
        (topic(&daemon, "sam", "segment"), json!({"image": b64(&photo), "points": [{"x": 500, "y": 1}]}).to_string().into_bytes(), "bad_input", "outside the 170x120 image"),
        (topic(&daemon, "sam", "segment"), json!({"image": b64(&photo), "points": [{"x": 1, "y": 1}, {"x": 2, "y": 2}, {"x": 3, "y": 3}, {"x": 4, "y": 4}, {"x": 5, "y": 5}]}).to_string().into_bytes(), "too_large", "the limit is 4"),
        (topic(&daemon, "sam", "segment"), json!({"image": {"cached": "0000"}, "points": [{"x": 1, "y": 1}]}).to_string().into_bytes(), "bad_input", "no cached image"),
        (topic(&daemon, "llm", "generate"), json!({"prompt": "robot ".repeat(100)}).to_string().into_bytes(), "too_large", "the limit is 20"),
        (topic(&daemon, "llm", "generate"), json!({"prompt": "hi", "max_new_tokens": 500}).to_string().into_bytes(), "too_large", "limit of 50"),
        (topic(&daemon, "llm", "generate"), json!({}).to_string().into_bytes(), "bad_input", "give a 'prompt' or 'messages'"),
        (topic(&daemon, "llm", "generate"), json!({"messages": []}).to_string().into_bytes(), "bad_input", "no messages"),
        (topic(&daemon, "dino", "segment"), json!({"image": b64(&photo), "points": [{"x": 1, "y": 1}]}).to_string().into_bytes(), "bad_input", "does not do 'segment'"),
        (topic(&daemon, "llm", "generate"), json!({"prompt": "hi", "temperature": -2}).to_string().into_bytes(), "bad_input", "temperature"),
    ];
    for (t, payload, code, text) in cases {
        let r = c.call(&t, payload.clone());
        assert_eq!(r["error"]["code"], code, "{t} {}: {r}", String::from_utf8_lossy(&payload[..payload.len().min(80)]));
        assert!(r["error"]["message"].as_str().unwrap().contains(text), "expected '{text}' in {r}");
    }
    // Still serving.
    let ok = c.call(&topic(&daemon, "llm", "generate"), json!({"prompt": "hi", "max_new_tokens": 3}).to_string());
    assert_eq!(ok["result"]["usage"]["generated_tokens"], 3, "{ok}");
    assert!(daemon.child.id() > 0);
}

#[test]
fn a_full_queue_answers_busy_at_once_and_generation_can_be_cancelled() {
    let broker = Mosquitto::start();
    let cfg = config(&broker.url(), "queue", "").replace("id = \"llm\"\n", "id = \"llm\"\nqueue_depth = 1\n");
    let daemon = Daemon::start(&cfg);
    let mut c = Client::connect(broker.port);
    let long =
        json!({"prompt": "Once upon a time", "max_new_tokens": 230, "ignore_eos": true, "stream": false}).to_string();
    let corrs: Vec<String> = (0..6).map(|_| c.send(&topic(&daemon, "llm", "generate"), long.clone(), &[])).collect();
    let replies = c.replies(&corrs, Duration::from_secs(120));
    let finals: Vec<&Value> = replies.iter().filter(|(_, v)| v["done"] == true).map(|(_, v)| v).collect();
    let busy = finals.iter().filter(|v| v["error"]["code"] == "busy").count();
    let ok = finals.iter().filter(|v| v["result"]["kind"] == "generation").count();
    assert_eq!(busy + ok, 6, "{finals:?}");
    // One running plus a one-deep queue: exactly two are accepted, the rest refused at once.
    assert_eq!((ok, busy), (2, 4), "{finals:?}");

    // Cancel a running generation after its first delta.
    let corr = c.send(
        &topic(&daemon, "llm", "generate"),
        json!({"prompt": "Once upon a time", "max_new_tokens": 230, "ignore_eos": true}).to_string(),
        &[],
    );
    let (first_corr, first) = c.next_reply(Duration::from_secs(30));
    assert_eq!((first_corr.as_str(), &first["done"]), (corr.as_str(), &json!(false)), "{first}");
    let cancel = c.send(&topic(&daemon, "llm", "cancel"), json!({"cancel": corr}).to_string(), &[]);
    let replies = c.replies(&[corr.clone(), cancel.clone()], Duration::from_secs(60));
    let done = &replies.iter().find(|(k, v)| *k == corr && v["done"] == true).unwrap().1;
    assert_eq!(done["result"]["finish_reason"], "cancelled", "{done}");
    assert!(done["result"]["usage"]["generated_tokens"].as_u64().unwrap() < 230);
    let ack = &replies.iter().find(|(k, _)| *k == cancel).unwrap().1;
    assert_eq!(ack["result"]["kind"], "cancelled", "{ack}");
    // Cancelling something that is not running is an error, not silence.
    let r = c.call(&topic(&daemon, "llm", "cancel"), json!({"cancel": "nothing"}).to_string());
    assert_eq!(r["error"]["code"], "bad_input", "{r}");
}

#[test]
fn requests_time_out_with_a_timeout_error() {
    let broker = Mosquitto::start();
    let cfg = config(&broker.url(), "timeout", "").replace("id = \"llm\"\n", "id = \"llm\"\ntimeout_ms = 30\n");
    let daemon = Daemon::start(&cfg);
    let mut c = Client::connect(broker.port);
    // Load first (loading is not part of a request's time), then run past the deadline.
    let _ = c.call(&topic(&daemon, "llm", "load"), "{}");
    let r = c.call(
        &topic(&daemon, "llm", "generate"),
        json!({"prompt": "Once", "max_new_tokens": 250, "ignore_eos": true, "stream": false}).to_string(),
    );
    assert_eq!(r["error"]["code"], "timeout", "{r}");
    // The model still works for requests that fit.
    let r = c.call(&topic(&daemon, "llm", "generate"), json!({"prompt": "Once", "max_new_tokens": 2}).to_string());
    assert_eq!(r["result"]["usage"]["generated_tokens"], 2, "{r}");
}

#[test]
fn embed_requests_arriving_together_are_micro_batched_correctly() {
    let broker = Mosquitto::start();
    let daemon = Daemon::start(&config(&broker.url(), "batch", ""));
    let mut c = Client::connect(broker.port);
    let f = fixtures();
    let images: Vec<String> =
        ["chelsea", "coffee", "astronaut"].iter().map(|p| photo_b64(&f.join(format!("photos/{p}.png")))).collect();
    let _ = c.call(&topic(&daemon, "dino", "load"), "{}");
    let corrs: Vec<String> = images
        .iter()
        .map(|img| c.send(&topic(&daemon, "dino", "embed"), json!({"images": [img]}).to_string(), &[]))
        .collect();
    let replies = c.replies(&corrs, Duration::from_secs(60));
    // Each answer is that image's embedding (cosine 1 with a single, separate request).
    for (i, corr) in corrs.iter().enumerate() {
        let batched: Vec<f32> = serde_json::from_value(
            replies.iter().find(|(k, _)| k == corr).unwrap().1["result"]["embeddings"][0].clone(),
        )
        .unwrap();
        let alone = c.call(&topic(&daemon, "dino", "embed"), json!({"images": [images[i]]}).to_string());
        let alone: Vec<f32> = serde_json::from_value(alone["result"]["embeddings"][0].clone()).unwrap();
        let cos = edgeinfer_models::dinov2::cosine(&batched, &alone);
        assert!(cos > 0.99999, "image {i}: {cos}");
    }
}
