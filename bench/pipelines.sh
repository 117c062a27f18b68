#!/usr/bin/env bash
# Pipeline benchmarks on real-size models with random weights (generated once into bench/out, not
# committed): SAM ViT-B (1024 px encoder + official decoder), DINOv2-S/14, and a SmolLM-135M-sized
# LLaMA. Runs tests/benches/pipelines.rs (criterion, tract and ort), the same work through the
# Python onnxruntime package (bench/pipelines_python.py), prints the table of ratios, then each
# model's memory: peak RSS growth while loading against its file size, and after one request.
#
#   bench/pipelines.sh [--threads N] [--only sam|dinov2|llama[,...]] [--no-rss]
# Needs the export environment for the models (EXPORT_PYTHON, see bench/common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
threads=$(nproc); only=sam,dinov2,llama; rss=true
while [ $# -gt 0 ]; do
  case $1 in
    --threads) threads=$2; shift 2;; --only) only=$2; shift 2;; --no-rss) rss=false; shift;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
out=$root/bench/out
source bench/common.sh
bench_ort
bench_dinov2_s "$out/dinov2-s"
[ -f "$out/sam-vit-b/decoder_lowres.onnx" ] ||
  bench_export export_sam.py --random-weights --model-type vit_b --parts encoder_plain,decoder,decoder_lowres \
    --out "$out/sam-vit-b"
bench_llama_135m "$out/llama-135m"

models=$(mktemp -d)
trap 'rm -rf "$models"' EXIT
ln -s "$out/sam-vit-b" "$models/sam"
ln -s "$out/dinov2-s" "$models/dinov2"
ln -s "$out/llama-135m" "$models/llama"

echo "== criterion: tests/benches/pipelines.rs ($threads threads)"
for family in ${only//,/ }; do
  rm -rf "target/criterion/$family"
  EDGEINFER_BENCH_DIR=$models EDGEINFER_BENCH_THREADS=$threads \
    cargo bench --locked -q -p edgeinfer-tests --bench pipelines -- "^$family/" 2>&1 | grep -E '^[a-z]|time:'
done

echo "== Python onnxruntime baseline and ratios"
ort_venv "$root/.venv-bench" "onnxruntime==1.32.0" "numpy==2.4.6" "pillow==13.0.0"
"$root/.venv-bench/bin/python" bench/pipelines_python.py --models "$models" --photos models/fixtures/photos \
  --criterion target/criterion --threads "$threads" --only "$only"
$rss || exit 0

echo "== memory per model, fresh process each (tests/examples/load_rss.rs): resident before loading,"
echo "   growth of the peak while loading vs the ONNX files (no double copies of weights), peak after one request"
cargo build --release --locked -q -p edgeinfer-tests --example load_rss
echo "| model | backend | ONNX files MiB | RSS before MiB | load peak growth MiB | growth / files | peak after a request MiB |"
echo "|---|---|---|---|---|---|---|"
for family in sam dinov2 llama; do
  for backend in tract ort; do
    target/release/examples/load_rss "$family" "$models/$family" "$backend"
  done
done
