"""Build ORT-GenAI folders of the tiny LLaMA fixture with onnxruntime-genai's own model builder
(`onnxruntime_genai.models.builder`, the tool behind the `*-onnx` GenAI repositories), and record
what onnxruntime-genai itself generates from them: the reference our ort backend must match on a
folder laid out by someone else (fused SkipSimplifiedLayerNormalization, packed-QKV
GroupQueryAttention, MatMulNBits for int4, `past_present_share_buffer`).

Files written to --out:
  int4/, fp32/      the builder's output for `-p int4 -e cpu` and `-p fp32 -e cpu`: model.onnx,
                    genai_config.json, tokenizer files
  genai.json        per folder and reference prompt: onnxruntime-genai's greedy new token ids
                    (og.Generator, do_sample off), with the versions that made them

The tiny model is rebuilt exactly as export_llama.py --tiny builds it (same seed, same tokenizer,
same re-randomised weights); the script checks its logits against that fixture's PyTorch golden
before exporting.

Needs onnxruntime-genai (0.18.0), torch and transformers:
  python export_llama_genai.py --out ../fixtures/llama-genai
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForCausalLM

from export_llama import build_tiny, genai_greedy

FIXTURE = Path(__file__).parent.parent / "fixtures/llama"
PRECISIONS = ["int4", "fp32"]
NEW_TOKENS = 12


@torch.no_grad()
def check_same_as_fixture(model: LlamaForCausalLM) -> None:
    ids = np.load(FIXTURE / "golden/prefill.in.input_ids.npy")
    golden = np.load(FIXTURE / "golden/prefill.out.logits.npy")
    logits = model(torch.from_numpy(ids)).logits.numpy()
    worst = float(np.abs(logits - golden).max())
    if worst > 1e-4:
        sys.exit(f"the rebuilt model is not the fixture's (logits differ by {worst})")


def reference_prompts() -> list[list[int]]:
    reference = json.loads((FIXTURE / "golden/reference.json").read_text())
    return [case["prompt_ids"] for case in reference["generate"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import onnxruntime
    import onnxruntime_genai

    prompts = reference_prompts()
    record = {"onnxruntime_genai": onnxruntime_genai.__version__, "onnxruntime": onnxruntime.__version__,
              "max_new_tokens": NEW_TOKENS, "folders": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, _ = build_tiny(tmp / "tok", seed=0)
        model.eval()
        check_same_as_fixture(model)
        hf = tmp / "hf"
        model.save_pretrained(hf)
        for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
            shutil.copy(FIXTURE / name, hf / name)
        for precision in PRECISIONS:
            out = args.out / precision
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                            "-p", precision, "-e", "cpu", "-c", str(tmp / "cache")], check=True)
            built = onnxruntime_genai.Model(str(out))
            record["folders"][precision] = [{"prompt_ids": p, "greedy_new_ids": genai_greedy(built, p, NEW_TOKENS)}
                                            for p in prompts]
            print(precision, record["folders"][precision])
    (args.out / "genai.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
