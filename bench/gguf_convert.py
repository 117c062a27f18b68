"""llama.cpp's own converter (convert_hf_to_gguf.py, from the llama-cpp-python source tree) run on
the bench's random-weight SmolLM-135M-sized checkpoint, for bench/llamacpp.sh. It permutes Q and K
into GGML's rotary layout and writes every tensor itself; two lookups are pinned first, since the
bench checkpoint carries the tiny fixture's 384-token BPE tokenizer as a stand-in (only token ids
are benchmarked):
  - the BPE pre-tokenizer, which the converter identifies by hashing a test string's tokens, is
    SmolLM's ("smollm"), as for the real checkpoint;
  - the vocabulary is read as GPT-2 BPE from tokenizer.json (the real SmolLM ends up there too,
    after the converter's SentencePiece attempt fails for want of a tokenizer.model).

    python gguf_convert.py LLAMA_CPP_SOURCE HF_DIR --outtype f32 --outfile OUT.gguf
"""

import runpy
import sys

source = sys.argv[1]
sys.path[:0] = [source, source + "/gguf-py"]
from conversion.base import TextModel  # noqa: E402  (the converter's own package)
from conversion.llama import LlamaModel  # noqa: E402

TextModel.get_vocab_base_pre = lambda self, tokenizer: "smollm"
LlamaModel.set_vocab = lambda self: self._set_vocab_gpt2()
sys.argv = [source + "/convert_hf_to_gguf.py"] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
