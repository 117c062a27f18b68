"""The llama.cpp side of bench/llamacpp.sh: one decode measurement in a fresh process with
llama-cpp-python (built from source) on a GGUF file, as bench/genai_decode.py measures
onnxruntime-genai: prefill `context` ids, take the first token from it, then the mean of 8
greedy steps (each: decode one token, argmax of its logits); the median of RUNS after one warm-up.
One JSON line per context, like tests/examples/llama_decode.rs prints for ours.

    python llamacpp_decode.py MODEL.gguf THREADS CONTEXTS RUNS

Also: python llamacpp_decode.py --quantize IN.gguf OUT.gguf q4_0  (llama.cpp's own quantizer)
"""

import ctypes
import json
import sys
import time

import numpy as np
import llama_cpp


def prompt_ids(n: int) -> list[int]:
    """tests/src/lib.rs bench_prompt_ids: the same ids ours is given."""
    return [10 + (i * 7 % 200) for i in range(n)]


def decode_ms(llm: llama_cpp.Llama, context: int) -> float:
    llm.reset()
    llm.eval(prompt_ids(context))
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))  # the first token comes with the prefill
    start = time.perf_counter()
    for _ in range(8):
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return (time.perf_counter() - start) * 1e3 / 8


def quantize(source: str, target: str, kind: str) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[kind]
    status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if status != 0:
        sys.exit(f"llama_model_quantize failed ({status})")


def main() -> None:
    if sys.argv[1] == "--quantize":
        quantize(*sys.argv[2:5])
        return
    path, threads, contexts, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    for context in (int(c) for c in contexts.split(",")):
        decode_ms(llm, context)
        median = float(np.median([decode_ms(llm, context) for _ in range(runs)]))
        print(json.dumps({"side": "llamacpp", "context": context, "decode_ms": round(median, 3)}))


if __name__ == "__main__":
    main()
