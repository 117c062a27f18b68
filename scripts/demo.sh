#!/usr/bin/env bash
# The main job on the embedded default: edgeinferd on the tract backend with the bundled models,
# serving on a private D-Bus session bus (started here; `dbus-daemon` is installed from Debian if
# missing) and on an MQTT broker embedded in the daemon on loopback, and the edgeinfer client doing
# a segmentation (mask PNG written), an embedding, a teach-and-classify round and a streamed
# generation through it — over D-Bus (images passed as sealed memfds), and the same over MQTT.
# Ctrl-C stops everything cleanly at any point.
#
#   ./scripts/demo.sh            # run the round trip, then stop the daemon
#   ./scripts/demo.sh --serve    # ... and keep the daemon running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
serve=false
[ "${1:-}" = "--serve" ] && serve=true

if ! command -v dbus-daemon >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing dbus-daemon (Debian package) for the private bus..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dbus-daemon >/dev/null
  else
    echo "error: the demo needs dbus-daemon: sudo apt-get install dbus-daemon" >&2
    exit 1
  fi
fi
# Wall time of a command, printed after it ("  (1.2 s)").
timed() {
  local t0=${EPOCHREALTIME/./} rc=0
  "$@" || rc=$?
  local us=$(( ${EPOCHREALTIME/./} - t0 ))
  printf '  \033[2m(%d.%01d s)\033[0m\n' $((us / 1000000)) $(((us / 100000) % 10))
  return $rc
}
echo "building edgeinferd and edgeinfer (debug; tract and ONNX Runtime backends, D-Bus, MQTT): the"
echo "first build compiles about 470 crates, roughly 12 minutes on 2 cores; later runs take seconds"
timed cargo build --locked -p edgeinfer-daemon --bins
bin=$root/target/debug
work=$(mktemp -d)
# A private session bus for the demo (never the desktop's: no name clash with a real edgeinferd).
source scripts/private-bus.sh
start_private_bus "$work"
bus=$BUS bus_pid=$BUS_PID
# A free loopback port for the embedded broker.
while :; do
  port=$((20000 + RANDOM % 40000))
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
fx=$root/models/fixtures
cat > "$work/edgeinferd.toml" <<TOML
[daemon]
node = "demo"
state_dir = "$work/state"
[mqtt]
url = "mqtt://127.0.0.1:$port"
embedded_broker = true
stats_interval_s = 0
[dbus]
enabled = true
bus = "$bus"
[[models]]
id = "sam"
path = "$fx/sam"
preload = true
keep_alive = -1
[[models]]
id = "dino"
path = "$fx/dinov2"
gallery = "gallery.json"
preload = true
[[models]]
id = "llm"
path = "$fx/llama"
TOML

"$bin/edgeinferd" --config "$work/edgeinferd.toml" > "$work/edgeinferd.log" 2>&1 &
daemon=$!
stop() {
  if kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon"
    wait "$daemon" || true
    echo "edgeinferd stopped (log: $work/edgeinferd.log)"
  fi
  kill "$bus_pid" 2>/dev/null || true
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

client() { "$bin/edgeinfer" --bus "$bus" --timeout 30 "$@"; }
mqtt_client() { "$bin/edgeinfer" --mqtt "mqtt://127.0.0.1:$port" --timeout 30 "$@"; }
step() { printf '\n\033[1m$ edgeinfer %s\033[0m\n' "$*"; }

# Ready when the daemon answers on both transports (bounded).
ready() {
  for _ in $(seq 100); do
    client models >/dev/null 2>&1 && mqtt_client models >/dev/null 2>&1 && return 0
    kill -0 "$daemon" 2>/dev/null || { cat "$work/edgeinferd.log"; exit 1; }
    sleep 0.2
  done
  echo "edgeinferd did not answer within 20 s: $work/edgeinferd.log" >&2
  exit 1
}
printf 'starting edgeinferd (models preloaded, D-Bus %s, MQTT port %s)' "$bus" "$port"
timed ready

step models
timed client models
step segment -m sam photo.png --point 100,60 --best --png mask.png
timed client segment -m sam "$fx/sam/photo.png" --point 100,60 --best --png "$work/mask.png"
step embed -m dino chelsea.png coffee.png --normalize
timed client embed -m dino "$fx/photos/chelsea.png" "$fx/photos/coffee.png" --normalize
step gallery -m dino add --label cat chelsea.png '&&' gallery add --label mug coffee.png
timed client gallery -m dino add --label cat "$fx/photos/chelsea.png"
timed client gallery -m dino add --label mug "$fx/photos/coffee.png"
step classify -m dino coffee.png
timed client classify -m dino "$fx/photos/coffee.png"
step generate -m llm '"Once upon a time"' --max-new-tokens 32
timed client generate -m llm "Once upon a time" --max-new-tokens 32
step --mqtt mqtt://127.0.0.1:$port classify -m dino coffee.png "  # the same daemon over MQTT"
timed mqtt_client classify -m dino "$fx/photos/coffee.png"
echo
echo "mask written to $work/mask.png (the models are tiny random-weight fixtures: the outputs are noise, the plumbing is real)"
if $serve; then
  echo "edgeinferd is serving on D-Bus at $bus (edgeinfer --bus $bus ...) and on mqtt://127.0.0.1:$port (node 'demo'); Ctrl-C to stop."
  wait "$daemon"
fi
