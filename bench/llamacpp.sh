#!/usr/bin/env bash
# LLaMA-135M q4 decode against llama.cpp Q4_0 on the same weights, in alternating fresh-process
# rounds (the order swapped every round). The weights are the random-weight SmolLM-135M-sized
# checkpoint bench_llama_135m_hf writes (bench/out/llama-135m-hf). Three sides:
#   - llama.cpp: llama-cpp-python 0.3.36 built from source here (about 14 minutes on 2 cores, once,
#     into bench/out/venv-llamacpp; never CI), the GGUF written by llama.cpp's own converter
#     (bench/gguf_convert.py) and quantised to Q4_0 by llama.cpp's quantiser;
#   - ours on our own export of that checkpoint, q4 by models/export/quantize.py (MatMulNBits,
#     accuracy level 4: the best q4 graph our quantize step writes), in the GenAI layout
#     (export_llama.py --attention gqa, the default) or the Optimum one (--attention plain);
#   - ours on the ORT-GenAI builder's int4 folder of the same checkpoint.
#
#   bench/llamacpp.sh [--attention gqa|plain] [--rounds N] [--threads N] [--contexts 16,256] [--runs N]
# Needs GENAI_PYTHON (a Python with onnxruntime-genai 0.18.0, torch and transformers), as
# bench/genai.sh. LLAMACPP_PYTHON may name a Python that already has llama-cpp-python 0.3.36.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
attention=gqa; rounds=3; threads=$(nproc); contexts=16,256; runs=5
while [ $# -gt 0 ]; do
  case $1 in
    --attention) attention=$2; shift 2;; --rounds) rounds=$2; shift 2;; --threads) threads=$2; shift 2;;
    --contexts) contexts=$2; shift 2;; --runs) runs=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
py=${GENAI_PYTHON:?set GENAI_PYTHON to a Python with onnxruntime-genai 0.18.0, torch and transformers}
out=$root/bench/out
source bench/common.sh
bench_ort
hf=$out/llama-135m-hf
bench_llama_135m_hf "$py"
genai=$out/llama-135m-genai-int4
bench_genai_folder "$py" int4 "$genai"
own=$out/llama-135m-same; [ "$attention" = gqa ] && own=$out/llama-135m-same-gqa
if [ ! -f "$own/model_q4.onnx" ]; then
  EXPORT_PYTHON=$py bench_export export_llama.py --hf-model "$hf" --attention "$attention" --out "$own"
  EXPORT_PYTHON=$py bench_export quantize.py --family llama --dir "$own" --variants q4 --no-goldens --accuracy-level 4
fi

version=0.3.36
llamacpp=${LLAMACPP_PYTHON:-}
if [ -z "$llamacpp" ]; then
  llamacpp=$out/venv-llamacpp/bin/python
  if ! "$llamacpp" -c 'import llama_cpp' 2>/dev/null; then
    python3 -m venv "$out/venv-llamacpp"
    echo "building llama-cpp-python $version from source (about 14 minutes on 2 cores)" >&2
    "$llamacpp" -m pip install -q --no-binary llama-cpp-python "llama-cpp-python==$version"
  fi
fi
source_tree=$out/llama-cpp-python-$version
if [ ! -f "$source_tree/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
  "$llamacpp" -m pip download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$out"
  tar -xzf "$out/llama_cpp_python-$version.tar.gz" -C "$out"
  mv "$out/llama_cpp_python-$version" "$source_tree"
fi
gguf=$out/llama-135m-q4_0.gguf
if [ ! -f "$gguf" ]; then
  "$py" bench/gguf_convert.py "$source_tree/vendor/llama.cpp" "$hf" --outtype f32 --outfile "$out/llama-135m-f32.gguf"
  "$llamacpp" bench/llamacpp_decode.py --quantize "$out/llama-135m-f32.gguf" "$gguf" q4_0
  rm "$out/llama-135m-f32.gguf"
fi
cargo build --release --locked -q -p edgeinfer-tests --example llama_decode

results=$(mktemp)
trap 'rm -f "$results"' EXIT
ours() {
  VARIANT=q4 target/release/examples/llama_decode "$own" ort "$threads" "$contexts" "$runs" | sed "s/^{/{\"graph\": \"own-q4-$attention\", /"
  target/release/examples/llama_decode "$genai" ort "$threads" "$contexts" "$runs" | sed 's/^{/{"graph": "genai-int4", /'
}
theirs() { "$llamacpp" bench/llamacpp_decode.py "$gguf" "$threads" "$contexts" "$runs" | sed 's/^{/{"graph": "llamacpp", /'; }
bench_alternate "$rounds" "$results" ours theirs

for graph in "own-q4-$attention" genai-int4; do
  python3 bench/ratio_table.py "$results" graph \
    "LLaMA-135M q4 decode step ms ($threads threads): ours on ort ($graph) vs llama.cpp Q4_0, the same weights" \
    "ours ($graph)=$graph" "llama.cpp Q4_0=llamacpp" b/a "our tokens/s relative (median)" "per round"
done
