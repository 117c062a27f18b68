#!/usr/bin/env bash
# What Mosquitto does with a shared subscription's QoS 1 messages when a member dies, and whether
# it skips a member with no room. Members are paho clients (member.py) with manual acks; "A" is
# killed with SIGKILL (the broker sees the socket close, as for a crash). Prints who got what.
# Usage: bench/mosquitto_shared/run.sh   (needs mosquitto, mosquitto_pub, a Python with paho-mqtt:
# PYTHON=..., default .venv-soak from scripts/test.sh)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$here/../../.venv-soak/bin/python}
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$work/m.conf"
echo "# $(mosquitto -h 2>&1 | head -1); $(date -u +%F)"
broker() { mosquitto -c "$work/m.conf" >/dev/null 2>&1 & MP=$!; sleep 0.5; }
pub() { for m in "$@"; do mosquitto_pub -p "$port" -V 5 -q 1 -t t -m "$m"; done; }
show() { echo "  A: $(grep -o 'got [a-z0-9]*' "$work/a.log" | cut -c5- | tr '\n' ' ')"; echo "  B: $(grep -o 'got [a-z0-9]*' "$work/b.log" | cut -c5- | tr '\n' ' ')"; }

for expiry in 3600 0; do
  broker
  "$PY" "$here/member.py" "$port" A "$expiry" noack > "$work/a.log" & A=$!
  "$PY" "$here/member.py" "$port" B 0 ack > "$work/b.log" & B=$!
  sleep 1; pub pre1 pre2 pre3 pre4; sleep 0.5
  kill -9 $A; sleep 0.5
  pub post1 post2 post3 post4 post5 post6; sleep 1
  echo "== A (session expiry $expiry s, never acks) killed after pre1-4; post1-6 published while it is dead"
  show
  "$PY" "$here/member.py" "$port" A "$expiry" ack > "$work/a.log" & A2=$!; sleep 1
  echo "  A after restarting: $(grep -o 'got [a-z0-9]*' "$work/a.log" | cut -c5- | tr '\n' ' ')"
  kill $A2 $B $MP; wait 2>/dev/null; sleep 0.3
done

broker
"$PY" "$here/member.py" "$port" A 0 noack 1 > "$work/a.log" & A=$!
"$PY" "$here/member.py" "$port" B 0 ack > "$work/b.log" & B=$!
sleep 1; pub m1 m2 m3 m4 m5 m6 m7 m8; sleep 1
echo "== A has Receive Maximum 1 and never acks; m1-8 published"
show
kill -9 $A; kill $B $MP; wait 2>/dev/null
