"""Export a LLaMA-family causal LM (HF transformers `LlamaForCausalLM`: TinyLlama, SmolLM,
Llama-3.2 ...) to the onnx-community / Optimum layout with KV cache, and (with --tiny) record
PyTorch goldens.

Files written to --out:
  model.onnx   input_ids [batch_size, sequence_length] int64,
               attention_mask [batch_size, total_sequence_length] int64,
               position_ids [batch_size, sequence_length] int64,
               past_key_values.{i}.key / .value [batch_size, num_kv_heads, past_sequence_length, head_dim]
               -> logits [batch_size, sequence_length, vocab],
                  present.{i}.key / .value [batch_size, num_kv_heads, total_sequence_length, head_dim]
               The first step passes an empty past (past_sequence_length = 0).
  config.json, generation_config.json, tokenizer.json, tokenizer_config.json (with chat_template)

The layers are traced in a packed form (`packed_attention`, `packed_mlp`): q, k and v as one
matmul, gate and up as one, the rotary embedding applied to the query and key heads together
with `rotate_half` as a matmul, and the query heads grouped by their KV head (no `repeat_kv`
copies of the cache, and the cache never reshaped). The traced shape arithmetic is folded into
constants, and identical constants are shared (slim_graph.py). Both are checked to give the same
outputs as the plain trace. On SmolLM-135M that is 1,666 compute nodes instead of 2,024 (6,906
nodes in all before the grouping and folding) and 18 constants instead of 356 (the rotate_half
matrix was stored once per layer), and a decode step on ONNX Runtime 5-10 % shorter in q4, about
3 % in fp32.

--attention gqa writes the GenAI layout instead (what onnxruntime-genai's model builder writes):
  model.onnx   input_ids, attention_mask, past_key_values.{i}.key / .value (no position_ids) ->
               logits, present.{i}.key / .value; each layer's attention is one com.microsoft
               GroupQueryAttention node (`GroupQueryAttention` below: q, k and v packed, the rotary
               embedding inside the op), seqlens_k and total_sequence_length computed from
               attention_mask in the graph
  genai_config.json  with past_present_share_buffer: ONNX Runtime (the daemon, onnxruntime-genai)
               updates one KV buffer per layer in place instead of copying the cache into one a
               position longer every step. On SmolLM-135M a fp32 decode step runs at the builder's
               graph's speed (the Optimum layout: 0.90x at 256 tokens), and the q4 quantize.py
               writes from it 1.22x llama.cpp Q4_0's tokens/s at 256 tokens (the Optimum layout's:
               1.05x); see docs/benchmarks.md. tract runs it with the op written out in standard ops.

Production use:
  python export_llama.py --hf-model /path/to/SmolLM2-135M-Instruct --out /srv/models/smollm2
  python export_llama.py --hf-model /path/to/SmolLM2-135M-Instruct --attention gqa --out /srv/models/smollm2-gqa
Benchmark model (SmolLM-135M-sized, random weights):
  python export_llama.py --random-weights --out /tmp/llama-135m
Fixtures (tiny config, grouped-query attention, a tokenizer trained here, goldens):
  python export_llama.py --tiny --out ../fixtures/llama
  python export_llama.py --tiny --attention gqa --out ../fixtures/llama-gqa
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
import onnx
import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    AutoTokenizer,
)

from transformers.models.llama import modeling_llama

from common import Manifest, check_with_onnxruntime, onnx_size_report, rerandomize, seed_everything
from slim_graph import fold_file

OPSET = 17

# SmolLM2-Instruct's ChatML template (system prompt text changed).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful robot assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = """
The robot arm picks the red cube from the table and places it in the bin.
Segment anything: point at an object and the model returns its mask.
An edge device runs inference close to the camera, without a network connection.
Embedded engineers care about latency, memory and whether the daemon survives bad input.
The quick brown fox jumps over the lazy dog. A small model can still tell a story.
Once upon a time, a little robot wanted to learn the names of every tool in the workshop.
It looked at the hammer, the wrench and the screwdriver, and it remembered each one.
Hello! How are you today? I am fine, thank you. What can I help you with?
Temperature, top-k, top-p and repetition penalty shape how the next token is sampled.
Unicode text such as café, naïve, Zürich, 東京 and emoji 🤖 must never be split inside a character.
""" * 4


def train_tokenizer(out: Path, vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer like SmolLM's and Llama 3's, trained on a tiny corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    # Keep the template inside tokenizer_config.json, where most published exports carry it.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return PreTrainedTokenizerFast.from_pretrained(out)


class Wrapper(torch.nn.Module):
    """Flat tensors in and out, as the ONNX layout has them; a DynamicCache inside.

    The 2D padding mask is turned into the 4D additive causal mask here, with plain tensor ops
    (as Optimum's exports of earlier transformers versions did): transformers 5's own mask
    builder exports as a flattened gather over batch x length that graph compilers such as
    tract cannot shape symbolically. The numbers are the same: 0 where attention is allowed,
    the float32 minimum elsewhere."""

    def __init__(self, model: LlamaForCausalLM):
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        seq = input_ids.shape[1]
        total = attention_mask.shape[1]
        query_pos = torch.arange(seq, device=input_ids.device) + (total - seq)
        key_pos = torch.arange(total, device=input_ids.device)
        causal = key_pos[None, :] <= query_pos[:, None]  # [seq, total]
        allowed = causal[None, None, :, :] & attention_mask[:, None, None, :].bool()  # [batch, 1, seq, total]
        mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, return_dict=True)
        presents = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (out.logits, *presents)


def io_names(layers: int, position_ids: bool = True):
    inputs = ["input_ids", "attention_mask"] + (["position_ids"] if position_ids else [])
    outputs = ["logits"]
    for i in range(layers):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


def packed_qkv(attention, hidden_states):
    """q, k and v of `LlamaAttention` `attention` as one matmul (the three weights concatenated,
    folded at export)."""
    projections = (attention.q_proj, attention.k_proj, attention.v_proj)
    weight = torch.cat([p.weight for p in projections])
    bias = torch.cat([p.bias for p in projections]) if attention.q_proj.bias is not None else None
    return torch.nn.functional.linear(hidden_states, weight, bias)


def packed_attention(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None,
                     past_key_values=None, **kwargs):
    """`LlamaAttention.forward` as the graph should run it, the same numbers in fewer ops:
    - q, k and v come from one matmul (the three weights concatenated, folded at export) and a Split;
    - the rotary embedding is applied to the query and key heads together, and `rotate_half` is a
      matmul with a constant signed permutation instead of two slices, a negation and a concat;
    - the query heads are grouped by the KV head they share (`[batch, kv_heads, groups * seq,
      head_dim]`, one matmul per KV head) instead of `repeat_kv`, which copies every layer's whole
      cache `heads / kv_heads` times at every step. Head h = kv * groups + g, as repeat_kv orders
      them, so the softmax, mask and scaling see the same numbers."""
    cache = cache if cache is not None else past_key_values
    batch, seq, _ = hidden_states.shape
    dim = self.head_dim
    heads = self.config.num_attention_heads
    kv_heads = self.config.num_key_value_heads
    qkv = packed_qkv(self, hidden_states)
    qk, value = qkv.split([(heads + kv_heads) * dim, kv_heads * dim], dim=-1)
    qk = qk.reshape(batch, seq, heads + kv_heads, dim).transpose(1, 2)  # the cache's [batch, heads, seq, dim]
    cos, sin = (t.unsqueeze(1) for t in position_embeddings)
    half = dim // 2
    rotate = np.zeros((dim, dim), np.float32)  # numpy: a constant in the trace, not scatter ops
    rotate[np.arange(half) + half, np.arange(half)] = -1.0  # out[:half] = -x[half:]
    rotate[np.arange(half), np.arange(half) + half] = 1.0  # out[half:] = x[:half]
    rotate = torch.from_numpy(rotate).to(qk.dtype)
    qk = qk * cos + torch.matmul(qk, rotate) * sin
    query, key = qk.split([heads, kv_heads], dim=1)
    value = value.reshape(batch, seq, kv_heads, dim).transpose(1, 2)
    if cache is not None:
        key, value = cache.update(key, value, self.layer_idx)
    groups = heads // kv_heads
    # Each KV head's query heads as one block of rows, [batch, kv_heads, groups * seq, dim] (row
    # g * seq + s), against K and V as the cache holds them: the cache is never reshaped (a
    # runtime that hands the cache back as an output would copy it to unsqueeze it).
    query = query.reshape(batch, kv_heads, groups * seq, dim)
    weights = torch.matmul(query, key.transpose(2, 3)) * self.scaling
    if attention_mask is not None:
        weights = weights + attention_mask.repeat(1, 1, groups, 1)  # row g * seq + s: the mask's row s
    weights = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    output = torch.matmul(weights, value)  # [batch, kv_heads, groups * seq, dim]
    output = output.reshape(batch, kv_heads, groups, seq, dim).permute(0, 3, 1, 2, 4).reshape(batch, seq, heads * dim)
    return self.o_proj(output), None


class GroupQueryAttention(torch.autograd.Function):
    """ONNX Runtime's `com.microsoft` GroupQueryAttention as onnxruntime-genai's model builder
    writes it: q, k and v packed in one input, the rotary embedding applied inside the op from
    `cos_cache`/`sin_cache` at each new token's position `seqlens_k + 1 - seq + i`, the causal
    mask over that position, and `present = past + new`. `forward` is that computation in
    PyTorch (what the trace runs, and what `traced_layers` checks against the model's own layers);
    `symbolic` writes the one node."""

    @staticmethod
    def forward(ctx, qkv, past_key, past_value, seqlens_k, total_length, cos_cache, sin_cache, heads, kv_heads,
                scale):
        batch, seq, _ = qkv.shape
        dim = 2 * cos_cache.shape[1]
        qkv = qkv.reshape(batch, seq, heads + 2 * kv_heads, dim).transpose(1, 2)
        query, key, value = qkv.split([heads, kv_heads, kv_heads], dim=1)
        positions = seqlens_k.long()[:, None] + 1 - seq + torch.arange(seq)  # [batch, seq]
        cos = torch.cat([cos_cache[positions]] * 2, dim=-1)[:, None]  # [batch, 1, seq, dim]
        sin = torch.cat([sin_cache[positions]] * 2, dim=-1)[:, None]

        def rotate_half(x):
            return torch.cat([-x[..., dim // 2:], x[..., :dim // 2]], dim=-1)

        query = query * cos + rotate_half(query) * sin
        key = torch.cat([past_key, key * cos + rotate_half(key) * sin], dim=2)
        value = torch.cat([past_value, value], dim=2)
        groups = heads // kv_heads
        scores = torch.matmul(query.reshape(batch, kv_heads, groups * seq, dim), key.transpose(2, 3)) * scale
        allowed = torch.arange(key.shape[2])[None, None, :] <= positions[:, :, None]  # [batch, seq, total]
        scores = scores.masked_fill(~allowed[:, None].repeat(1, 1, groups, 1), float("-inf"))
        output = torch.matmul(torch.softmax(scores, dim=-1), value)
        output = output.reshape(batch, kv_heads, groups, seq, dim).permute(0, 3, 1, 2, 4).reshape(batch, seq, -1)
        return output, key, value

    @staticmethod
    def symbolic(g, qkv, past_key, past_value, seqlens_k, total_length, cos_cache, sin_cache, heads, kv_heads,
                 scale):
        from torch.onnx.symbolic_helper import _optional_input_placeholder_tensor as absent

        return g.op("com.microsoft::GroupQueryAttention", qkv, absent(g), absent(g), past_key, past_value,
                    seqlens_k, total_length, cos_cache, sin_cache, num_heads_i=heads, kv_num_heads_i=kv_heads,
                    scale_f=scale, local_window_size_i=-1, softcap_f=0.0, do_rotary_i=1, rotary_interleaved_i=0,
                    outputs=3)


class GqaInputs:
    """What the traced `gqa_attention` layers read besides their hidden states (the graph's
    inputs and the rotary tables), and the presents they hand back; set by `GqaWrapper`."""
    seqlens_k = total_length = cos_cache = sin_cache = None
    past: list = []
    presents: dict = {}


def gqa_attention(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None,
                  past_key_values=None, **kwargs):
    """`LlamaAttention.forward` as one GroupQueryAttention node on the packed q, k, v matmul."""
    qkv = packed_qkv(self, hidden_states)
    i = self.layer_idx
    output, key, value = GroupQueryAttention.apply(
        qkv, GqaInputs.past[2 * i], GqaInputs.past[2 * i + 1], GqaInputs.seqlens_k, GqaInputs.total_length,
        GqaInputs.cos_cache, GqaInputs.sin_cache, self.config.num_attention_heads,
        self.config.num_key_value_heads, float(self.scaling))
    GqaInputs.presents[i] = (key, value)
    return self.o_proj(output), None


class GqaWrapper(torch.nn.Module):
    """The GenAI layout's flat tensors: `input_ids`, `attention_mask` and the pasts in, logits and
    presents out, no `position_ids` (the op takes each new token's position from the mask's
    count, as onnxruntime-genai's builder graphs do). `seqlens_k` and `total_sequence_length`
    are computed from `attention_mask` in the graph, as the builder writes them."""

    def __init__(self, model: LlamaForCausalLM):
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers
        rotary = model.model.rotary_emb
        context = model.config.max_position_embeddings
        probe = torch.zeros(1, dtype=torch.float32)
        cos, sin = rotary(probe, torch.arange(context)[None])  # [1, context, head_dim], halves repeated
        half = cos.shape[-1] // 2
        self.cos_cache, self.sin_cache = cos[0, :, :half].contiguous(), sin[0, :, :half].contiguous()

    def forward(self, input_ids, attention_mask, *past):
        GqaInputs.seqlens_k = (attention_mask.sum(-1) - 1).to(torch.int32)
        GqaInputs.total_length = torch.onnx.operators.shape_as_tensor(attention_mask)[1].to(torch.int32)
        GqaInputs.cos_cache, GqaInputs.sin_cache = self.cos_cache, self.sin_cache
        GqaInputs.past, GqaInputs.presents = list(past), {}
        out = self.model(input_ids=input_ids, use_cache=False, return_dict=True)
        presents = []
        for i in range(self.layers):
            presents += GqaInputs.presents[i]
        return (out.logits, *presents)


def packed_mlp(self, x):
    """`LlamaMLP.forward` with the gate and up projections as one matmul and a Split."""
    weight = torch.cat([self.gate_proj.weight, self.up_proj.weight])
    bias = torch.cat([self.gate_proj.bias, self.up_proj.bias]) if self.gate_proj.bias is not None else None
    gate, up = torch.nn.functional.linear(x, weight, bias).split(self.intermediate_size, dim=-1)
    return self.down_proj(self.act_fn(gate) * up)


def graph_inputs(values: list, attention: str) -> list:
    """`Wrapper`'s inputs (ids, mask, positions, pasts) as the `attention` layout's graph takes
    them: the GenAI layout has no `position_ids`."""
    return values if attention == "plain" else values[:2] + values[3:]


def traced_module(model: LlamaForCausalLM, attention: str) -> torch.nn.Module:
    """The module traced for the `attention` layout (inputs as `graph_inputs` gives them)."""
    return Wrapper(model) if attention == "plain" else GqaWrapper(model)


@contextlib.contextmanager
def traced_layers(model: LlamaForCausalLM, example: list[torch.Tensor], attention: str):
    """LLaMA layers traced as the `attention` layout has them (plain: `packed_attention`, gqa:
    `gqa_attention`; the MLP as `packed_mlp`), after checking that they give the model's own
    logits and cache on `example` (`Wrapper`'s inputs, no padding: the GenAI op takes positions
    from the mask's count)."""
    traced, what = {"plain": (packed_attention, "packed"), "gqa": (gqa_attention, "GroupQueryAttention")}[attention]
    originals = modeling_llama.LlamaAttention.forward, modeling_llama.LlamaMLP.forward
    with torch.no_grad():
        want = Wrapper(model)(*example)
        modeling_llama.LlamaAttention.forward = traced
        modeling_llama.LlamaMLP.forward = packed_mlp
        try:
            got = traced_module(model, attention)(*graph_inputs(example, attention))
            worst = max(float((a - b).abs().max()) for a, b in zip(want, got))
            if worst > 1e-4:
                raise SystemExit(f"the {what} layers differ from the model's by {worst}")
            yield
        finally:
            modeling_llama.LlamaAttention.forward, modeling_llama.LlamaMLP.forward = originals


def export(model: LlamaForCausalLM, out: Path, attention: str) -> None:
    """model.onnx in the `attention` layout. The GenAI one (`gqa`) has one GroupQueryAttention node
    per layer and a genai_config.json with `past_present_share_buffer`, so ONNX Runtime updates
    one KV buffer per layer in place instead of copying the whole cache into a longer one every
    step; onnxruntime-genai runs the folder too."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    layers, kv, hd = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
    batch, seq, past = 2, 3, 4
    example = [
        torch.randint(0, cfg.vocab_size, (batch, seq)),
        torch.ones(batch, past + seq, dtype=torch.int64),
        torch.arange(past, past + seq).repeat(batch, 1),
    ] + [torch.randn(batch, kv, past, hd) for _ in range(2 * layers)]
    plain = attention == "plain"
    inputs, outputs = io_names(layers, position_ids=plain)
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
    }
    if plain:
        axes["position_ids"] = {0: "batch_size", 1: "sequence_length"}
    axes["logits"] = {0: "batch_size", 1: "sequence_length"}
    for name in inputs[len(inputs) - 2 * layers:]:
        axes[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in outputs[1:]:
        axes[name] = {0: "batch_size", 2: "total_sequence_length"}
    contrib = {} if plain else {"custom_opsets": {"com.microsoft": 1}}
    with traced_layers(model, example, attention):
        torch.onnx.export(traced_module(model, attention), tuple(graph_inputs(example, attention)),
                          out / "model.onnx", input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False, **contrib)
    print(fold_file(out / "model.onnx", fold_check_feeds(model, attention)))
    if not plain:
        declare_output_shapes(out / "model.onnx", kv, hd, cfg.vocab_size)
    cfg.save_pretrained(out)
    if not plain:
        write_genai_config(model, out)
    print(onnx_size_report(out / "model.onnx"))


def declare_output_shapes(path: Path, kv_heads: int, head_dim: int, vocab: int) -> None:
    """The outputs' shapes as the Optimum layout declares them (the exporter cannot infer through
    the contrib op, and names each unknown size after it)."""
    model = onnx.load(path, load_external_data=False)
    for output in model.graph.output:
        sizes = [("batch_size", "sequence_length", vocab) if output.name == "logits"
                 else ("batch_size", kv_heads, "total_sequence_length", head_dim)][0]
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(dims, sizes):
            dim.Clear()
            if isinstance(size, int):
                dim.dim_value = size
            else:
                dim.dim_param = size
    onnx.save(model, path)


def write_genai_config(model: LlamaForCausalLM, out: Path) -> None:
    """genai_config.json as onnxruntime-genai's builder writes it for this graph: the names, the
    sizes, and `past_present_share_buffer`."""
    cfg = model.config
    context = cfg.max_position_embeddings
    eos = cfg.eos_token_id
    config = {
        "model": {
            "bos_token_id": cfg.bos_token_id, "context_length": context,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx", "head_size": cfg.head_dim, "hidden_size": cfg.hidden_size,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": cfg.num_attention_heads, "num_hidden_layers": cfg.num_hidden_layers,
                "num_key_value_heads": cfg.num_key_value_heads,
            },
            "eos_token_id": eos if eos is not None else 0,
            "pad_token_id": cfg.pad_token_id if cfg.pad_token_id is not None else (eos if isinstance(eos, int) else 0),
            "type": "llama", "vocab_size": cfg.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": context, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": True, "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 50, "top_p": 1.0,
        },
    }
    (out / "genai_config.json").write_text(json.dumps(config, indent=4) + "\n")


def fold_check_feeds(model: LlamaForCausalLM, attention: str) -> list[dict[str, np.ndarray]]:
    """Inputs the folded graph must answer exactly as the traced one: a batch prefill (left-padded
    in the plain layout; the GenAI op reads positions from the mask's count), a decode step and a
    chunk after a past (the shapes generation feeds)."""
    cfg = model.config
    layers, kv, hd = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
    inputs, _ = io_names(layers, position_ids=attention == "plain")
    rng = np.random.default_rng(0)
    feeds = []
    for batch, seq, past, pad in [(2, 4, 0, int(attention == "plain")), (1, 1, 5, 0), (1, 3, 2, 0)]:
        mask = np.ones((batch, past + seq), np.int64)
        mask[0, :pad] = 0
        positions = np.clip(mask.cumsum(-1) - 1, 0, None)[:, past:]
        values = [rng.integers(0, cfg.vocab_size, (batch, seq)), mask, positions]
        values += [rng.standard_normal((batch, kv, past, hd)).astype(np.float32) for _ in range(2 * layers)]
        feeds.append(dict(zip(inputs, graph_inputs(values, attention))))
    return feeds


def empty_past(model, batch=1):
    cfg = model.config
    return [torch.zeros(batch, cfg.num_key_value_heads, 0, cfg.head_dim) for _ in range(2 * cfg.num_hidden_layers)]


@torch.no_grad()
def goldens(model: LlamaForCausalLM, tok, out: Path, attention: str) -> None:
    """The fixture's goldens through the model's own layers: a prompt and a cached decode step
    (checked on ONNX Runtime), in the plain layout a left-padded batch of two too (the GenAI op
    reads positions from the mask's count), and what transformers (and, for the GenAI layout,
    onnxruntime-genai) generate."""
    m = Manifest(out)
    wrapper = Wrapper(model)
    inputs, outputs = io_names(model.config.num_hidden_layers, position_ids=attention == "plain")

    def case(name: str, values: list, check: bool) -> tuple:
        """Runs `Wrapper` on `values` and records the case (the graph's inputs, the outputs)."""
        res = wrapper(*values)
        feeds = dict(zip(inputs, graph_inputs(values, attention)))
        m.add(name, "model.onnx", feeds, dict(zip(outputs, res)), atol=1e-4, rtol=1e-3)
        if check:
            check_with_onnxruntime(out / "model.onnx", feeds, dict(zip(outputs, res)), 1e-4, 1e-3)
        return res

    ids = torch.tensor([tok.encode("The robot arm picks the red cube")])
    n = ids.shape[1]
    res = case("prefill", [ids, torch.ones(1, n, dtype=torch.int64), torch.arange(n)[None]] + empty_past(model), True)
    # One cached decode step: the next token, with the prefill's presents as the past.
    next_id = res[0][0, -1].argmax().reshape(1, 1)
    case("decode", [next_id, torch.ones(1, n + 1, dtype=torch.int64), torch.tensor([[n]])] + list(res[1:]), True)
    if attention == "plain":
        # Batch of two with left padding (attention_mask zeros), as batched generation does.
        a = tok.encode("Hello! How are you today?")
        b = tok.encode("The quick brown fox")
        width = max(len(a), len(b))
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(a)) + a, [pad] * (width - len(b)) + b])
        mask = torch.tensor([[0] * (width - len(a)) + [1] * len(a), [0] * (width - len(b)) + [1] * len(b)])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        case("prefill_batch2_padded", [ids, mask, pos] + empty_past(model, batch=2), False)
    m.write()
    refs = write_references(model, tok, out)
    if attention == "gqa":
        check_with_onnxruntime_genai(out, refs)


def check_with_onnxruntime_genai(folder: Path, refs: dict) -> None:
    """onnxruntime-genai (when installed) must load the folder and generate transformers' greedy
    ids: the layout is the builder's, not only ours."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        print("  onnxruntime-genai not installed: the folder is not checked with it")
        return
    model = og.Model(str(folder))
    for case in refs["generate"]:
        prompt, want = case["prompt_ids"], case["greedy_new_ids"]
        got = genai_greedy(model, prompt, len(want))
        if got != want:
            raise SystemExit(f"onnxruntime-genai {og.__version__} generates {got}, transformers {want}")
    print(f"  onnxruntime-genai {og.__version__} generates transformers' greedy ids")


def genai_greedy(model, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """The ids onnxruntime-genai's generator (`model`: an `og.Model`) appends to `prompt_ids`,
    greedy, at most `new_tokens` of them."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt_ids) + new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([prompt_ids], dtype=np.int32))
    new = []
    while not generator.is_done():
        generator.generate_next_token()
        new.append(int(generator.get_next_tokens()[0]))
    return new


@torch.no_grad()
def write_references(model: LlamaForCausalLM, tok, out: Path) -> dict:
    """Generation and chat-template references for the pipeline tests (golden/reference.json)."""
    conversations = [
        [{"role": "user", "content": "What is in the bin?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a tool."},
         {"role": "assistant", "content": "A wrench."}, {"role": "user", "content": "Another one?"}],
    ]
    refs = {"chat": [], "generate": []}
    for conv in conversations:
        text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        refs["chat"].append({"messages": conv, "add_generation_prompt": True, "text": text})
    for prompt, chat in [("Once upon a time, a little robot", False), (refs["chat"][0]["text"], True)]:
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
        gen = model.generate(**enc, max_new_tokens=40, do_sample=False)
        new = gen[0, enc["input_ids"].shape[1]:].tolist()
        refs["generate"].append({"prompt": prompt, "from_chat_template": chat,
                                 "prompt_ids": enc["input_ids"][0].tolist(), "greedy_new_ids": new,
                                 "greedy_text": tok.decode(new, skip_special_tokens=False)})
        # The smallest gap between the top two logits along the greedy path: a tie would make the
        # token-for-token test depend on rounding, so the seed is chosen to keep it comfortable.
        logits = model(gen[:, :-1]).logits[0, enc["input_ids"].shape[1] - 1:]
        top2 = logits.topk(2, dim=-1).values
        print(f"  greedy path min top-2 logit gap: {float((top2[:, 0] - top2[:, 1]).min()):.4f}")
    (out / "golden" / "reference.json").write_text(json.dumps(refs, indent=2, ensure_ascii=False) + "\n")
    return refs


def build_tiny(tokenizer_dir: Path, seed: int) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The fixture's model: a tokenizer trained into `tokenizer_dir`, a 2-layer GQA LLaMA of width
    64 on its vocabulary, weights re-randomised from `seed` (export_llama_genai.py rebuilds it)."""
    seed_everything(seed)
    tok = train_tokenizer(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, attn_implementation="eager",
    )
    model = LlamaForCausalLM(config)
    rerandomize(model, seed, scale=2.0)
    return model, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--hf-model", help="HF model directory (config, weights, tokenizer files)")
    ap.add_argument("--random-weights", action="store_true", help="SmolLM-135M-sized, random weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attention", choices=["plain", "gqa"], default="plain",
                    help="plain: the Optimum layout (standard ops, a cache one position longer each step); "
                         "gqa: the GenAI layout (one GroupQueryAttention node per layer, genai_config.json, "
                         "the cache updated in place on ONNX Runtime)")
    args = ap.parse_args()
    seed_everything(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        model, tok = build_tiny(args.out, args.seed)
    elif args.random_weights:
        config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                             rope_theta=10000.0, tie_word_embeddings=True, attn_implementation="eager")
        model = LlamaForCausalLM(config)
        tok = None
    elif args.hf_model:
        model = LlamaForCausalLM.from_pretrained(args.hf_model, attn_implementation="eager")
        tok = AutoTokenizer.from_pretrained(args.hf_model)
        tok.save_pretrained(args.out)
    else:
        ap.error("give --tiny, --hf-model or --random-weights")
    model.eval()
    gen_cfg = GenerationConfig(bos_token_id=model.config.bos_token_id, eos_token_id=model.config.eos_token_id,
                               pad_token_id=model.config.pad_token_id)
    gen_cfg.save_pretrained(args.out)
    export(model, args.out, args.attention)
    if args.tiny:
        goldens(model, tok, args.out, args.attention)


if __name__ == "__main__":
    main()
