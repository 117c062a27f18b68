#!/usr/bin/env bash
# Fleet simulation sweep: N simulated devices share work through one private Mosquitto (MQTT 5
# shared subscription), then crash scenarios. Each scenario gets a fresh broker. See README.md.
#
#   bench/fleet_sim/run.sh                 # the sweep + failure scenarios, table at the end
#   bench/fleet_sim/run.sh -- ARGS...      # one run of fleet_sim.py with ARGS (broker started for it)
#
# Environment: PYTHON (default .venv-soak/bin/python, needs paho-mqtt 2.x), NODES (sweep sizes),
# DURATION (s per run, default 12), SERVICE_MS (second sweep, default 20), LOAD (offered load as a share
# of the fleet's capacity, default 0.6), MAX_RATE (cap on the offered rate, default 2000/s: the simulator's
# own CPU), TCP_NODELAY (broker set_tcp_nodelay, default true).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-$PWD/.venv-soak/bin/python}
sim=bench/fleet_sim/fleet_sim.py
nodes=${NODES:-10 50 100 200 300}
duration=${DURATION:-12}
service=${SERVICE_MS:-20}
load=${LOAD:-0.6}
max_rate=${MAX_RATE:-2000}
work=$(mktemp -d)
broker=
stop_broker() { [ -z "$broker" ] || { kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null || true; broker=; }; }
trap 'stop_broker; rm -rf "$work"' EXIT

# Broker settings, stated: defaults for per-client windows (max_inflight_messages 20: at most 20
# unacknowledged QoS 1 messages on their way to one client; max_queued_messages 1000 beyond that),
# no persistence, Nagle off on broker sockets.
start_broker() {
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 20
max_queued_messages 1000
set_tcp_nodelay ${TCP_NODELAY:-true}
max_connections -1
log_dest stderr
log_type error
log_type warning
log_type notice
CONF
  : > "$work/mosquitto.log"
  mosquitto -c "$work/mosquitto.conf" 2>>"$work/mosquitto.log" &
  broker=$!
  for _ in $(seq 50); do
    kill -0 "$broker" 2>/dev/null || break
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "mosquitto did not start:" >&2; cat "$work/mosquitto.log" >&2; exit 1
}

sim() {  # sim LABEL ARGS...: one run on a fresh broker; its ROW line goes to the table
  local label=$1; shift
  start_broker
  "$py" "$sim" --port "$port" --broker-pid "$broker" --label "$label" "$@" | tee -a "$work/out"
  stop_broker
  # The broker's own notices, less the routine connect/disconnect lines, counted by kind.
  grep -v -e 'New connection' -e 'New client' -e 'closed its connection' -e 'mosquitto version' -e 'Opening ipv' \
      -e 'Config loaded' -e 'disconnected\.$' "$work/mosquitto.log" | cut -d' ' -f2- \
    | sed -E 's/edgeinferd-sim-[0-9]+-fleet/edgeinferd-sim-N-fleet/; s/fleet-sim-[0-9]+-[0-9]+/fleet-sim-CLIENT/; s/[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+/ADDR/' \
    | sort | uniq -c | sed 's/^/   broker log: /' | head -8 || true
}

if [ "${1:-}" = "--" ]; then
  shift; sim one "$@"; exit
fi

ulimit -n 4096 2>/dev/null || true
echo "# bench/fleet_sim/run.sh $* ($(date -u +%Y-%m-%dT%H:%MZ)); $(mosquitto -h | head -1); $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); $("$py" -c 'import sys, paho.mqtt; print(f"python {sys.version.split()[0]}, paho-mqtt {paho.mqtt.__version__}")')"
echo "# broker: max_inflight_messages 20, max_queued_messages 1000 (the defaults), set_tcp_nodelay ${TCP_NODELAY:-true}, persistence false; one fresh broker per run"
echo "# devices: capacity 1 running + 2 waiting, max_hops 3, back-pressure by UNSUBSCRIBE (the design the daemon does not use; --backpressure unsubscribe) except in the *-fwd runs, which are the daemon protocol (forward, the default), service time fixed (exponential where a run says exp); clients: Poisson arrivals (open loop), 4 connections, 5 s answer timeout"
d="--duration $duration"
# 1. Sweep at a realistic service time: 100 ms ~ the DINOv2-S/14 model call on this machine
#    (106.75 ms p50, bench/results/mqtt-overhead-2core.txt); offered load 0.6 of the fleet's capacity.
for n in $nodes; do sim sweep-100ms --nodes "$n" --service-ms 100 --load "$load" --max-rate "$max_rate" $d --backpressure unsubscribe; done
# 2. Sweep at the simulator's default 20 ms; the offered rate is capped (the simulator's own CPU).
for n in $nodes; do sim sweep-20ms --nodes "$n" --service-ms "$service" --load "$load" --max-rate "$max_rate" $d --backpressure unsubscribe; done
# 2b. Real-size requests: the 220,782-byte image of bench/results/mqtt-overhead-2core.txt (chelsea.png) as payload.
sim payload-220k --nodes 100 --service-ms 100 --load "$load" --payload-bytes 220782 $d --backpressure unsubscribe
# 3. Saturation: 1.5x what 10 devices can serve; then a closed loop keeping exactly their capacity busy.
sim overload --nodes 10 --service-ms "$service" --load 1.5 $d --backpressure unsubscribe
sim overload+fix --nodes 10 --service-ms "$service" --load 1.5 --retry-nosub-ms 10 --forward-nosub-busy $d --backpressure unsubscribe
sim closed --nodes 10 --service-ms "$service" --concurrency 30 $d --backpressure unsubscribe
# 3b. The same with the other back-pressure (docs/fleet.md's current design): members never unsubscribe,
#     a full member passes the request on (up to max_hops), then answers busy.
sim overload-fwd --nodes 10 --service-ms "$service" --load 1.5 $d
sim closed-fwd --nodes 10 --service-ms "$service" --concurrency 30 $d
# 4. Crashes: SIGKILL k devices mid-run (sockets close: the broker notices at once); the survivors can carry the
#    load. Exponential service times, so that the victims' state at the kill varies; three seeds where cheap.
for seed in 1 2 3; do
  sim kill-1-of-3/$seed --nodes 3 --service-ms "$service" --service-dist exp --load 0.5 --kill 1 --kill-at 8 --duration 16 --seed $seed --backpressure unsubscribe
done
for seed in 1 2 3; do
  sim kill-1-of-3-fwd/$seed --nodes 3 --service-ms "$service" --service-dist exp --load 0.5 --kill 1 --kill-at 8 --duration 16 --seed $seed
done
for seed in 1 2 3; do
  sim kill-10-of-100/$seed --nodes 100 --service-ms 100 --service-dist exp --load "$load" --kill 10 --kill-at 8 --duration 16 --seed $seed --backpressure unsubscribe
done
sim kill-10-of-100-fwd --nodes 100 --service-ms 100 --service-dist exp --load "$load" --kill 10 --kill-at 8 --duration 16
sim kill-30-of-300 --nodes 300 --service-ms 100 --service-dist exp --load "$load" --kill 30 --kill-at 8 --duration 16 --backpressure unsubscribe
# 5. Silent death: SIGSTOP 10 of 100 (sockets stay open); the broker notices from the keep-alive (5 s, then 2 s).
sim hang-10-of-100 --nodes 100 --service-ms 100 --load "$load" --kill 10 --kill-at 4 --hang --keepalive 5 --duration 16 --backpressure unsubscribe
sim hang-ka2 --nodes 100 --service-ms 100 --load "$load" --kill 10 --kill-at 4 --hang --keepalive 2 --duration 16 --backpressure unsubscribe
# 6. The broker alone: keep-alive detection for several keep-alives; retained status topics for many nodes;
#    whether it keeps to a subscriber's Receive Maximum.
start_broker
"$py" bench/fleet_sim/receive_max_probe.py --port "$port" --receive-max 1,3,10
"$py" bench/fleet_sim/keepalive_probe.py --port "$port" --keepalives 1,2,3,5,10
"$py" bench/fleet_sim/retained_probe.py --port "$port" --counts 500,1000,2000,5000
stop_broker

echo
echo "## Table. thr: answered ok/s after the warm-up; p50/p99: latency ms; min/max: requests served per surviving node;"
echo "## busy: busy answers; fwd: forwards; lost: never answered (nosub: of those, dropped by the broker with PUBACK 0x10"
echo "## 'no matching subscribers'); dup: duplicate answers; unsub: back-pressure UNSUBSCRIBEs; broker/sim/other: CPU, % of one core"
echo "## (other = the rest of the machine: anything above ~5 means another job competed). Crash rows: will_ms: kill -> last"
echo "## offline will; lostsent_ms: send times of the lost requests relative to the kill; thr90_ms: kill -> answered-ok/s,"
echo "## in sliding windows of window_s seconds, back to >= 90 % of the pre-kill rate for good."
"$py" - "$work/out" <<'PY'
import sys
rows = [l.split()[1:] for l in open(sys.argv[1]) if l.startswith("ROW ")]
rows = [[r[0]] + [kv.split("=", 1) for kv in r[1:]] for r in rows]
keys = []
for r in rows:
    keys += [k for k, _ in r[1:] if k not in keys]
table = [["run"] + keys] + [[r[0]] + [dict(r[1:]).get(k, "") for k in keys] for r in rows]
width = [max(len(row[i]) for row in table) for i in range(len(keys) + 1)]
for row in table:
    print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, width))).rstrip())
PY
