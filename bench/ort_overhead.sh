#!/usr/bin/env bash
# Our ort backend against raw ONNX Runtime (the Python package, same shared library, same
# threads, same input), and tract against both, on a real-size DINOv2-S/14 with random weights
# generated here (not committed). Prints a table of ratios.
#
#   bench/ort_overhead.sh [--runs N] [--rounds R] [--threads T]
#
# Needs the export environment (torch, transformers) to generate the model once: set
# EXPORT_PYTHON to a python that has models/export/requirements.txt installed, or let the script
# create .venv-export (downloads ~5 GB of torch wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs=20; rounds=3; threads=$(nproc)
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2;; --rounds) rounds=$2; shift 2;; --threads) threads=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
out=$root/bench/out
mkdir -p "$out"

source bench/common.sh
bench_ort
py=$root/.venv/bin/python
bench_dinov2_s "$out/dinov2-s"
[ -f "$out/pixel_values.npy" ] || "$py" -c "
import numpy as np
np.save('$out/pixel_values.npy', np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))"

cargo build --release --locked -p edgeinfer-daemon --bin edgeinfer
edgeinfer=$root/target/release/edgeinfer
model=$out/dinov2-s/model.onnx
input="pixel_values=$out/pixel_values.npy"

python_medians=(); ours_medians=(); tract_medians=()
for r in $(seq "$rounds"); do
  p=$("$py" bench/ort_python.py "$model" --input "$input" --threads "$threads" --runs "$runs")
  python_medians+=("$(echo "$p" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')")
  backends=ort; [ "$r" = 1 ] && backends=ort,tract   # tract is slow: once is enough
  o=$("$edgeinfer" check "$model" --backend "$backends" --threads "$threads" --runs "$runs" --input "$input" --json)
  ours_medians+=("$(echo "$o" | "$py" -c 'import json,sys; r=json.load(sys.stdin); print([t for t in r["targets"] if t["target"]=="ort/cpu"][0]["latency"]["median_ms"])')")
  if [ "$r" = 1 ]; then
    tract_medians+=("$(echo "$o" | "$py" -c 'import json,sys; r=json.load(sys.stdin); print([t for t in r["targets"] if t["target"]=="tract"][0]["latency"]["median_ms"])')")
    echo "$o" | "$py" -c 'import json,sys; r=json.load(sys.stdin); [print("parity tract vs ort", k, "max abs %.2e" % v["max_abs"]) for t in r["targets"] for k,v in t["parity"].items()]'
  fi
done

"$py" - "$threads" "$runs" "$rounds" "${python_medians[*]}" "${ours_medians[*]}" "${tract_medians[*]}" "$(nproc)" <<'PY'
import statistics, sys
threads, runs, rounds = sys.argv[1:4]
py = [float(x) for x in sys.argv[4].split()]
ours = [float(x) for x in sys.argv[5].split()]
tract = [float(x) for x in sys.argv[6].split()]
p, o, t = statistics.median(py), statistics.median(ours), statistics.median(tract)
print()
print(f"DINOv2-S/14, 1x3x224x224, random weights; {threads} threads, {runs} runs x {rounds} rounds (median of round medians); {sys.argv[7]} cores")
print(f"{'runner':<34} {'median ms':>10} {'ratio':>8}")
print(f"{'onnxruntime (Python, baseline)':<34} {p:>10.2f} {1.0:>8.3f}")
print(f"{'edgeinfer ort backend':<34} {o:>10.2f} {o / p:>8.3f}")
print(f"{'edgeinfer tract backend':<34} {t:>10.2f} {t / p:>8.3f}")
print(f"per-round medians: python {py}, ours {ours}")
print(f"target: ort backend <= 1.02x raw ORT -> {'MET' if o / p <= 1.02 else 'NOT MET'}")
PY
