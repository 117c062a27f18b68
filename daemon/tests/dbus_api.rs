//! The D-Bus API end to end: a private `dbus-daemon`, the real `edgeinferd`, and clients that are
//! the zbus proxies generated from the shipped XML, `busctl` and `gdbus` (tools we did not
//! write), and the `edgeinfer` CLI. Images go as bytes and as memfds; bad input must come back as
//! D-Bus errors with the right names while the daemon keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use edgeinfer_daemon::dbus::proxy::{
    Embedder1Proxy, Generator1Proxy, Job1Proxy, Model1Proxy, Models1Proxy, Segmenter1Proxy,
};
use edgeinfer_daemon::dbus::{NAME, ROOT};
use edgeinfer_daemon::frame::sealed_memfd;
use futures_util::StreamExt;
use support::*;
use zbus::zvariant::{Fd, StructureBuilder, Value};
use zbus::{Connection, MatchRule, MessageStream};

fn opts<'a>(pairs: &'a [(&'a str, Value<'static>)]) -> HashMap<&'a str, &'a Value<'static>> {
    pairs.iter().map(|(k, v)| (*k, v)).collect()
}

/// The error name of a failed call.
fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, message, _) => format!("{name}: {}", message.clone().unwrap_or_default()),
        other => format!("not a method error: {other}"),
    }
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("photos").join(name)).unwrap()
}

/// The RGB8 pixels of a photo (what a camera would hand over).
fn pixels(name: &str) -> (u32, u32, Vec<u8>) {
    let img = image::load_from_memory(&photo(name)).unwrap().to_rgb8();
    (img.width(), img.height(), img.into_raw())
}

fn start(node: &str) -> (DbusBus, Daemon) {
    let bus = DbusBus::start();
    let daemon = Daemon::start(&dbus_config(&bus.address, None, node));
    (bus, daemon)
}

#[test]
fn introspection_matches_the_shipped_xml_and_the_proxies_were_generated_from_it() {
    let (bus, _daemon) = start("introspect");
    let shipped = std::fs::read_to_string(repo_file("daemon/dbus/org.edgeinfer.Daemon1.xml")).unwrap();
    // The proxies are generated from this very file (scripts/gen-dbus-proxy.sh records its hash).
    let sha = Command::new("sha256sum").arg(repo_file("daemon/dbus/org.edgeinfer.Daemon1.xml")).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout).split_whitespace().next().unwrap().to_string();
    let proxy_rs = std::fs::read_to_string(repo_file("daemon/src/dbus/proxy.rs")).unwrap();
    assert!(
        proxy_rs.contains(&format!("xml-sha256: {sha}")),
        "daemon/src/dbus/proxy.rs was not generated from the current XML: run scripts/gen-dbus-proxy.sh"
    );
    let shipped = zbus_xml::Node::from_reader(shipped.as_bytes()).unwrap();

    rt().block_on(async {
        let conn = connect(&bus.address).await;
        // A job object exists only while a generation is around.
        let generator: Generator1Proxy = proxy(&conn, ROOT).await;
        let job = generator.generate("llm", "Hi", opts(&[("max_new_tokens", Value::U32(2))])).await.unwrap();
        let mut live = Vec::new();
        for path in [ROOT.to_string(), format!("{ROOT}/models/sam"), job.to_string()] {
            let xml: String = conn
                .call_method(Some(NAME), path.as_str(), Some("org.freedesktop.DBus.Introspectable"), "Introspect", &())
                .await
                .unwrap()
                .body()
                .deserialize()
                .unwrap();
            live.push(xml);
        }
        let live: Vec<zbus_xml::Node> =
            live.iter().map(|x| zbus_xml::Node::from_reader(x.as_bytes()).unwrap()).collect();
        let describe = |i: &zbus_xml::Interface| {
            let mut lines = Vec::new();
            for m in i.methods() {
                let args: Vec<String> = m
                    .args()
                    .iter()
                    .map(|a| format!("{}:{:?}:{:?}", a.name().unwrap_or(""), a.ty(), a.direction()))
                    .collect();
                lines.push(format!("method {} ({})", m.name(), args.join(", ")));
            }
            for s in i.signals() {
                let args: Vec<String> =
                    s.args().iter().map(|a| format!("{}:{:?}", a.name().unwrap_or(""), a.ty())).collect();
                lines.push(format!("signal {} ({})", s.name(), args.join(", ")));
            }
            for p in i.properties() {
                lines.push(format!("property {} {:?} {:?}", p.name(), p.ty(), p.access()));
            }
            lines.sort();
            lines
        };
        for iface in shipped.interfaces() {
            let found = live
                .iter()
                .flat_map(|n| n.interfaces())
                .find(|i| i.name() == iface.name())
                .unwrap_or_else(|| panic!("the daemon does not serve {}", iface.name()));
            assert_eq!(describe(found), describe(iface), "{} differs from the shipped XML", iface.name());
        }
    });
}

#[test]
fn busctl_and_gdbus_drive_the_api() {
    let (bus, _daemon) = start("busctl");
    let busctl = |args: &[&str]| {
        let out = Command::new("busctl").arg(format!("--address={}", bus.address)).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Introspection lists the documented methods.
    let (ok, out, err) = busctl(&["introspect", NAME, ROOT]);
    assert!(ok, "{err}");
    for method in [".Segment ", ".SegmentFd ", ".EmbedFd ", ".Generate ", ".List ", ".GalleryAdd "] {
        assert!(out.contains(method), "busctl introspect lacks {method}:\n{out}");
    }
    let (ok, out, err) = busctl(&["call", NAME, ROOT, "org.edgeinfer.Models1", "List"]);
    assert!(ok && out.starts_with("a(ssso) 3 \"dino\""), "{out}{err}");
    // A real image as an `ay` argument from the command line.
    let png = {
        let img = image::RgbImage::from_fn(20, 16, |x, y| image::Rgb([(x * 12) as u8, (y * 15) as u8, 90]));
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        buf.into_inner()
    };
    let mut args: Vec<String> = ["call", NAME, ROOT, "org.edgeinfer.Embedder1", "Embed", "saya{sv}", "dino"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(png.len().to_string());
    args.extend(png.iter().map(|b| b.to_string()));
    args.extend(["1", "normalize", "b", "true"].map(String::from));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = busctl(&arg_refs);
    assert!(ok, "{err}");
    let values: Vec<f64> = out.split_whitespace().skip(2).map(|v| v.parse().unwrap()).collect();
    let norm: f64 = values.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert_eq!(values.len(), 48, "{out}");
    assert!((norm - 1.0).abs() < 1e-4, "normalize=true gives a unit vector, got {norm}");
    let (ok, out, _) = busctl(&["get-property", NAME, &format!("{ROOT}/models/dino"), "org.edgeinfer.Model1", "State"]);
    assert!(ok && out.trim() == "s \"loaded\"", "{out}");
    let (ok, out, _) =
        busctl(&["get-property", NAME, &format!("{ROOT}/models/dino"), "org.edgeinfer.Model1", "Variant"]);
    assert!(ok && out.trim() == "s \"fp32\"", "{out}");
    let (ok, out, _) = busctl(&["get-property", NAME, &format!("{ROOT}/models/dino"), "org.edgeinfer.Model1", "Graph"]);
    assert!(ok && out.trim().ends_with("dinov2/model.onnx\""), "the loaded graph file: {out}");

    // gdbus shows the error names.
    let gdbus = |method: &str, args: &[&str]| {
        let out = Command::new("gdbus")
            .args(["call", "--address", &bus.address, "--dest", NAME, "--object-path", ROOT, "--method", method])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = gdbus("org.edgeinfer.Models1.Load", &["nope"]);
    assert!(!ok && out.contains("org.edgeinfer.Error.UnknownModel") && out.contains("no model 'nope'"), "{out}");
    let (ok, out) = gdbus("org.edgeinfer.Embedder1.Embed", &["dino", "[byte 1, 2, 3]", "{}"]);
    assert!(!ok && out.contains("org.edgeinfer.Error.BadInput"), "{out}");
    let (ok, out) = gdbus("org.edgeinfer.Generator1.Complete", &["llm", "Hello", "{'max_new_tokens': <uint32 3>}"]);
    assert!(ok && out.contains("'length'"), "{out}");
}

#[test]
fn frames_pass_as_memfds_files_or_bytes_with_the_same_results() {
    let (bus, _daemon) = start("frames");
    let (w, h, rgb) = pixels("chelsea.png");
    rt().block_on(async {
        let conn = connect(&bus.address).await;
        let embedder: Embedder1Proxy = proxy(&conn, ROOT).await;
        let raw = [("format", Value::from("rgb8")), ("width", Value::U32(w)), ("height", Value::U32(h))];
        let by_bytes = embedder.embed("dino", &rgb, opts(&raw)).await.unwrap();
        let memfd = sealed_memfd("frame", &rgb).unwrap();
        let by_memfd = embedder.embed_fd("dino", Fd::from(&memfd), opts(&raw)).await.unwrap();
        assert_eq!(by_bytes, by_memfd);
        // The same memfd again (a camera ring buffer is reused).
        assert_eq!(embedder.embed_fd("dino", Fd::from(&memfd), opts(&raw)).await.unwrap(), by_memfd);
        // A regular file holding a header and the frame: offset/size select it (copied, not mapped).
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"HEADER").unwrap();
        std::io::Write::write_all(&mut file, &rgb).unwrap();
        let ranged = [
            ("format", Value::from("rgb8")),
            ("width", Value::U32(w)),
            ("height", Value::U32(h)),
            ("offset", Value::U64(6)),
            ("size", Value::U64(rgb.len() as u64)),
        ];
        assert_eq!(embedder.embed_fd("dino", Fd::from(&file), opts(&ranged)).await.unwrap(), by_memfd);
        // An encoded image in an unsealed memfd (copied) = the same PNG as bytes.
        let png = photo("chelsea.png");
        let unsealed = rustix::fs::memfd_create("png", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let f = std::fs::File::from(unsealed);
        std::os::unix::fs::FileExt::write_all_at(&f, &png, 0).unwrap();
        let from_png = embedder.embed("dino", &png, opts(&[])).await.unwrap();
        assert_eq!(embedder.embed_fd("dino", Fd::from(&f), opts(&[])).await.unwrap(), from_png);

        // Segmentation from a memfd frame, then prompting the cached image by hash.
        let segmenter: Segmenter1Proxy = proxy(&conn, ROOT).await;
        let point = Value::Structure(
            StructureBuilder::new().add_field(200.0f64).add_field(150.0f64).add_field(true).build().unwrap(),
        );
        let prompt = [
            ("points", Value::Array(vec![point].try_into().unwrap())),
            ("format", Value::from("rgb8")),
            ("width", Value::U32(w)),
            ("height", Value::U32(h)),
        ];
        let (sw, sh, hash, hit, masks) = segmenter.segment_fd("sam", Fd::from(&memfd), opts(&prompt)).await.unwrap();
        assert_eq!((sw, sh, hit, masks.len()), (w, h, false, 3));
        assert!(masks.iter().all(|m| !m.4.is_empty() && m.5.is_empty()), "RLE by default, no PNG");
        let again = [
            ("points", prompt[0].1.try_clone().unwrap()),
            ("best_only", Value::Bool(true)),
            ("mask_format", Value::from("png")),
        ];
        let (_, _, hash2, hit2, best) = segmenter.segment_cached("sam", &hash, opts(&again)).await.unwrap();
        assert_eq!((hash2, hit2, best.len()), (hash.clone(), true, 1));
        assert!(best[0].5.starts_with(b"\x89PNG") && best[0].4.is_empty());
        assert_eq!(best[0].0, masks.iter().map(|m| m.0).fold(f64::MIN, f64::max), "the best of the three");
    });
}

#[test]
fn bad_input_gets_named_dbus_errors_and_the_daemon_keeps_serving() {
    let bus = DbusBus::start();
    let cfg = with_model_key(
        &dbus_config(&bus.address, None, "badinput"),
        "dino",
        "image_limits",
        "{ max_bytes = 4000000, max_pixels = 40000000 }",
    );
    let daemon = Daemon::start(&cfg);
    rt().block_on(async {
        let conn = connect(&bus.address).await;
        let embedder: Embedder1Proxy = proxy(&conn, ROOT).await;
        let err = |r: Result<Vec<f64>, zbus::Error>| error_name(&r.unwrap_err());

        // Wrong argument types: the bus-level InvalidArgs, from zbus.
        // Wrong argument types: an error reply from zbus naming the expected signature.
        let r = conn.call_method(Some(NAME), ROOT, Some("org.edgeinfer.Embedder1"), "Embed", &("dino", 5u32)).await;
        let e = error_name(&r.unwrap_err());
        assert!(e.starts_with("org.freedesktop.zbus.Error") && e.contains("expected `(saya{sv})`"), "{e}");
        // An fd that is a pipe, a directory, write-only, garbage, or huge.
        let (reader, _writer) = std::io::pipe().unwrap();
        let e = err(embedder.embed_fd("dino", Fd::from(&reader), opts(&[])).await);
        assert!(e.starts_with("org.edgeinfer.Error.BadInput") && e.contains("pipe"), "{e}");
        let dir = std::fs::File::open("/").unwrap();
        let e = err(embedder.embed_fd("dino", Fd::from(&dir), opts(&[])).await);
        assert!(e.starts_with("org.edgeinfer.Error.BadInput") && e.contains("directory"), "{e}");
        let wo = std::fs::OpenOptions::new().write(true).open(daemon.dir.path().join("wo")).or_else(|_| {
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(daemon.dir.path().join("wo"))
        });
        let wo = wo.unwrap();
        let e = err(embedder.embed_fd("dino", Fd::from(&wo), opts(&[])).await);
        assert!(e.starts_with("org.edgeinfer.Error.BadInput") && e.contains("not open for reading"), "{e}");
        let garbage = sealed_memfd("garbage", b"this is not an image at all").unwrap();
        let e = err(embedder.embed_fd("dino", Fd::from(&garbage), opts(&[])).await);
        assert!(e.starts_with("org.edgeinfer.Error.BadInput"), "{e}");
        let huge = rustix::fs::memfd_create("huge", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&huge, 1 << 40).unwrap();
        let e = err(embedder.embed_fd("dino", Fd::from(&huge), opts(&[])).await);
        assert!(e.starts_with("org.edgeinfer.Error.TooLarge") && e.contains("4000000"), "{e}");
        let e = err(embedder.embed("dino", &vec![0u8; 4_000_001], opts(&[])).await);
        assert!(e.starts_with("org.edgeinfer.Error.TooLarge"), "{e}");
        // Raw pixels that do not match the declared size; unknown options; wrong option types.
        let raw = [("format", Value::from("rgb8")), ("width", Value::U32(100)), ("height", Value::U32(100))];
        let e = err(embedder.embed("dino", &[0u8; 300], opts(&raw)).await);
        assert!(e.starts_with("org.edgeinfer.Error.BadInput"), "{e}");
        let e = err(embedder.embed("dino", &photo("coffee.png"), opts(&[("normalise", Value::Bool(true))])).await);
        assert!(e.starts_with("org.edgeinfer.Error.BadInput") && e.contains("unknown option 'normalise'"), "{e}");
        let e = err(embedder.embed("dino", &photo("coffee.png"), opts(&[("normalize", Value::from("yes"))])).await);
        assert!(e.contains("option 'normalize' must be a boolean"), "{e}");
        // Unknown model; the wrong family.
        let e = err(embedder.embed("nope", &photo("coffee.png"), opts(&[])).await);
        assert!(e.starts_with("org.edgeinfer.Error.UnknownModel"), "{e}");
        let e = err(embedder.embed("sam", &photo("coffee.png"), opts(&[])).await);
        assert!(e.starts_with("org.edgeinfer.Error.BadInput") && e.contains("sam model"), "{e}");

        // Jobs: unknown path, cancel of a finished job.
        let generator: Generator1Proxy = proxy(&conn, ROOT).await;
        let nowhere = zbus::zvariant::ObjectPath::try_from("/org/edgeinfer/jobs/999").unwrap();
        let e = error_name(&generator.cancel(&nowhere).await.unwrap_err());
        assert!(e.starts_with("org.edgeinfer.Error.BadInput") && e.contains("no job"), "{e}");
        let job999: Job1Proxy = proxy(&conn, "/org/edgeinfer/jobs/999").await;
        let e = error_name(&job999.cancel().await.unwrap_err());
        assert!(e.starts_with("org.freedesktop.DBus.Error.UnknownObject"), "{e}");
        let mut finished = signals(&conn, "Finished").await;
        let path = generator.generate("llm", "Hi", opts(&[("max_new_tokens", Value::U32(2))])).await.unwrap();
        next_for(&mut finished, path.as_str()).await;
        let job: Job1Proxy = proxy(&conn, path.as_str()).await;
        let e = error_name(&job.cancel().await.unwrap_err());
        assert!(e.starts_with("org.edgeinfer.Error.BadInput") && e.contains("already ended"), "{e}");
        let e = error_name(
            &generator.generate("llm", "Hi", opts(&[("max_new_tokens", Value::from("many"))])).await.unwrap_err(),
        );
        assert!(e.starts_with("org.edgeinfer.Error.BadInput"), "{e}");

        // Still serving.
        let models: Models1Proxy = proxy(&conn, ROOT).await;
        assert_eq!(models.list().await.unwrap().len(), 3);
        assert_eq!(embedder.embed("dino", &photo("coffee.png"), opts(&[])).await.unwrap().len(), 48);
    });
}

/// A stream of the daemon's Job1 `member` signals.
async fn signals(conn: &Connection, member: &'static str) -> MessageStream {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.edgeinfer.Job1")
        .unwrap()
        .member(member)
        .unwrap()
        .build();
    MessageStream::for_match_rule(rule, conn, Some(1 << 16)).await.unwrap()
}

/// The next message of `stream` on `path` (bounded).
async fn next_for(stream: &mut MessageStream, path: &str) -> zbus::Message {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let m = stream.next().await.expect("signal stream ended").unwrap();
            if m.header().path().map(|p| p.as_str()) == Some(path) {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no signal on {path} within 60 s"))
}

type Finished = (String, String, Vec<u32>, String, u32, u32, f64, f64, f64, String, String);

#[test]
fn generation_streams_tokens_cancels_and_stops_when_its_caller_leaves() {
    let (bus, daemon) = start("generate");
    rt().block_on(async {
        let conn = connect(&bus.address).await;
        let generator: Generator1Proxy = proxy(&conn, ROOT).await;
        // The signals, subscribed before the job exists: nothing is missed.
        let mut tokens = signals(&conn, "Token").await;
        let mut finished = signals(&conn, "Finished").await;
        let greedy = [("max_new_tokens", Value::U32(12)), ("ignore_eos", Value::Bool(true))];
        let path = generator.generate("llm", "Once upon a time", opts(&greedy)).await.unwrap();
        let end: Finished = next_for(&mut finished, path.as_str()).await.body().deserialize().unwrap();
        let mut streamed = String::new();
        let mut seqs = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(1), tokens.next()).await {
            if m.header().path().map(|p| p.as_str()) == Some(path.as_str()) {
                let (seq, text, _): (u64, String, Vec<u32>) = m.body().deserialize().unwrap();
                seqs.push(seq);
                streamed.push_str(&text);
            }
        }
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "tokens in order, none missing");
        assert_eq!((end.0.as_str(), end.3.as_str(), end.5), ("finished", "length", 12));
        assert_eq!(streamed, end.1, "the deltas add up to the text");
        // The same greedy generation as one blocking call.
        let complete = generator.complete("llm", "Once upon a time", opts(&greedy)).await.unwrap();
        assert_eq!((complete.0.as_str(), complete.1.clone()), (end.1.as_str(), end.2.clone()));
        let job: Job1Proxy = proxy(&conn, path.as_str()).await;
        assert_eq!((job.state().await.unwrap(), job.text().await.unwrap()), ("finished".to_string(), end.1.clone()));

        // Cancel after the first token.
        let long = [("max_new_tokens", Value::U32(230)), ("ignore_eos", Value::Bool(true))];
        let path = generator.generate("llm", "Once upon a time", opts(&long)).await.unwrap();
        next_for(&mut tokens, path.as_str()).await;
        let job: Job1Proxy = proxy(&conn, path.as_str()).await;
        job.cancel().await.unwrap();
        let end: Finished = next_for(&mut finished, path.as_str()).await.body().deserialize().unwrap();
        assert_eq!((end.0.as_str(), end.3.as_str()), ("cancelled", "cancelled"));
        assert!(end.5 < 230);

        // A caller that leaves the bus: its generation is cancelled. (Its signals went to it
        // alone: this connection sees none of them, so the daemon's log tells.)
        let other = connect(&bus.address).await;
        let mut other_tokens = signals(&other, "Token").await;
        let other_generator: Generator1Proxy = proxy(&other, ROOT).await;
        let path = other_generator.generate("llm", "Once upon a time", opts(&long)).await.unwrap();
        next_for(&mut other_tokens, path.as_str()).await;
        drop(other_generator);
        other.close().await.unwrap();
        let ended = format!("generation ended job={path} state=\"cancelled\"");
        wait_for("the generation of the caller that left to end cancelled", Duration::from_secs(60), || {
            daemon.log().lines().any(|l| strip_ansi(l).contains(&ended)).then_some(())
        });
    });
}

#[test]
fn the_cli_prints_the_same_over_dbus_and_mqtt() {
    let broker = Mosquitto::start();
    let bus = DbusBus::start();
    let _daemon = Daemon::start(&dbus_config(&bus.address, Some(&broker.url()), "cli"));
    let run = |transport: &[&str], args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_edgeinfer")).args(transport).args(args).output().unwrap();
        assert!(out.status.success(), "{transport:?} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dbus = ["--bus", bus.address.as_str()];
    let mqtt_url = broker.url();
    let mqtt = ["--mqtt", mqtt_url.as_str()];
    let chelsea = fixtures().join("photos/chelsea.png");
    let coffee = fixtures().join("photos/coffee.png");
    let (chelsea, coffee) = (chelsea.to_str().unwrap(), coffee.to_str().unwrap());
    run(&dbus, &["gallery", "-m", "dino", "add", "--label", "cat", chelsea]);
    run(&mqtt, &["gallery", "-m", "dino", "add", "--label", "mug", coffee]);
    for args in [
        vec!["models"],
        vec!["models", "--json"],
        vec!["segment", "-m", "sam", chelsea, "--point", "200,150", "--box", "100,50,300,250", "--json"],
        vec!["segment", "-m", "sam", chelsea, "--point", "200,150", "--best"],
        vec!["embed", "-m", "dino", chelsea, coffee, "--json"],
        vec!["classify", "-m", "dino", coffee],
        vec!["gallery", "-m", "dino", "list"],
        vec!["generate", "-m", "llm", "Once upon a time", "--max-new-tokens", "16", "--json"],
    ] {
        let over_dbus = run(&dbus, &args);
        let over_mqtt = run(&mqtt, &args);
        // Timings differ run to run; everything else must not.
        let strip = |s: &str| -> String {
            s.lines()
                .filter(|l| {
                    !["time_to_first_token_ms", "tokens_per_second", "total_ms", "cache_hit", "time to first token"]
                        .iter()
                        .any(|k| l.contains(k))
                })
                // Mask ids carry a per-request counter (they name stored masks for refinement).
                .filter(|l| !l.contains("\"mask_id\""))
                .map(|l| {
                    l.split("  id ")
                        .next()
                        .unwrap_or("")
                        .replace("embedding computed", "")
                        .replace("embedding cached", "")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&over_dbus), strip(&over_mqtt), "edgeinfer {args:?} differs between D-Bus and MQTT");
        assert!(!over_dbus.trim().is_empty(), "{args:?} printed nothing");
    }
}

#[test]
fn model_changes_emit_properties_changed_and_reloads_add_and_remove_objects() {
    let bus = DbusBus::start();
    let cfg = dbus_config(&bus.address, None, "props");
    let daemon = Daemon::start(&cfg);
    rt().block_on(async {
        let conn = connect(&bus.address).await;
        let rule = |member: &'static str| {
            MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .sender(NAME)
                .unwrap()
                .member(member)
                .unwrap()
                .build()
        };
        let mut changed = MessageStream::for_match_rule(rule("PropertiesChanged"), &conn, Some(1024)).await.unwrap();
        let mut added = MessageStream::for_match_rule(rule("InterfacesAdded"), &conn, Some(1024)).await.unwrap();
        let mut removed = MessageStream::for_match_rule(rule("InterfacesRemoved"), &conn, Some(1024)).await.unwrap();
        let dino_path = format!("{ROOT}/models/dino");
        let dino: Model1Proxy = proxy(&conn, &dino_path).await;
        assert_eq!(dino.state().await.unwrap(), "unloaded");
        let models: Models1Proxy = proxy(&conn, ROOT).await;
        assert_eq!(models.load("dino").await.unwrap().as_str(), dino_path);
        // PropertiesChanged(Model1, {State: loading}) then {State: loaded} (and family, providers).
        let mut states = Vec::new();
        while !states.contains(&"loaded".to_string()) {
            let m = next_for(&mut changed, &dino_path).await;
            let (iface, props, _): (String, HashMap<String, zbus::zvariant::OwnedValue>, Vec<String>) =
                m.body().deserialize().unwrap();
            assert_eq!(iface, "org.edgeinfer.Model1");
            if let Some(s) = props.get("State") {
                states.push(String::try_from(s.try_clone().unwrap()).unwrap());
            }
        }
        assert_eq!(states, ["loading", "loaded"]);
        assert_eq!(dino.family().await.unwrap(), "dinov2");
        models.unload("dino").await.unwrap();
        loop {
            let m = next_for(&mut changed, &dino_path).await;
            let (_, props, _): (String, HashMap<String, zbus::zvariant::OwnedValue>, Vec<String>) =
                m.body().deserialize().unwrap();
            if props.get("State").map(|s| String::try_from(s.try_clone().unwrap()).unwrap()).as_deref()
                == Some("unloaded")
            {
                break;
            }
        }

        // SIGHUP with one model more: its object appears; with it gone again: it disappears.
        let extra = format!("\n[[models]]\nid = \"dino-2\"\npath = \"{}\"\n", fixtures().join("dinov2").display());
        daemon.rewrite_config(&format!("{cfg}{extra}"));
        daemon.signal("HUP");
        let new_path = format!("{ROOT}/models/dino_2d2");
        let m = tokio::time::timeout(Duration::from_secs(30), added.next())
            .await
            .expect("no InterfacesAdded")
            .unwrap()
            .unwrap();
        let (path, _): (zbus::zvariant::OwnedObjectPath, HashMap<String, HashMap<String, zbus::zvariant::OwnedValue>>) =
            m.body().deserialize().unwrap();
        assert_eq!(path.as_str(), new_path);
        daemon.rewrite_config(&cfg);
        daemon.signal("HUP");
        let m = tokio::time::timeout(Duration::from_secs(30), removed.next())
            .await
            .expect("no InterfacesRemoved")
            .unwrap()
            .unwrap();
        let (path, _): (zbus::zvariant::OwnedObjectPath, Vec<String>) = m.body().deserialize().unwrap();
        assert_eq!(path.as_str(), new_path);
    });
}

#[test]
fn the_daemon_survives_the_bus_restarting_and_a_second_daemon_says_why_it_exits() {
    let mut bus = DbusBus::start();
    let mut daemon = Daemon::start(&dbus_config(&bus.address, None, "restart"));
    // Another daemon for the same name on the same bus: a clear error, not a silent second server.
    let mut second = Daemon::spawn(&dbus_config(&bus.address, None, "second"), &[]);
    let status = second.wait_exit("the second edgeinferd to exit", Duration::from_secs(30));
    assert!(!status.success());
    assert!(second.log().contains("already owned"), "{}", second.log());

    bus.restart();
    let address = bus.address.clone();
    let runtime = rt();
    let answered = wait_for("edgeinferd to be back on the restarted bus", Duration::from_secs(30), || {
        runtime.block_on(async {
            let conn = zbus::connection::Builder::address(address.as_str()).ok()?.build().await.ok()?;
            let models: Models1Proxy =
                zbus::proxy::Builder::new(&conn).destination(NAME).ok()?.path(ROOT).ok()?.build().await.ok()?;
            models.list().await.ok()
        })
    });
    assert_eq!(answered.len(), 3);
    assert!(daemon.log().contains("the D-Bus connection was lost; reconnecting"), "{}", daemon.log());
    assert!(daemon.child.try_wait().unwrap().is_none(), "edgeinferd died with the bus");
    assert!(daemon.terminate().success());
}

#[test]
fn the_shipped_policy_refuses_callers_outside_the_edgeinfer_group() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to call as another user (CI runs as root)");
        return;
    }
    let policy = repo_file("daemon/dbus/org.edgeinfer.Daemon1.conf");
    let bus = DbusBus::start_with(Some(&policy));
    let _daemon = Daemon::start(&dbus_config(&bus.address, None, "policy"));
    let call = |as_nobody: bool| {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "gdbus"]);
            c
        } else {
            Command::new("gdbus")
        };
        let out = cmd
            .args([
                "call",
                "--address",
                &bus.address,
                "--dest",
                NAME,
                "--object-path",
                ROOT,
                "--method",
                "org.edgeinfer.Models1.List",
            ])
            .env("HOME", "/tmp")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = call(false);
    assert!(ok && out.contains("'dino'"), "root may call: {out}\nbus log: {}", bus.log());
    let (ok, out) = call(true);
    assert!(!ok && out.contains("org.freedesktop.DBus.Error.AccessDenied"), "nobody may not: {out}");
}
