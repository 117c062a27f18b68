#!/usr/bin/env bash
# CUDA / TensorRT execution providers, run for real on a machine with an NVIDIA GPU.
#
# For each model — the bundled fixtures and real-size random-weight models generated here
# (DINOv2-S/14 at 224, SAM ViT-B encoder at 1024 and its decoder) — runs `edgeinfer check` on
# ORT with the CPU provider (the reference), CUDA alone, TensorRT alone, and the preference list
# tensorrt+cuda+cpu, and prints: which provider ran (node placement), median latency, and the
# largest difference from the CPU provider's outputs.
#
# Environment:
#   EDGEINFER       edgeinfer binary (default: target/release/edgeinfer, built if missing)
#   ORT_DYLIB_PATH  a GPU build of ONNX Runtime (e.g. onnxruntime-gpu's capi/libonnxruntime.so.*);
#                   default: .venv-gpu, created with `pip install onnxruntime-gpu`
#   EXPORT_PYTHON   python with torch, transformers, segment-anything (default: python3)
#   OUT             results folder (default: bench/out/gpu)
#   RUNS            timed runs per target (default: 20)
# CUDA 13 / cuDNN 9 libraries from pip's nvidia-* wheels (site-packages/nvidia/*/lib of
# EXPORT_PYTHON or .venv-gpu) are put on LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/bench/out/gpu}
runs=${RUNS:-20}
py=${EXPORT_PYTHON:-python3}
mkdir -p "$out"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  source scripts/ort-env.sh
  ort_venv "$root/.venv-gpu" "onnxruntime-gpu"
  export ORT_DYLIB_PATH=$ORT_LIB
fi
source bench/common.sh
bench_cuda_libs "$py" "$root/.venv-gpu/bin/python"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" > "$out/env.txt"

edgeinfer=${EDGEINFER:-$root/target/release/edgeinfer}
[ -x "$edgeinfer" ] || cargo build --release --locked -p edgeinfer-daemon --bin edgeinfer

# Real-size models with random weights (speed does not depend on the values).
(cd models/export
 [ -f "$out/dinov2-s/model.onnx" ] || "$py" export_dinov2.py --random-weights --size small --out "$out/dinov2-s" >"$out/export-dinov2.log" 2>&1
 [ -f "$out/sam-vit-b/encoder_plain.onnx" ] || "$py" export_sam.py --random-weights --model-type vit_b --parts encoder_plain --out "$out/sam-vit-b" >"$out/export-sam.log" 2>&1)
"$py" - "$out" <<'PY'
import sys, numpy as np
out = sys.argv[1]
rng = np.random.default_rng(0)
np.save(f"{out}/sam_embeddings.npy", rng.standard_normal((1, 256, 64, 64)).astype(np.float32))
np.save(f"{out}/sam_coords.npy", np.array([[[500.0, 375.0], [0.0, 0.0]]], dtype=np.float32))
np.save(f"{out}/sam_labels.npy", np.array([[1.0, -1.0]], dtype=np.float32))
np.save(f"{out}/sam_mask.npy", np.zeros((1, 1, 256, 256), dtype=np.float32))
np.save(f"{out}/sam_has_mask.npy", np.zeros((1,), dtype=np.float32))
np.save(f"{out}/sam_size.npy", np.array([1080.0, 1920.0], dtype=np.float32))
PY

fx=$root/models/fixtures
g=$fx/llama/golden
check() {  # name model args...
  local name=$1 model=$2; shift 2
  "$edgeinfer" --log warn check "$model" --backend ort --ep cpu,cuda,tensorrt,tensorrt+cuda+cpu --runs "$runs" --json "$@" \
    >"$out/$name.json" 2>"$out/$name.log" || true
  echo "checked $name"
}
check tiny-sam-encoder "$fx/sam/encoder_plain.onnx"
check tiny-dinov2 "$fx/dinov2/model.onnx" --dim batch_size=1 --dim height=224 --dim width=224
check tiny-llama-decode "$fx/llama/model.onnx" $(for f in "$g"/decode.in.*.npy; do n=${f##*/decode.in.}; echo --input "${n%.npy}=$f"; done)
check dinov2-s-224 "$out/dinov2-s/model.onnx" --dim batch_size=1 --dim height=224 --dim width=224
check sam-vit-b-encoder "$out/sam-vit-b/encoder_plain.onnx"
check sam-vit-b-decoder "$out/sam-vit-b/decoder.onnx" --input image_embeddings="$out/sam_embeddings.npy" \
  --input point_coords="$out/sam_coords.npy" --input point_labels="$out/sam_labels.npy" --input mask_input="$out/sam_mask.npy" \
  --input has_mask_input="$out/sam_has_mask.npy" --input orig_im_size="$out/sam_size.npy"

"$py" - "$out" <<'PY' | tee "$out/summary.md"
import glob, json, os, sys
out = sys.argv[1]
gpu = open(os.path.join(out, "gpu.txt")).read().strip()
print(f"GPU: {gpu}\n")
print("| model | target | runs on (nodes) | median ms | max abs diff vs ort/cpu |")
print("|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(path)[:-5]
    try:
        r = json.load(open(path))
    except Exception:
        print(f"| {name} | - | failed: {open(path[:-5] + '.log').read()[-300:]!r} | | |")
        continue
    for t in r["targets"]:
        if t["error"]:
            print(f"| {name} | {t['target']} | FAILED: {t['error'][:160]} | | |")
            continue
        p = t["providers"] or {}
        placed = ", ".join(f"{k.replace('ExecutionProvider', '')} {v}" for k, v in (p.get("node_placement") or {}).items())
        fell = [a["provider"] for a in p.get("attempts", []) if a.get("error")]
        if fell:
            placed += f" (fell back from {', '.join(fell)})"
        diff = max((d["max_abs"] for d in t["parity"].values()), default=None)
        print(f"| {name} | {t['target']} | {placed} | {t['latency']['median_ms']:.2f} | {'-' if diff is None else f'{diff:.1e}'} |")
PY
