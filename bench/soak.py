#!/usr/bin/env python3
"""Soak load for a running edgeinferd (bench/soak.sh starts everything and calls this).

Mixed traffic at saturation for --seconds, over MQTT (paho-mqtt, MQTT 5 response topic and
correlation data) and D-Bus (jeepney): segment, embed, classify, gallery add/remove, generate
(streamed, some cancelled mid-way), and bad input (malformed JSON, unknown model, a 40,000,000 x 1
PNG, bad base64, payloads over max_bytes, garbage image bytes over D-Bus). Every request must be
answered: an `ok` result or a structured error code. RSS of the daemon is sampled every second.

Writes a JSON report (--out) and prints a summary; exits non-zero when a request went
unanswered, the daemon died, or RSS grew by 5 % or more over the second half of the run.
"""
import argparse
import base64
import json
import os
import random
import statistics
import struct
import sys
import threading
import time
import uuid
import zlib

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call
from jeepney.io.blocking import open_dbus_connection

NAME = "org.edgeinfer.Daemon1"
ROOT = "/org/edgeinfer/Daemon1"
ANSWER_TIMEOUT = 120.0


def png(width, height):
    """A black RGB8 PNG. png(40_000_000, 1) is the geometry bomb: about 120 KB on the wire."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\0" + bytes(width * 3) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.rows = []  # (t, transport, kind, code, latency_s)
        self.unanswered = []

    def add(self, t, transport, kind, code, latency):
        with self.lock:
            self.rows.append((t, transport, kind, code, latency))

    def lost(self, what):
        with self.lock:
            self.unanswered.append(what)


class Mqtt:
    """One MQTT 5 client; replies routed to waiters by correlation data."""

    def __init__(self, port, node):
        self.node = node
        self.reply_topic = f"edgeinfer/replies/soak-{uuid.uuid4().hex}"
        self.waiters = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"soak-{os.getpid()}", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_message = self.on_message
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not connected.wait(10):
            raise SystemExit("soak: cannot connect to the broker")
        self.client.subscribe(self.reply_topic, qos=1)

    def on_message(self, _c, _u, msg):
        corr = getattr(msg.properties, "CorrelationData", None)
        with self.lock:
            waiter = self.waiters.get(bytes(corr)) if corr is not None else None
        if waiter is not None:
            inbox, event = waiter
            inbox.append(json.loads(msg.payload))
            event.set()

    def topic(self, model, task):
        return f"edgeinfer/{self.node}/models/{model}/{task}"

    def request(self, model, task, payload, on_message=None):
        """Publishes and waits for the final message; returns (code, messages)."""
        corr = uuid.uuid4().hex.encode()  # text: a cancel names it
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        inbox, event = [], threading.Event()
        with self.lock:
            self.waiters[corr] = (inbox, event)
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(self.topic(model, task), body, qos=1, properties=props)
        deadline = time.monotonic() + ANSWER_TIMEOUT
        seen = 0
        try:
            while time.monotonic() < deadline:
                event.wait(0.5)
                event.clear()
                while seen < len(inbox):
                    message = inbox[seen]
                    seen += 1
                    if on_message:
                        on_message(message, corr)
                    if message.get("done"):
                        return (message["error"]["code"] if "error" in message else "ok"), inbox
            return None, inbox
        finally:
            with self.lock:
                self.waiters.pop(corr, None)

    def cancel(self, corr):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = uuid.uuid4().bytes
        self.client.publish(self.topic("llm", "cancel"), json.dumps({"cancel": corr.decode()}), qos=1, properties=props)


def dbus_call(conn, interface, method, signature, body):
    address = DBusAddress(ROOT, bus_name=NAME, interface=interface)
    try:
        reply = conn.send_and_get_reply(new_method_call(address, method, signature, body), timeout=ANSWER_TIMEOUT)
    except TimeoutError:
        return None
    if reply.header.message_type == MessageType.error:
        return reply.header.fields.get(HeaderFields.error_name, "error").rsplit(".", 1)[-1]
    return "ok"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bus", required=True)
    ap.add_argument("--node", default="soak")
    ap.add_argument("--photos", required=True)
    ap.add_argument("--mqtt-workers", type=int, default=12)
    ap.add_argument("--dbus-workers", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    photos = [open(os.path.join(args.photos, f), "rb").read() for f in sorted(os.listdir(args.photos))]
    small = png(64, 48)
    big_bomb = png(40_000_000, 1)
    too_big = os.urandom(3 * 1024 * 1024)  # over the soak config's 2 MiB max_bytes
    b64 = lambda b: base64.b64encode(b).decode()
    results = Results()
    start = time.monotonic()
    stop_at = start + args.seconds
    client = Mqtt(args.port, args.node)

    rss = []

    def sample_rss():
        while time.monotonic() < stop_at + 2:
            try:
                with open(f"/proc/{args.pid}/status") as f:
                    kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
                rss.append((time.monotonic() - start, kb))
            except (OSError, StopIteration):
                rss.append((time.monotonic() - start, None))
            time.sleep(1)

    def mqtt_worker(seed):
        rnd = random.Random(seed)
        while time.monotonic() < stop_at:
            photo = rnd.choice(photos)
            kind = rnd.choices(
                ["segment", "embed", "classify", "gallery_add", "gallery_remove", "generate", "generate_cancel",
                 "bad_json", "unknown_model", "bomb", "bad_base64", "oversized"],
                weights=[14, 14, 10, 6, 2, 10, 6, 3, 3, 2, 3, 2])[0]
            t0 = time.monotonic()
            if kind == "segment":
                code, _ = client.request("sam", "segment", {"image": b64(photo), "points": [{"x": rnd.uniform(0, 60), "y": rnd.uniform(0, 40)}], "mask_format": rnd.choice(["rle", "png", "none"])})
            elif kind == "embed":
                code, _ = client.request("dino", "embed", {"images": [b64(photo), b64(small)][: rnd.randint(1, 2)]})
            elif kind == "classify":
                code, _ = client.request("dino", "classify", photo if rnd.random() < 0.5 else {"image": b64(photo), "k": 3})
            elif kind == "gallery_add":
                code, _ = client.request("dino", "gallery/add", {"label": f"obj{rnd.randint(0, 20)}", "image": b64(photo)})
            elif kind == "gallery_remove":
                code, _ = client.request("dino", "gallery/remove", {"label": f"obj{rnd.randint(0, 20)}"})
            elif kind == "generate":
                code, _ = client.request("llm", "generate", {"prompt": "Once upon a time", "max_new_tokens": rnd.randint(4, 48), "stream": rnd.random() < 0.5})
            elif kind == "generate_cancel":
                sent = {"done": False}

                def cancel_on_first(message, corr):
                    if not sent["done"] and not message.get("done"):
                        sent["done"] = True
                        client.cancel(corr)

                code, messages = client.request("llm", "generate", {"prompt": "Tell me a story", "max_new_tokens": 240, "ignore_eos": True}, cancel_on_first)
                if code == "ok" and messages[-1]["result"].get("finish_reason") == "cancelled":
                    code = "ok (cancelled)"
            elif kind == "bad_json":
                code, _ = client.request("dino", "embed", b'{"images": [')
            elif kind == "unknown_model":
                code, _ = client.request("nope", "embed", {"images": [b64(small)]})
            elif kind == "bomb":
                if rnd.random() < 0.5:
                    code, _ = client.request("dino", "embed", big_bomb)
                else:
                    code, _ = client.request("sam", "segment", {"image": b64(big_bomb), "points": [{"x": 0, "y": 0}]})
            elif kind == "bad_base64":
                code, _ = client.request("dino", "embed", {"images": ["%%%not base64%%%"]})
            else:
                code, _ = client.request("dino", "classify", too_big)
            latency = time.monotonic() - t0
            if code is None:
                results.lost(f"mqtt {kind} after {latency:.1f}s")
                code = "unanswered"
            results.add(t0 - start, "mqtt", kind, code, latency)

    def dbus_worker(seed):
        rnd = random.Random(seed)
        conn = open_dbus_connection(bus=args.bus)
        while time.monotonic() < stop_at:
            photo = rnd.choice(photos)
            kind = rnd.choices(["segment", "embed", "classify", "gallery_add", "complete", "garbage", "unknown_model"],
                               weights=[20, 20, 10, 5, 10, 4, 3])[0]
            t0 = time.monotonic()
            if kind == "segment":
                points = ("a(ddb)", [(rnd.uniform(0, 60), rnd.uniform(0, 40), True)])
                code = dbus_call(conn, "org.edgeinfer.Segmenter1", "Segment", "saya{sv}", ("sam", photo, {"points": points}))
            elif kind == "embed":
                code = dbus_call(conn, "org.edgeinfer.Embedder1", "Embed", "saya{sv}", ("dino", photo, {}))
            elif kind == "classify":
                code = dbus_call(conn, "org.edgeinfer.Embedder1", "Classify", "saya{sv}", ("dino", photo, {}))
            elif kind == "gallery_add":
                code = dbus_call(conn, "org.edgeinfer.Embedder1", "GalleryAdd", "ssaya{sv}", ("dino", f"bus{rnd.randint(0, 5)}", photo, {}))
            elif kind == "complete":
                code = dbus_call(conn, "org.edgeinfer.Generator1", "Complete", "ssa{sv}", ("llm", "Hello", {"max_new_tokens": ("u", rnd.randint(2, 24))}))
            elif kind == "garbage":
                code = dbus_call(conn, "org.edgeinfer.Embedder1", "Embed", "saya{sv}", ("dino", os.urandom(rnd.randint(1, 4096)), {}))
            else:
                code = dbus_call(conn, "org.edgeinfer.Embedder1", "Embed", "saya{sv}", ("nope", small, {}))
            latency = time.monotonic() - t0
            if code is None:
                results.lost(f"dbus {kind} after {latency:.1f}s")
                code = "unanswered"
            names = {"BadInput": "bad_input", "UnknownModel": "unknown_model", "TooLarge": "too_large", "Busy": "busy", "Timeout": "timeout"}
            results.add(t0 - start, "dbus", kind, names.get(code, code), latency)
        conn.close()

    threads = [threading.Thread(target=sample_rss, daemon=True)]
    threads += [threading.Thread(target=mqtt_worker, args=(i,)) for i in range(args.mqtt_workers)]
    threads += [threading.Thread(target=dbus_worker, args=(100 + i,)) for i in range(args.dbus_workers)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    threads[0].join()
    client.client.loop_stop()

    alive = os.path.exists(f"/proc/{args.pid}")
    samples = [(t, kb) for t, kb in rss if kb is not None]
    half = args.seconds / 2
    window = max(10.0, args.seconds / 10)
    mid = [kb for t, kb in samples if half <= t < half + window]
    end = [kb for t, kb in samples if args.seconds - window <= t <= args.seconds]
    growth = (statistics.median(end) - statistics.median(mid)) / statistics.median(mid) if mid and end else None

    by_kind = {}
    for _, transport, kind, code, latency in results.rows:
        k = by_kind.setdefault(f"{transport} {kind}", {"count": 0, "codes": {}, "latencies": []})
        k["count"] += 1
        k["codes"][code] = k["codes"].get(code, 0) + 1
        k["latencies"].append(latency)

    def pct(values, p):
        values = sorted(values)
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

    table = []
    for name, k in sorted(by_kind.items()):
        lat = k.pop("latencies")
        k.update(p50_ms=round(pct(lat, 50) * 1000, 1), p95_ms=round(pct(lat, 95) * 1000, 1), p99_ms=round(pct(lat, 99) * 1000, 1), max_ms=round(max(lat) * 1000, 1))
        table.append((name, k))
    all_lat = [r[4] for r in results.rows]
    report = {
        "seconds": args.seconds,
        "requests": len(results.rows),
        "unanswered": results.unanswered,
        "daemon_alive": alive,
        "rss_kb": {"first": samples[0][1] if samples else None, "mid_median": statistics.median(mid) if mid else None,
                   "end_median": statistics.median(end) if end else None, "max": max(kb for _, kb in samples) if samples else None,
                   "growth_second_half": growth},
        "latency_ms_all": {"p50": round(pct(all_lat, 50) * 1000, 1), "p95": round(pct(all_lat, 95) * 1000, 1), "p99": round(pct(all_lat, 99) * 1000, 1)},
        "by_kind": dict(table),
        "rss_samples": samples,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)

    print(f"{'request':<24} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  codes")
    for name, k in table:
        codes = ", ".join(f"{c} {n}" for c, n in sorted(k["codes"].items()))
        print(f"{name:<24} {k['count']:>6} {k['p50_ms']:>8} {k['p95_ms']:>8} {k['p99_ms']:>8}  {codes}")
    r = report["rss_kb"]
    print(f"requests {len(results.rows)} in {args.seconds:.0f} s ({len(results.rows) / args.seconds:.1f}/s), unanswered {len(results.unanswered)}, daemon alive {alive}")
    print(f"RSS first {r['first']} kB, mid {r['mid_median']} kB, end {r['end_median']} kB, max {r['max']} kB, second-half growth {growth * 100 if growth is not None else float('nan'):.2f} %")
    ok = alive and not results.unanswered and growth is not None and growth < 0.05
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
