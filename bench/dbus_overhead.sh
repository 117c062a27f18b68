#!/usr/bin/env bash
# The D-Bus API's cost: a private dbus-daemon, edgeinferd (release) serving a real-size DINOv2-S/14
# (random weights, generated once into bench/out), and `edgeinfer bench dbus` measuring the model
# call alone (in-process) against EmbedFd (a 1920x1080 RGB8 frame in a sealed memfd, mapped by the
# daemon) and Embed (the same frame as a byte array), plus what a client pays to copy a frame into
# a memfd.
#
#   bench/dbus_overhead.sh [--backend ort|tract] [--requests N] [--frame WxH]
# Needs dbus-daemon, and for the model EXPORT_PYTHON (see bench/common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
backend=ort; requests=30; frame=1920x1080
while [ $# -gt 0 ]; do
  case $1 in
    --backend) backend=$2; shift 2;; --requests) requests=$2; shift 2;; --frame) frame=$2; shift 2;;
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
source scripts/private-bus.sh
start_private_bus "$work"
bus=$BUS bus_pid=$BUS_PID
cat > "$work/edgeinferd.toml" <<TOML
[daemon]
node = "bench"
[mqtt]
enabled = false
[dbus]
enabled = true
bus = "$bus"
[[models]]
id = "dino"
path = "$model"
backend = "$backend"
preload = true
keep_alive = -1
TOML
"$root/target/release/edgeinferd" --config "$work/edgeinferd.toml" --log warn > "$work/edgeinferd.log" 2>&1 &
daemon=$!
trap 'kill $daemon $bus_pid 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 150); do
  "$root/target/release/edgeinfer" --bus "$bus" --timeout 5 models >/dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { cat "$work/edgeinferd.log"; exit 1; }
  sleep 0.2
done
echo "DINOv2-S/14 224x224 ($backend backend), $(nproc) cores, private dbus-daemon"
"$root/target/release/edgeinfer" --bus "$bus" --timeout 300 bench dbus --model dino --model-dir "$model" \
  --backend "$backend" --requests "$requests" --frame "$frame"
