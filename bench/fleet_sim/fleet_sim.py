#!/usr/bin/env python3
"""Fleet simulator: N simulated edgeinferd devices share fleet work through one MQTT broker.

Each device ("node" sim-<i>) follows the fleet protocol of the daemon (README.md): one MQTT 5
connection `edgeinferd-<node>-fleet` (clean start, session expiry 0, manual acks), a QoS 1 shared
subscription `$share/<group>/edgeinfer/fleet/models/<model>/#`, a capacity of 1 running +
queue_depth waiting, and requests that arrive while full forwarded (hops + 1) or, at max_hops,
answered `busy`. With --backpressure unsubscribe (the design measured and rejected) a full device
also UNSUBSCRIBEs and SUBSCRIBEs again below capacity. Inference is a timer.

    fleet_sim.py --port P --nodes N [--rate R | --concurrency C] [--kill K --kill-at T] ...

Devices run in worker processes (`devices` sub-command, one selector loop each hosting many paho
clients); the victims of --kill share one process of their own, SIGKILLed at --kill-at, so the
broker sees their sockets close without DISCONNECT, like a crash (or SIGSTOPped with --hang: sockets
open, silent, like a device that lost power or network). The load generator runs in this process. Prints the run's figures and a one-line `ROW` for run.sh's table.
"""
import argparse
import bisect
import heapq
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOPS = "edgeinfer-hops"
NO_MATCHING_SUBSCRIBERS = 16  # PUBACK reason code 0x10
STATUS = "edgeinfer/{}/status"


class Loop:
    """One thread, many paho clients: a selector over their sockets and a timer heap."""

    def __init__(self, nodelay=True):
        self.nodelay = nodelay
        self.sel = selectors.DefaultSelector()
        self.timers = []
        self.seq = 0
        self.dirty = set()     # clients with packets queued to write
        self.blocked = set()   # clients whose socket is registered for EVENT_WRITE
        self.clients = []

    def connect(self, client, port, keepalive, props):
        client.on_socket_register_write = lambda c, _u, _s: self.dirty.add(c)
        client.on_socket_close = lambda c, _u, s: self._forget(c, s)
        client.connect("127.0.0.1", port, keepalive=keepalive, clean_start=True, properties=props)
        if self.nodelay:  # paho leaves Nagle on; small PUBLISH + PUBACK pairs would wait for delayed ACKs
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sel.register(client.socket(), selectors.EVENT_READ, client)
        self.clients.append(client)
        self.dirty.add(client)

    def _forget(self, client, sock):
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        self.dirty.discard(client)
        self.blocked.discard(client)

    def call_at(self, when, fn, *args):
        self.seq += 1
        heapq.heappush(self.timers, (when, self.seq, fn, args))

    def _flush(self):
        while self.dirty:
            c = self.dirty.pop()
            if c.socket() is None:
                continue
            c.loop_write()
            want = c.want_write()
            if want and c not in self.blocked:
                self.blocked.add(c)
                self.sel.modify(c.socket(), selectors.EVENT_READ | selectors.EVENT_WRITE, c)
            elif not want and c in self.blocked:
                self.blocked.discard(c)
                self.sel.modify(c.socket(), selectors.EVENT_READ, c)

    def run(self, stop):
        next_misc = time.monotonic() + 1
        while not stop():
            self._flush()
            now = time.monotonic()
            timeout = min(self.timers[0][0] - now, 1.0) if self.timers else 1.0
            for key, ev in self.sel.select(max(timeout, 0)):
                c = key.data
                if ev & selectors.EVENT_READ and c.socket() is not None:
                    c.loop_read()
                if ev & selectors.EVENT_WRITE and c.socket() is not None:
                    self.dirty.add(c)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, fn, args = heapq.heappop(self.timers)
                fn(*args)
            if now >= next_misc:
                next_misc = now + 1
                for c in self.clients:
                    c.loop_misc()


def publish(client, topic, payload, corr=None, response=None, user=None):
    props = Properties(PacketTypes.PUBLISH)
    if response is not None:
        props.ResponseTopic = response
    if corr is not None:
        props.CorrelationData = corr
    if user:
        props.UserProperty = user
    return client.publish(topic, payload, qos=1, properties=props).mid


# ------------------------------------------------------------------ devices


class Device:
    def __init__(self, loop, cfg, node, rng):
        self.loop, self.cfg, self.node, self.rng = loop, cfg, node, rng
        self.capacity = 1 + cfg["queue_depth"]
        self.filter = f"$share/{cfg['group']}/edgeinfer/fleet/models/{cfg['model']}/#"
        self.pending = 0           # accepted, not yet answered: running + waiting
        self.waiting = deque()
        self.running = False
        self.subscribed = False
        self.forwards = {}         # mid of a forward in flight -> the request
        self.stats = dict(served=0, forwarded=0, busy=0, unsubscribes=0, subscribes=0, forward_nosub=0)
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgeinferd-{node}-fleet",
                                      protocol=mqtt.MQTTv5)
        c.manual_ack_set(True)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.will_set(STATUS.format(node), json.dumps({"state": "offline", "node": node}), qos=1, retain=True)
        c.on_connect = self.on_connect
        c.on_message = self.on_message
        c.on_publish = self.on_publish
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        if cfg["receive_max"]:
            props.ReceiveMaximum = cfg["receive_max"]
        loop.connect(c, cfg["port"], cfg["keepalive"], props)

    def subscribe(self):
        self.subscribed = True
        self.stats["subscribes"] += 1
        self.client.subscribe(self.filter, options=SubscribeOptions(qos=1, noLocal=False))

    def on_connect(self, client, _u, _flags, rc, _props):
        if rc.is_failure:
            sys.exit(f"{self.node}: connect refused: {rc}")
        self.subscribe()
        client.publish(STATUS.format(self.node), json.dumps({"state": "online", "node": self.node}), qos=1, retain=True)

    def on_publish(self, _c, _u, mid, rc, _props):
        msg = self.forwards.pop(mid, None)
        if msg is not None and rc.value == NO_MATCHING_SUBSCRIBERS:
            self.stats["forward_nosub"] += 1  # the broker dropped the forward: every member was full
            if self.cfg["forward_nosub_busy"]:
                self.stats["busy"] += 1
                self.reply(msg, {"error": {"code": "busy", "message": "no fleet member has room"}})

    def reply(self, msg, body):
        p = msg.properties
        corr = getattr(p, "CorrelationData", None)
        publish(self.client, p.ResponseTopic, json.dumps(dict(done=True, node=self.node, **body)), corr=corr)

    def on_message(self, client, _u, msg):
        user = getattr(msg.properties, "UserProperty", [])
        hops = int(next((v for k, v in user if k == HOPS), 0))
        if self.pending < self.capacity:
            self.pending += 1
            self.waiting.append((msg, hops))
            if self.pending >= self.capacity and self.subscribed and self.cfg["backpressure"] == "unsubscribe":
                self.subscribed = False
                self.stats["unsubscribes"] += 1
                client.unsubscribe(self.filter)
            self.start_next()
            return
        # Full: with --backpressure unsubscribe, the broker sent this before our UNSUBSCRIBE took effect.
        if hops >= self.cfg["max_hops"]:
            self.stats["busy"] += 1
            self.reply(msg, {"error": {"code": "busy", "message": f"fleet saturated after {hops} hops"}})
        else:
            self.stats["forwarded"] += 1
            user = [(k, v) for k, v in user if k != HOPS] + [(HOPS, str(hops + 1))]
            p = msg.properties
            mid = publish(client, msg.topic, msg.payload, corr=getattr(p, "CorrelationData", None),
                          response=getattr(p, "ResponseTopic", None), user=user)
            self.forwards[mid] = msg
        client.ack(msg.mid, msg.qos)

    def start_next(self):
        if self.running or not self.waiting:
            return
        msg, hops = self.waiting.popleft()
        self.running = True
        s = self.cfg["service_ms"] / 1000
        if self.cfg["service_dist"] == "exp":
            s = self.rng.expovariate(1 / s)
        self.loop.call_at(time.monotonic() + s, self.finish, msg, hops)

    def finish(self, msg, hops):
        self.reply(msg, {"result": {"embedding_dim": 384, "hops": hops}})
        self.client.ack(msg.mid, msg.qos)  # PUBACK only after the reply is published
        self.stats["served"] += 1
        self.pending -= 1
        self.running = False
        if self.pending < self.capacity and not self.subscribed:
            self.subscribe()
        self.start_next()


def run_devices(cfg):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    loop = Loop(cfg["nodelay"])
    rng = random.Random(cfg["seed"])
    devices = [Device(loop, cfg, node, rng) for node in cfg["nodes"]]
    parent = os.getppid()
    loop.run(lambda: stop or os.getppid() != parent)  # SIGTERM, or the orchestrator is gone
    total = {k: sum(d.stats[k] for d in devices) for k in devices[0].stats}
    print(json.dumps(total), flush=True)


# ------------------------------------------------------------------ load generator


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def machine_busy_s():
    """CPU seconds all cores spent busy (not idle, not waiting for I/O) since boot."""
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:]]
    return (sum(t) - t[3] - t[4]) / os.sysconf("SC_CLK_TCK")


def pct(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Generator:
    """--clients connections, used in turn; each has its own reply topic (one client receiving every
    reply would hit the broker's per-client queue limit, max_queued_messages, when it lags)."""

    def __init__(self, loop, a, nodes):
        self.loop, self.a, self.nodes = loop, a, nodes
        self.topic = f"edgeinfer/fleet/models/{a.model}/{a.task}"
        self.payload = json.dumps({"task": a.task, "image": "x" * a.payload_bytes}).encode()
        self.rng = random.Random(a.seed)
        self.sent = []            # first send time, by sequence number
        self.answer = {}          # seq -> (t, node, ok, hops)
        self.mid_seq = {}         # (client index, mid) -> seq
        self.nosub = set()        # dropped by the broker (PUBACK 0x10) and not retried
        self.nosub_events = 0
        self.reaped = set()       # closed loop: timed out, slot reused
        self.dups = self.late = 0
        self.online, self.offline = set(), {}
        self.sending = False
        self.outstanding = 0
        self.clients, self.reply_topics = [], []
        for i in range(a.clients):
            name = f"fleet-sim-{os.getpid()}-{i}"
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5, userdata=i)
            c.max_inflight_messages_set(65535)
            c.max_queued_messages_set(0)
            topics = [(f"edgeinfer/replies/{name}", 1)] + ([(STATUS.format("+"), 1)] if i == 0 else [])
            c.on_connect = lambda cl, _u, _f, _rc, _p, topics=topics: cl.subscribe(topics)
            c.on_message = self.on_message
            c.on_publish = self.on_publish
            loop.connect(c, a.port, 60, Properties(PacketTypes.CONNECT))
            self.clients.append(c)
            self.reply_topics.append(f"edgeinfer/replies/{name}")

    def send(self, seq=None):
        if seq is None:
            seq = len(self.sent)
            self.sent.append(time.monotonic())
            self.outstanding += 1
        i = seq % len(self.clients)
        mid = publish(self.clients[i], self.topic, self.payload, corr=seq.to_bytes(8, "big"),
                      response=self.reply_topics[i])
        self.mid_seq[(i, mid)] = seq

    def on_publish(self, _c, i, mid, rc, _props):
        seq = self.mid_seq.pop((i, mid), None)
        if seq is None or rc.value != NO_MATCHING_SUBSCRIBERS:
            return
        self.nosub_events += 1  # the broker dropped it: no member of the group was subscribed
        if self.a.retry_nosub_ms and time.monotonic() - self.sent[seq] < self.a.timeout:
            self.loop.call_at(time.monotonic() + self.a.retry_nosub_ms / 1000, self.send, seq)
        else:
            self.nosub.add(seq)
            self.done_one()

    def on_message(self, _c, _i, msg):
        now = time.monotonic()
        if msg.topic.endswith("/status"):
            if msg.payload:
                st = json.loads(msg.payload)
                if st["state"] == "online":
                    self.online.add(st["node"])
                elif st["node"] not in self.offline:
                    self.offline[st["node"]] = now
            return
        seq = int.from_bytes(msg.properties.CorrelationData, "big")
        if seq in self.answer:
            self.dups += 1
            return
        body = json.loads(msg.payload)
        ok = "result" in body
        self.answer[seq] = (now, body["node"], ok, body["result"]["hops"] if ok else -1)
        if seq in self.reaped:
            self.late += 1
        else:
            self.done_one()

    def done_one(self):
        self.outstanding -= 1
        if self.sending and self.a.concurrency:
            self.send()

    def open_loop(self, due):
        if not self.sending:
            return
        now = time.monotonic()
        for _ in range(100):  # catch up, but let the loop read in between
            if due > now:
                break
            self.send()
            due += self.rng.expovariate(self.a.rate) if self.a.arrivals == "poisson" else 1 / self.a.rate
        self.loop.call_at(due, self.open_loop, due)

    def closed_loop_reaper(self):
        """Closed loop: a request unanswered after --timeout frees its slot."""
        if not self.sending:
            return
        cutoff = time.monotonic() - self.a.timeout
        while self.reap_from < len(self.sent) and self.sent[self.reap_from] < cutoff:
            s = self.reap_from
            if s not in self.answer and s not in self.nosub:
                self.reaped.add(s)
                self.done_one()
            self.reap_from += 1
        self.loop.call_at(time.monotonic() + 0.1, self.closed_loop_reaper)


def spawn(a, nodes, seed):
    cfg = dict(port=a.port, nodes=nodes, group=a.group, model=a.model, queue_depth=a.queue_depth, max_hops=a.max_hops,
               service_ms=a.service_ms, service_dist=a.service_dist, keepalive=a.keepalive,
               receive_max=a.receive_max, backpressure=a.backpressure, forward_nosub_busy=a.forward_nosub_busy, nodelay=not a.nagle, seed=seed)
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "devices", json.dumps(cfg)],
                            stdout=subprocess.PIPE, text=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "devices":
        return run_devices(json.loads(sys.argv[2]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--label", default="run")
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--procs", type=int, default=2, help="worker processes for the surviving devices")
    p.add_argument("--group", default="edgeinfer")
    p.add_argument("--model", default="dino")
    p.add_argument("--task", default="embed")
    p.add_argument("--service-ms", type=float, default=20.0)
    p.add_argument("--service-dist", choices=["fixed", "exp"], default="fixed")
    p.add_argument("--queue-depth", type=int, default=2)
    p.add_argument("--max-hops", type=int, default=3)
    p.add_argument("--keepalive", type=int, default=30)
    p.add_argument("--receive-max", type=int, default=0, help="CONNECT Receive Maximum of devices (0: unset)")
    p.add_argument("--backpressure", choices=["forward", "unsubscribe"], default="forward",
                   help="stay subscribed and forward what a full device cannot take (the daemon's protocol), "
                        "or unsubscribe while full (and forward what still arrives; measured and rejected)")
    p.add_argument("--forward-nosub-busy", action="store_true",
                   help="not the daemon's protocol: answer busy when the broker drops a forward (PUBACK 0x10)")
    p.add_argument("--rate", type=float, default=0, help="open loop: requests/s offered")
    p.add_argument("--load", type=float, default=0, help="open loop: rate = load x nodes x 1000/service-ms")
    p.add_argument("--max-rate", type=float, default=1e9, help="cap on the rate --load computes")
    p.add_argument("--arrivals", choices=["poisson", "uniform"], default="poisson")
    p.add_argument("--concurrency", type=int, default=0, help="closed loop: requests kept outstanding")
    p.add_argument("--payload-bytes", type=int, default=200)
    p.add_argument("--clients", type=int, default=4, help="load generator connections")
    p.add_argument("--retry-nosub-ms", type=float, default=0,
                   help="client re-publishes a request the broker dropped for want of subscribers (0: never)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of sending")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds not counted in throughput/latency")
    p.add_argument("--timeout", type=float, default=5.0, help="no answer after this: lost")
    p.add_argument("--kill", type=int, default=0, help="devices to SIGKILL at --kill-at")
    p.add_argument("--kill-at", type=float, default=8.0)
    p.add_argument("--hang", action="store_true",
                   help="SIGSTOP the victims instead: sockets stay open, the broker notices after 1.5 x keep-alive")
    p.add_argument("--broker-pid", type=int, default=0, help="to report the broker's CPU")
    p.add_argument("--nagle", action="store_true", help="leave Nagle on in the simulated clients (paho's default)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.load:
        a.rate = min(a.load * a.nodes * 1000 / a.service_ms, a.max_rate)
    if bool(a.rate) == bool(a.concurrency):
        p.error("give one of --rate/--load (open loop) or --concurrency (closed loop)")

    nodes = [f"sim-{i}" for i in range(a.nodes)]
    victims, alive = nodes[:a.kill], nodes[a.kill:]
    groups = [alive[i::a.procs] for i in range(min(a.procs, len(alive)))]
    procs = [spawn(a, g, a.seed * 1000 + i) for i, g in enumerate(groups)]
    victim_proc = spawn(a, victims, a.seed * 1000 + 999) if victims else None

    loop = Loop(not a.nagle)
    gen = Generator(loop, a, nodes)
    t_wait = time.monotonic()
    deadline = t_wait + 60
    loop.run(lambda: len(gen.online) == a.nodes or time.monotonic() > deadline)
    if len(gen.online) < a.nodes:
        sys.exit(f"only {len(gen.online)}/{a.nodes} devices came online")
    t_connect = time.monotonic() - t_wait

    t0 = time.monotonic()
    all_pids = [os.getpid(), *(q.pid for q in procs)]
    cpu = {}

    def snapshot(key):
        cpu[key] = (time.monotonic(), cpu_s(a.broker_pid) if a.broker_pid else 0.0, sum(cpu_s(x) for x in all_pids),
                    machine_busy_s())

    def kill():
        cpu["kill"] = time.monotonic()
        victim_proc.send_signal(signal.SIGSTOP if a.hang else signal.SIGKILL)

    def stop_sending():
        snapshot("end")
        gen.sending = False

    gen.sending = True
    if a.concurrency:
        gen.reap_from = 0
        for _ in range(a.concurrency):
            gen.send()
        gen.closed_loop_reaper()
    else:
        gen.open_loop(t0)
    loop.call_at(t0 + a.warmup, snapshot, "warm")
    loop.call_at(t0 + a.duration, stop_sending)
    if victim_proc:
        loop.call_at(t0 + a.kill_at, kill)

    def finished():
        now = time.monotonic()
        if now < t0 + a.duration:
            return False
        return gen.outstanding <= 0 and len(gen.offline) >= len(victims) or now > t0 + a.duration + a.timeout

    loop.run(finished)

    stats = {}
    for q in procs:
        q.send_signal(signal.SIGTERM)
    for q in procs:
        out, _ = q.communicate(timeout=30)
        for k, v in json.loads(out.strip().splitlines()[-1]).items():
            stats[k] = stats.get(k, 0) + v
    if victim_proc:
        victim_proc.kill()
        victim_proc.wait()

    # ---- figures
    rel = lambda t: t - t0
    sent = len(gen.sent)
    ok = {s: v for s, v in gen.answer.items() if v[2]}
    busy = sum(1 for v in gen.answer.values() if not v[2])
    lost = [s for s in range(sent) if s not in gen.answer]
    nosub = len(gen.nosub)
    window = a.duration - a.warmup
    in_window = [v for v in ok.values() if a.warmup <= rel(v[0]) < a.duration]
    thr = len(in_window) / window
    lat = sorted((v[0] - gen.sent[s]) * 1000 for s, v in ok.items() if a.warmup <= rel(gen.sent[s]) < a.duration)
    per_node = {n: 0 for n in alive}
    for v in ok.values():
        if v[1] in per_node:
            per_node[v[1]] += 1
    forwarded_ok = sum(1 for v in ok.values() if v[3] > 0)
    w0, bcpu0, scpu0, mcpu0 = cpu["warm"]
    w1, bcpu1, scpu1, mcpu1 = cpu["end"]
    broker_cpu = 100 * (bcpu1 - bcpu0) / (w1 - w0)
    sim_cpu = 100 * (scpu1 - scpu0) / (w1 - w0)
    other_cpu = 100 * (mcpu1 - mcpu0) / (w1 - w0) - broker_cpu - sim_cpu

    mode = f"open loop {a.rate:.0f}/s {a.arrivals}" if a.rate else f"closed loop, {a.concurrency} outstanding"
    print(f"== {a.label}: {a.nodes} devices in {len(groups)} procs{' + 1 victim proc' if victims else ''}, service "
          f"{a.service_ms:g} ms {a.service_dist}, capacity 1+{a.queue_depth}, max_hops {a.max_hops}, back-pressure "
          f"{a.backpressure}, {mode}, "
          f"{a.clients} client connections, {a.duration:g} s (warm-up {a.warmup:g} s), payload {len(gen.payload)} B")
    print(f"   all online after {t_connect:.2f} s; sent {sent} ({sent / a.duration:.0f}/s); answered ok {len(ok)}, "
          f"busy {busy}; lost {len(lost)}, of which dropped by the broker with PUBACK 0x10 'no matching "
          f"subscribers' {nosub} ({gen.nosub_events} such PUBACKs); duplicates {gen.dups}; late (closed loop) {gen.late}")
    print(f"   throughput {thr:.0f}/s; latency p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms, max "
          f"{pct(lat, 1):.1f} ms; served per surviving node min {min(per_node.values())}, max "
          f"{max(per_node.values())}; answered after >= 1 forward {forwarded_ok}")
    print(f"   devices (survivors): {json.dumps(stats)}")
    print(f"   CPU in the measured window, % of one core: broker {broker_cpu:.0f}, simulator {sim_cpu:.0f}, "
          f"rest of the machine {round(other_cpu)}")
    row = dict(N=a.nodes, offered=f"{a.rate:.0f}/s" if a.rate else f"C{a.concurrency}", thr=f"{thr:.0f}",
               p50=f"{pct(lat, .5):.1f}", p99=f"{pct(lat, .99):.1f}", min=min(per_node.values()),
               max=max(per_node.values()), busy=busy, fwd=stats.get("forwarded", 0), lost=len(lost), nosub=nosub,
               dup=gen.dups, unsub=stats.get("unsubscribes", 0), broker=f"{broker_cpu:.0f}", sim=f"{sim_cpu:.0f}",
               other=f"{round(other_cpu)}")
    if victims:
        tk = cpu["kill"]
        pre_rate = sum(1 for v in ok.values() if a.warmup <= rel(v[0]) < rel(tk)) / (rel(tk) - a.warmup)
        # Rebalance, by throughput: answered-ok/s in sliding windows (W s, every 50 ms; W long enough for ~500
        # answers so that Poisson noise stays small), up to the end of sending: the end of the last window below
        # 90 % of the pre-kill rate. `never` if the last window is below.
        times = sorted(v[0] for v in ok.values())
        w = max(1.0, 500 / pre_rate)
        recover, s_ = 0.0, max(tk - w, t0 + a.warmup)
        while s_ + w <= t0 + a.duration:
            if bisect.bisect_left(times, s_ + w) - bisect.bisect_left(times, s_) < 0.9 * pre_rate * w:
                recover = None if s_ + w + 0.05 > t0 + a.duration else max(0.0, s_ + w - tk)
            s_ += 0.05
        lost_rel = [(gen.sent[s] - tk) * 1000 for s in lost]
        # Lost around the kill (sent from 1 s before it to 1 s after the last will), less the broker's no-subscriber
        # drops: roughly what was in flight or queued at the victims. Compare with the loss rate before the kill.
        detect_end = max((gen.offline.get(n, tk) for n in victims), default=tk)
        near = sum(1 for s in lost if s not in gen.nosub and tk - 1 <= gen.sent[s] <= detect_end + 1)
        before = sum(1 for s in lost if a.warmup <= rel(gen.sent[s]) < rel(tk) - 1)
        detect = [(gen.offline[n] - tk) * 1000 for n in victims if n in gen.offline]
        first_s = bisect.bisect_left(times, tk + 1) - bisect.bisect_left(times, tk)
        print(f"   {'SIGSTOP' if a.hang else 'SIGKILL'} {len(victims)} devices at {rel(tk):.2f} s: their wills arrived after "
              f"{min(detect, default=float('nan')):.0f}..{max(detect, default=float('nan')):.0f} ms; lost requests were "
              f"sent between {min(lost_rel, default=0):.0f} and {max(lost_rel, default=0):.0f} ms around the kill, "
              f"{near} of them (not dropped for want of subscribers) from 1 s before the kill to 1 s after the last "
              f"will, {before} from the warm-up to 1 s before the kill; "
              f"pre-kill {pre_rate:.0f}/s, first second after it {first_s}/s; throughput ({w:.1f} s windows) back to and "
              f"staying >= 90 % of pre-kill " + ("never" if recover is None else f"{recover * 1000:.0f} ms after the kill"))
        if os.environ.get("FLEET_SIM_DEBUG"):
            slow = sorted(((gen.sent[s] - tk) * 1000, (v[0] - gen.sent[s]) * 1000, v[1], v[3])
                          for s, v in ok.items() if v[0] - gen.sent[s] > 0.1)
            print("   debug lost (sent, ms from the kill):", sorted(round(x) for x in lost_rel))
            print("   debug slow (sent ms from the kill, latency ms, node, hops):", slow[:40], len(slow))
        row.update(killed=len(victims), lost_near_kill=near, will_ms=f"{max(detect, default=float('nan')):.0f}",
                   lostsent_ms=f"{min(lost_rel, default=0):.0f}..{max(lost_rel, default=0):.0f}",
                   thr90_ms="never" if recover is None else f"{recover * 1000:.0f}", window_s=f"{w:.1f}")
    print(f"ROW {a.label} " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
