#!/usr/bin/env bash
# LLaMA decode step, ours on the ort backend against Python onnxruntime, measured in alternation:
# each round runs both sides in fresh processes one after the other (the order swapped every
# round), so a slow spell of this VM hits both. Prints every round's ratio and the medians.
# pipelines.sh runs all of criterion before all of Python, minutes apart; on a shared VM its
# Python decode rows have moved by 50 % between runs, so use this one for decode ratios.
#
#   bench/llama_decode.sh [--rounds N] [--threads N] [--contexts 16,256,1024] [--runs N]
# Needs the export environment for the model (EXPORT_PYTHON, see bench/common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=5; threads=$(nproc); contexts=16,256,1024; runs=3
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2;; --threads) threads=$2; shift 2;;
    --contexts) contexts=$2; shift 2;; --runs) runs=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
out=$root/bench/out
source bench/common.sh
bench_ort
bench_llama_135m "$out/llama-135m"
ort_venv "$root/.venv-bench" "onnxruntime==1.32.0" "numpy==2.4.6" "pillow==13.0.0"
cargo build --release --locked -q -p edgeinfer-tests --example llama_decode

results=$(mktemp)
trap 'rm -rf "$results"' EXIT
ours() { target/release/examples/llama_decode "$out/llama-135m" ort "$threads" "$contexts" "$runs"; }
theirs() { (cd bench && "$root/.venv-bench/bin/python" llama_decode_python.py "$out/llama-135m" "$threads" "$contexts" "$runs"); }
bench_alternate "$rounds" "$results" ours theirs

python3 bench/ratio_table.py "$results" side \
  "LLaMA-135M decode step, ms ($threads threads; median over rounds; ratio = ours/Python per round)" \
  "Python ORT=python" "ours, ort=ort" b/a "ratio (median)" "ratio per round"
