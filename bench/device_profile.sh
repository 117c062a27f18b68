#!/usr/bin/env bash
# Size and speed of two builds of the `edgeinfer` binary (e.g. the device profile at opt-level 3
# and at "s"), in alternating rounds: DINOv2-S/14 (224 px) through `edgeinfer check` on tract and
# on ONNX Runtime (median of its timed runs), and a LLaMA-135M greedy generation on tract through
# `edgeinfer local` (its decode tokens/s). Prints each build's stripped size and the ratios B/A.
#
#   bench/device_profile.sh A_BIN B_BIN [--rounds N]
# Models: bench/out/dinov2-s and bench/out/llama-135m (made by bench/variants.sh or pipelines.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
a=$1 b=$2; shift 2
rounds=3
[ "${1:-}" = "--rounds" ] && rounds=$2
source bench/common.sh
bench_ort
out=$root/bench/out
results=$(mktemp)
trap 'rm -f "$results"' EXIT
measure() { # name binary
  local name=$1 bin=$2
  "$bin" check "$out/dinov2-s/model.onnx" --backend tract,ort --dim batch_size=1 --dim height=224 --dim width=224 \
    --runs 10 --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
for t in r["targets"]:
    print(json.dumps({"build": sys.argv[1], "what": "dinov2-s " + t["target"], "ms": t["latency"]["median_ms"]}))' "$name"
  "$bin" local -m "$out/llama-135m" generate "Once upon a time" --max-new-tokens 32 --ignore-eos --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(json.dumps({"build": sys.argv[1], "what": "llama-135m decode tract", "ms": 1e3 / r["usage"]["tokens_per_second"]}))' "$name"
}
build_a() { measure A "$a"; }
build_b() { measure B "$b"; }
bench_alternate "$rounds" "$results" build_a build_b
python3 - "$results" "$a" "$b" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
a, b = sys.argv[2], sys.argv[3]
print(f"\nA = {a} ({os.path.getsize(a) / 1e6:.1f} MB), B = {b} ({os.path.getsize(b) / 1e6:.1f} MB)")
print("| | A ms | B ms | B/A |\n|---|---|---|---|")
for what in dict.fromkeys(r["what"] for r in rows):
    ms = lambda build: statistics.median(r["ms"] for r in rows if r["what"] == what and r["build"] == build)
    print(f"| {what} | {ms('A'):.1f} | {ms('B'):.1f} | {ms('B') / ms('A'):.3f} |")
PY
