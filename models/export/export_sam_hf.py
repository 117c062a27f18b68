"""Export SAM in the transformers.js / Optimum layout with Optimum itself (`optimum-onnx`), the
tool that made `Xenova/sam-vit-*`, `Xenova/slimsam-*` and their kind, and record goldens from
transformers' `SamModel` + `SamProcessor` (pre-processing, prompts and `post_process_masks`).

Files written to --out (the layout of those Hub repositories):
  config.json, preprocessor_config.json   transformers' SamConfig and SamImageProcessor
  onnx/vision_encoder.onnx                pixel_values [batch_size, 3, S, S] (resized so the
                                          longest side is S, rescaled, ImageNet-normalised,
                                          zero-padded bottom-right) -> image_embeddings,
                                          image_positional_embeddings
  onnx/prompt_encoder_mask_decoder.onnx   input_points [batch, point_batch, points, 2] float (in
                                          the resized frame), input_labels int64, image_embeddings,
                                          image_positional_embeddings -> iou_scores [.., 3],
                                          pred_masks [.., 3, 4h, 4w] (low-res logits, multimask)
  onnx/*_quantized.onnx, onnx/*_fp16.onnx  precision variants, as those repositories ship them
                                          (ORT quantize_dynamic uint8; ORT float16 converter)
  cases.json, golden/                     parity cases against PyTorch (fp32 graphs)
  variants.json, golden/*@<variant>*      parity cases of each variant against ONNX Runtime
  e2e/                                    SamProcessor + SamModel + post_process_masks on the
                                          photo of ../sam: binary masks, IoU scores per prompt
  fidelity.json                           each variant's masks against PyTorch's (mask IoU)

Needs transformers 4.57 (optimum-onnx 0.1 pins it) besides the packages of requirements.txt:
  python -m venv venv-optimum && venv-optimum/bin/pip install optimum-onnx==0.1.0 torch ...
Fixture (tiny architecture, seeded random weights), from models/export/:
  python export_sam_hf.py --out ../fixtures/sam-hf
Production: `optimum-cli export onnx --model facebook/sam-vit-base DIR` writes the same graphs
(move them under DIR/onnx/), or download a Xenova/ repository with `edgeinfer pull`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
from transformers.models.sam.configuration_sam import SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

from common import rerandomize, save_npy, seed_everything
from quantize import to_dynamic, to_fp16
from onnxruntime.quantization import QuantType

SEED = 1234
SIZE = 128
GRAPHS = ["vision_encoder", "prompt_encoder_mask_decoder"]
VARIANTS = {"quantized": lambda s, d: to_dynamic(s, d, QuantType.QUInt8), "fp16": to_fp16}
# Our backends against ONNX Runtime on the same variant file: (atol, rtol x max |ref|).
VARIANT_TOLERANCE = {"quantized": (2e-2, 2e-2), "fp16": (2e-2, 2e-2)}

# Prompts in original-image pixels (the photo is 170 x 120), as SamProcessor takes them. The
# Optimum graph has no box or mask input; boxes are for graphs that have `input_boxes`.
PROMPTS = {
    "point": {"points": [[100, 60]], "labels": [1]},
    "points": {"points": [[100, 60], [130, 40], [20, 100]], "labels": [1, 1, 0]},
    "background": {"points": [[20, 100]], "labels": [0]},
}


def build_tiny(seed: int) -> SamModel:
    """transformers' SAM with a tiny configuration: 128 px, 8 px patches (16x16 grid), 2 ViT
    blocks of width 32 (windowed + global attention), prompt encoder and decoder of width 32."""
    vision = SamVisionConfig(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                             image_size=SIZE, patch_size=8, mlp_dim=64, window_size=4, global_attn_indexes=[1],
                             num_pos_feats=16)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=SIZE, patch_size=8, mask_input_channels=16)
    decoder = SamMaskDecoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                                   iou_head_hidden_dim=32)
    config = SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                       mask_decoder_config=decoder.to_dict())
    seed_everything(seed)
    model = SamModel(config).eval()
    rerandomize(model, seed)
    return model


def processor() -> SamProcessor:
    """The slow (PIL) image processor, as the Hub repositories' preprocessor_config.json names."""
    return SamProcessor(SamImageProcessor(size={"longest_edge": SIZE}, pad_size={"height": SIZE, "width": SIZE}))


@torch.no_grad()
def calibrate(model: SamModel, inputs) -> None:
    """Random weights make every mask all-on or all-off (the upscaled embedding is mostly positive
    after its GELU). Project each hypernetwork's output layer orthogonally to the mean upscaled
    embedding and scale it so the logits spread (std 4). Other random weights, same architecture."""
    captured = {}
    dec = model.mask_decoder
    hook = dec.upscale_conv2.register_forward_hook(lambda m, i, o: captured.__setitem__("up", dec.activation(o)))
    model(**inputs)
    hook.remove()
    mean = captured["up"].mean(dim=(0, 2, 3))
    proj = torch.eye(mean.numel()) - torch.outer(mean, mean) / mean.dot(mean)
    for mlp in dec.output_hypernetworks_mlps:
        mlp.proj_out.weight.copy_(proj @ mlp.proj_out.weight)
        mlp.proj_out.bias.copy_(proj @ mlp.proj_out.bias)
    logits = model(**inputs).pred_masks
    scale = 4.0 / float(logits.std())
    for mlp in dec.output_hypernetworks_mlps:
        mlp.proj_out.weight.mul_(scale)
        mlp.proj_out.bias.mul_(scale)


def prompt_inputs(proc: SamProcessor, photo: Image.Image, spec: dict) -> dict:
    return proc(images=photo, input_points=[[spec["points"]]], input_labels=[[spec["labels"]]], return_tensors="pt")


def post_process(proc: SamProcessor, pred_masks, inputs) -> np.ndarray:
    masks = proc.image_processor.post_process_masks(torch.as_tensor(pred_masks), inputs["original_sizes"],
                                                    inputs["reshaped_input_sizes"])
    return masks[0][0].numpy().astype(np.uint8)  # [3, H, W]


def export_graphs(model: SamModel, proc: SamProcessor, out: Path) -> None:
    from optimum.exporters.onnx import main_export

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "model", Path(tmp) / "onnx"
        model.save_pretrained(src)
        proc.save_pretrained(src)
        main_export(str(src), output=str(dst), task="feature-extraction")
        (out / "onnx").mkdir(parents=True, exist_ok=True)
        for name in GRAPHS:
            shutil.move(dst / f"{name}.onnx", out / "onnx" / f"{name}.onnx")
        for name in ["config.json", "preprocessor_config.json"]:
            shutil.copy(dst / name, out / name)


def ort_run(path: Path, feed: dict) -> dict:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = {i.name: i.type for i in sess.get_inputs()}
    cast = {k: (v.astype(np.float16) if want[k] == "tensor(float16)" else v) for k, v in feed.items() if k in want}
    return {o.name: np.asarray(v, dtype=np.float32) if v.dtype == np.float16 else v
            for o, v in zip(sess.get_outputs(), sess.run(None, cast))}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def fixture_folder() -> tuple[Path, Image.Image]:
    """--out (its onnx/, golden/ and e2e/ emptied) and the photo of the SAM fixtures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--photo", type=Path, default=Path(__file__).parent.parent / "fixtures/sam/photo.png")
    args = ap.parse_args()
    for sub in ["onnx", "golden", "e2e"]:
        shutil.rmtree(args.out / sub, ignore_errors=True)
        (args.out / sub).mkdir(parents=True)
    return args.out, Image.open(args.photo).convert("RGB")


def write_variants(out: Path, variants: dict, tolerance: dict, encoder_case: dict, decoder_cases: dict,
                   decoder_feeds: dict, e2e: dict, feed_of, post) -> None:
    """Writes each variant of both graphs; parity cases of each against ONNX Runtime on the fp32
    cases' inputs (variants.json); fidelity as mask IoU of the whole pipeline (the processor's
    pre/post-processing, `post(pred_masks, inputs)`) against fp32 PyTorch's e2e masks
    (fidelity.json). `feed_of(encoder outputs, processor inputs)` is the decoder's feed."""
    g = out / "golden"
    pixel_values = np.load(out / encoder_case["inputs"]["pixel_values"])
    variant_cases, fidelity = [], {}
    for variant, make in variants.items():
        for graph in GRAPHS:
            make(out / "onnx" / f"{graph}.onnx", out / "onnx" / f"{graph}_{variant}.onnx")
        atol, rtol = tolerance[variant]
        enc = ort_run(out / "onnx" / f"vision_encoder_{variant}.onnx", {"pixel_values": pixel_values})
        vcase = {"name": f"vision_encoder@{variant}", "model": f"onnx/vision_encoder_{variant}.onnx", "atol": atol,
                 "rtol": rtol, "inputs": encoder_case["inputs"], "outputs": {}}
        for k, v in enc.items():
            vcase["outputs"][k] = "golden/" + save_npy(g / f"vision_encoder@{variant}.{k}.npy", v)
        variant_cases.append(vcase)
        for name, case in decoder_cases.items():
            dec = ort_run(out / "onnx" / f"prompt_encoder_mask_decoder_{variant}.onnx", decoder_feeds[name])
            vcase = {"name": f"decoder_{name}@{variant}", "model": f"onnx/prompt_encoder_mask_decoder_{variant}.onnx",
                     "atol": atol, "rtol": rtol, "inputs": case["inputs"], "outputs": {}}
            for k, v in dec.items():
                vcase["outputs"][k] = "golden/" + save_npy(g / f"decoder_{name}@{variant}.{k}.npy", v)
            variant_cases.append(vcase)
        ious = []
        for name, (ref_masks, inputs) in e2e.items():
            emb = ort_run(out / "onnx" / f"vision_encoder_{variant}.onnx", {"pixel_values": inputs["pixel_values"].numpy()})
            dec = ort_run(out / "onnx" / f"prompt_encoder_mask_decoder_{variant}.onnx", feed_of(emb, inputs))
            masks = post(dec["pred_masks"], inputs)
            ious += [mask_iou(a, b) for a, b in zip(masks, ref_masks)]
        fidelity[variant] = {"mask_iou_min": min(ious), "mask_iou_mean": float(np.mean(ious)), "masks": len(ious)}
        print(f"{variant}: mask IoU against fp32 PyTorch min {min(ious):.4f} mean {np.mean(ious):.4f}")
    (out / "variants.json").write_text(json.dumps({"cases": variant_cases}, indent=1) + "\n")
    (out / "fidelity.json").write_text(json.dumps(fidelity, indent=1) + "\n")


@torch.no_grad()
def main() -> None:
    out, photo = fixture_folder()
    proc = processor()
    model = build_tiny(SEED)
    calibrate(model, prompt_inputs(proc, photo, PROMPTS["point"]))
    export_graphs(model, proc, out)

    # Parity cases: each graph on the processor's inputs, against PyTorch.
    first = prompt_inputs(proc, photo, PROMPTS["point"])
    pixel_values = first["pixel_values"]
    image_embeddings = model.get_image_embeddings(pixel_values)
    positional = model.get_image_wide_positional_embeddings()
    g = out / "golden"
    encoder_case = {"name": "vision_encoder", "model": "onnx/vision_encoder.onnx", "atol": 1e-4, "rtol": 1e-4,
                    "inputs": {}, "outputs": {}}
    for key, name, value in [("inputs", "pixel_values", pixel_values), ("outputs", "image_embeddings", image_embeddings),
                             ("outputs", "image_positional_embeddings", positional)]:
        encoder_case[key][name] = "golden/" + save_npy(g / f"vision_encoder.{name}.npy", value)
    cases = [encoder_case]
    decoder_feeds = {}
    for name in ["point", "points"]:
        inputs = prompt_inputs(proc, photo, PROMPTS[name])
        ref = model(image_embeddings=image_embeddings, input_points=inputs["input_points"],
                    input_labels=inputs["input_labels"])
        feed = {"image_embeddings": image_embeddings.numpy(), "image_positional_embeddings": positional.numpy(),
                "input_points": inputs["input_points"].numpy().astype(np.float32),
                "input_labels": inputs["input_labels"].numpy().astype(np.int64)}
        decoder_feeds[name] = feed
        case = {"name": f"decoder_{name}", "model": "onnx/prompt_encoder_mask_decoder.onnx", "atol": 1e-3,
                "rtol": 1e-4, "inputs": {}, "outputs": {}}
        for k, v in feed.items():
            if k in encoder_case["outputs"]:  # the encoder's golden outputs, not a copy
                case["inputs"][k] = encoder_case["outputs"][k]
                continue
            np.save(g / f"decoder_{name}.{k}.npy", v)
            case["inputs"][k] = f"golden/decoder_{name}.{k}.npy"
        for k, v in [("iou_scores", ref.iou_scores), ("pred_masks", ref.pred_masks)]:
            np.save(g / f"decoder_{name}.{k}.npy", v.numpy().astype(np.float32))
            case["outputs"][k] = f"golden/decoder_{name}.{k}.npy"
        cases.append(case)
    (out / "cases.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")

    # End to end: SamProcessor -> SamModel -> post_process_masks, per prompt.
    e2e = {}
    for name, spec in PROMPTS.items():
        inputs = prompt_inputs(proc, photo, spec)
        ref = model(**inputs)
        masks = post_process(proc, ref.pred_masks, inputs)
        np.save(out / "e2e" / f"{name}.masks.npy", masks)
        np.save(out / "e2e" / f"{name}.iou.npy", ref.iou_scores[0, 0].numpy().astype(np.float32))
        e2e[name] = (masks, inputs)
        print(f"{name}: areas {[int(m.sum()) for m in masks]} of {masks[0].size}, iou {ref.iou_scores[0, 0].tolist()}")
    (out / "e2e" / "prompts.json").write_text(json.dumps(PROMPTS, indent=1) + "\n")

    # Variants: written as the Hub repositories ship them.
    def feed_of(embeddings: dict, inputs) -> dict:
        return {**embeddings, "input_points": inputs["input_points"].numpy().astype(np.float32),
                "input_labels": inputs["input_labels"].numpy().astype(np.int64)}

    write_variants(out, VARIANTS, VARIANT_TOLERANCE, encoder_case, dict(zip(decoder_feeds, cases[1:])),
                   decoder_feeds, e2e, feed_of, lambda masks, inputs: post_process(proc, masks, inputs))
    for f in sorted((out / "onnx").iterdir()):
        print(f"{f.name}: {f.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
