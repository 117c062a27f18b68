#!/usr/bin/env bash
# Soak: several minutes of mixed traffic at saturation against a release edgeinferd, over MQTT
# (a private Mosquitto) and D-Bus (a private dbus-daemon), loopback only, with the bundled models
# on tract. The load comes from bench/soak.py (paho-mqtt and jeepney, clients we did not write).
#
#   bench/soak.sh [SECONDS]      # default 300; writes bench/results/soak-<date>.{json,txt}
#
# Pass: no crash, every request answered (a result or a structured error), and RSS flat — under
# 5 % growth between the middle and the end of the run. The daemon's log is kept in the work
# folder printed at the start.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-300}
work=$(mktemp -d /tmp/edgeinfer-soak.XXXXXX)
echo "==> soak for ${seconds}s; work folder $work"

command -v mosquitto >/dev/null || { echo "needs mosquitto (apt-get install mosquitto)" >&2; exit 1; }
command -v dbus-daemon >/dev/null || { echo "needs dbus-daemon (apt-get install dbus-daemon)" >&2; exit 1; }
[ -x "$root/.venv-soak/bin/python" ] || python3 -m venv "$root/.venv-soak"
"$root/.venv-soak/bin/python" -m pip install -q --disable-pip-version-check "paho-mqtt==2.1.0" "jeepney==0.9.0"
cargo build --release --locked -p edgeinfer-daemon --bin edgeinferd

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n' "$port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)

cat >"$work/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$work/bus</listen>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
  <limit name="max_message_size">67108864</limit>
</busconfig>
EOF
dbus-daemon --config-file="$work/bus.conf" --nofork >"$work/dbus.log" 2>&1 &
pids+=($!)
bus="unix:path=$work/bus"

fixtures=$root/models/fixtures
cat >"$work/edgeinferd.toml" <<EOF
[daemon]
node = "soak"
state_dir = "$work/state"

[mqtt]
url = "mqtt://127.0.0.1:$port"
stats_interval_s = 5

[dbus]
enabled = true
bus = "$bus"

[[models]]
id = "sam"
path = "$fixtures/sam"
preload = true
keep_alive = -1

[[models]]
id = "dino"
path = "$fixtures/dinov2"
preload = true
keep_alive = -1
gallery = "dino-gallery.json"
gallery_max_entries = 300
micro_batch = { max_batch = 4, max_wait_ms = 10 }

[models.image_limits]
max_bytes = 2097152

[[models]]
id = "llm"
path = "$fixtures/llama"
preload = true
keep_alive = -1
EOF
for _ in $(seq 100); do [ -S "$work/bus" ] && break; sleep 0.1; done
"$root/target/release/edgeinferd" --config "$work/edgeinferd.toml" --log info >"$work/edgeinferd.log" 2>&1 &
daemon=$!
pids+=($daemon)
# Ready when its status topic says online (bounded).
timeout 60 mosquitto_sub -p "$port" -t edgeinfer/soak/status -C 1 -W 60 \
  -F '%p' | grep -q '"online"' || { echo "edgeinferd did not come online" >&2; tail -20 "$work/edgeinferd.log" >&2; exit 1; }

mkdir -p "$root/bench/results"
stamp=$(date +%Y-%m-%d)
status=0
"$root/.venv-soak/bin/python" "$root/bench/soak.py" --seconds "$seconds" --pid "$daemon" --port "$port" --bus "$bus" \
  --photos "$fixtures/photos" --out "$root/bench/results/soak-$stamp.json" | tee "$root/bench/results/soak-$stamp.txt" || status=1

kill -TERM "$daemon"
if wait "$daemon"; then echo "edgeinferd stopped cleanly" | tee -a "$root/bench/results/soak-$stamp.txt"; else
  echo "edgeinferd exited with $? on SIGTERM" | tee -a "$root/bench/results/soak-$stamp.txt"; status=1; fi
panics=$(grep -c -i 'panic' "$work/edgeinferd.log" || true)
echo "panics in the daemon log: $panics" | tee -a "$root/bench/results/soak-$stamp.txt"
[ "$panics" -eq 0 ] || status=1
{ echo "host: $(nproc) cores, $(uname -r); edgeinferd $(git -C "$root" rev-parse --short HEAD), release build, tract backend"; } >>"$root/bench/results/soak-$stamp.txt"
exit $status
