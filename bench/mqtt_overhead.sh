#!/usr/bin/env bash
# The MQTT API's cost on top of the model call: a real Mosquitto on loopback, edgeinferd (release)
# serving a real-size DINOv2-S/14 (random weights, generated once into bench/out), and
# `edgeinfer bench mqtt` measuring the model call alone vs request -> reply, then parallel clients.
#
#   bench/mqtt_overhead.sh [--backend ort|tract] [--requests N] [--concurrency C]
# Needs mosquitto, and for the model EXPORT_PYTHON (see bench/common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
backend=ort; requests=30; concurrency=4
while [ $# -gt 0 ]; do
  case $1 in
    --backend) backend=$2; shift 2;; --requests) requests=$2; shift 2;; --concurrency) concurrency=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
out=$root/bench/out
model=$out/dinov2-s
source bench/common.sh
bench_dinov2_s "$model"
bench_ort
cargo build --release --locked -q -p edgeinfer-daemon --bins
work=$(mktemp -d)
port=$((20000 + RANDOM % 40000))
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
broker=$!
cat > "$work/edgeinferd.toml" <<TOML
[daemon]
node = "bench"
[mqtt]
url = "mqtt://127.0.0.1:$port"
stats_interval_s = 0
[[models]]
id = "dino"
path = "$model"
backend = "$backend"
preload = true
keep_alive = -1
queue_depth = 2
TOML
"$root/target/release/edgeinferd" --config "$work/edgeinferd.toml" --log warn > "$work/edgeinferd.log" 2>&1 &
daemon=$!
trap 'kill $daemon $broker 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 150); do
  "$root/target/release/edgeinfer" --mqtt "mqtt://127.0.0.1:$port" --timeout 5 models >/dev/null 2>&1 && break
  sleep 0.2
done
echo "DINOv2-S/14 224x224 ($backend backend), $(nproc) cores, mosquitto on loopback"
"$root/target/release/edgeinfer" --mqtt "mqtt://127.0.0.1:$port" --timeout 300 bench mqtt --model dino \
  --model-dir "$model" --image models/fixtures/photos/chelsea.png --backend "$backend" \
  --requests "$requests" --concurrency "$concurrency"
