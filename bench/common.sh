# Sourced by the bench scripts: the real-size model they measure and the ONNX Runtime they load.
#   bench_dinov2_s DIR   generate a real-size DINOv2-S/14 (random weights) into DIR once. Needs the
#                        export environment (torch, transformers): EXPORT_PYTHON, or .venv-export
#                        is created (downloads ~5 GB of torch wheels).
#   bench_llama_135m DIR [plain|gqa]  the same for a SmolLM-135M-sized LLaMA, with the fixture's
#                        tokenizer (gqa: export_llama.py --attention gqa, the GenAI layout).
#   bench_llama_135m_hf PYTHON  that LLaMA as a Hugging Face checkpoint (bench/out/llama-135m-hf).
#   bench_genai_folder PYTHON PRECISION DIR  the ORT-GenAI builder's folder of that checkpoint.
#   bench_ort            ORT_DYLIB_PATH := the newest onnxruntime wheel's library (.venv).
#   bench_export SCRIPT ARGS...  run a models/export script in that environment.
#   bench_cuda_libs PYTHON...  put the CUDA / cuDNN libraries of pip's nvidia-* wheels (in those
#                        Pythons' site-packages) on LD_LIBRARY_PATH, for onnxruntime-gpu.
#   bench_alternate ROUNDS RESULTS A B  run commands A and B (each printing JSON lines) ROUNDS
#                        times, in fresh processes, the order swapped every round so a slow spell
#                        of the VM hits both; each line gets "round" and is appended to RESULTS.
#   bench_rotate ROUNDS RESULTS A B C...  the same for any number of commands, the order rotated
#                        by one every round.
bench_export() {
  local py=${EXPORT_PYTHON:-}
  if [ -z "$py" ]; then
    [ -x "$root/.venv-export/bin/python" ] || python3 -m venv "$root/.venv-export"
    "$root/.venv-export/bin/python" -m pip install -q -r "$root/models/export/requirements.txt"
    py=$root/.venv-export/bin/python
  fi
  (cd "$root/models/export" && "$py" "$@")
}

bench_dinov2_s() {
  [ -f "$1/model.onnx" ] || bench_export export_dinov2.py --random-weights --size small --out "$1"
}

bench_llama_135m() {
  [ -f "$1/model.onnx" ] || bench_export export_llama.py --random-weights --attention "${2:-plain}" --out "$1"
  # The random-weight LLM has no tokenizer of its own: the fixture's stands in (token ids only are
  # benchmarked; ids it cannot spell are skipped when decoding).
  cp "$root/models/fixtures/llama/tokenizer.json" "$root/models/fixtures/llama/tokenizer_config.json" "$1/"
}

# bench_llama_135m_hf PYTHON: the SmolLM-135M-sized LLaMA with random weights as a Hugging Face
# checkpoint (bench/out/llama-135m-hf, with the fixture's tokenizer), unless there is one already
# (PYTHON: with torch and transformers). The GenAI folders and llama.cpp's GGUF are built from it.
bench_llama_135m_hf() {
  local py=$1 hf=$root/bench/out/llama-135m-hf
  [ -f "$hf/config.json" ] && return 0
  "$py" - "$hf" <<'PY'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                     rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
LlamaForCausalLM(config).save_pretrained(sys.argv[1])
PY
  cp "$root/models/fixtures/llama/tokenizer.json" "$root/models/fixtures/llama/tokenizer_config.json" "$hf/"
}

# bench_genai_folder PYTHON PRECISION DIR: the ORT-GenAI model builder's folder (-p PRECISION -e
# cpu) of that checkpoint, unless DIR has one already (PYTHON: with onnxruntime-genai 0.18.0,
# torch and transformers).
bench_genai_folder() {
  local py=$1 precision=$2 folder=$3
  [ -f "$folder/genai_config.json" ] && return 0
  bench_llama_135m_hf "$py"
  "$py" -m onnxruntime_genai.models.builder -i "$root/bench/out/llama-135m-hf" -o "$folder" -p "$precision" -e cpu \
    -c "$root/bench/out/genai-cache"
}

bench_ort() {
  source "$root/scripts/ort-env.sh"
  ort_venv "$root/.venv" "onnxruntime==1.32.0"
  export ORT_DYLIB_PATH=$ORT_LIB
}

bench_cuda_libs() {
  local find_libs='import glob, os, site
for sp in site.getsitepackages():
    for d in sorted(set(os.path.dirname(f) for f in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True))):
        print(d)'
  local libdirs="" p
  for p in "$@"; do
    if command -v "$p" >/dev/null 2>&1; then
      libdirs="$libdirs:$("$p" -c "$find_libs" 2>/dev/null | paste -sd: - || true)"
    fi
  done
  export LD_LIBRARY_PATH="${libdirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

bench_rotate() {
  local rounds=$1 results=$2 round i n
  shift 2
  local commands=("$@")
  n=${#commands[@]}
  for round in $(seq 1 "$rounds"); do
    for i in $(seq 0 $((n - 1))); do
      ${commands[$(((i + round - 1) % n))]}
    done | sed "s/^{/{\"round\": $round, /" | tee -a "$results"
  done
}

bench_alternate() {
  local rounds=$1 results=$2 a=$3 b=$4 round
  for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) = 1 ]; then { $a; $b; }; else { $b; $a; }; fi |
      sed "s/^{/{\"round\": $round, /" | tee -a "$results"
  done
}
