#!/usr/bin/env bash
# LLaMA-135M decode on an ORT-GenAI folder: ours (the ort backend) against onnxruntime-genai's own
# generator, on the same folder, in alternating fresh-process rounds (the order swapped every
# round). The folder is written by onnxruntime-genai's model builder from a SmolLM-135M-sized
# LLaMA with random weights (int4 by default: MatMulNBits, packed-QKV GroupQueryAttention).
#
#   bench/genai.sh [--precision int4|fp32] [--rounds N] [--threads N] [--contexts 16,256] [--runs N]
# Needs the export environment with onnxruntime-genai (GENAI_PYTHON: a Python with
# onnxruntime-genai 0.18.0, torch and transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
precision=int4; rounds=5; threads=$(nproc); contexts=16,256; runs=5
while [ $# -gt 0 ]; do
  case $1 in
    --precision) precision=$2; shift 2;; --rounds) rounds=$2; shift 2;; --threads) threads=$2; shift 2;;
    --contexts) contexts=$2; shift 2;; --runs) runs=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
py=${GENAI_PYTHON:?set GENAI_PYTHON to a Python with onnxruntime-genai 0.18.0, torch and transformers}
out=$root/bench/out
source bench/common.sh
bench_ort
folder=$out/llama-135m-genai-$precision
bench_genai_folder "$py" "$precision" "$folder"
# Both sides with the same intra-op threads.
"$py" - "$folder/genai_config.json" "$threads" <<'PY'
import json, sys
path, threads = sys.argv[1], int(sys.argv[2])
config = json.load(open(path))
config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
json.dump(config, open(path, "w"), indent=4)
PY
cargo build --release --locked -q -p edgeinfer-tests --example llama_decode

results=$(mktemp)
trap 'rm -f "$results"' EXIT
ours() { target/release/examples/llama_decode "$folder" ort "$threads" "$contexts" "$runs"; }
theirs() { "$py" bench/genai_decode.py "$folder" "$threads" "$contexts" "$runs"; }
bench_alternate "$rounds" "$results" ours theirs

python3 bench/ratio_table.py "$results" side \
  "LLaMA-135M $precision ORT-GenAI folder, decode step ms ($threads threads; ratio = genai/ours = our speed-up)" \
  "onnxruntime-genai=genai" "ours, ort=ort" a/b "tokens/s ratio (median)" "per round"
