"""Export SAM 2 in the onnx-community / transformers.js layout (`onnx-community/sam2-hiera-*-ONNX`,
`onnx-community/sam2.1-hiera-*-ONNX`), from transformers' `Sam2Model`, and record goldens from
transformers' `Sam2Model` + `Sam2Processor` (pre-processing, prompts and `post_process_masks`).

Those repositories were written by a custom script, not by Optimum (optimum-onnx has no SAM 2
config), so this script writes graphs with the same interface, from the same PyTorch modules:

  config.json, preprocessor_config.json   transformers' Sam2Config and Sam2ImageProcessorFast
  onnx/vision_encoder.onnx                pixel_values [batch_size, 3, S, S] (stretched to S x S,
                                          rescaled, ImageNet-normalised) -> image_embeddings.0
                                          [.., C/8, S/4, S/4], image_embeddings.1 [.., C/4, S/8,
                                          S/8] (FPN levels 0 and 1 through the decoder's conv_s0 /
                                          conv_s1), image_embeddings.2 [.., C, S/16, S/16] (level 2
                                          + no_memory_embedding): `Sam2Model.get_image_embeddings`
  onnx/prompt_encoder_mask_decoder.onnx   image_embeddings.0/1/2, input_points [batch, 1, N, 2]
                                          float (in the S x S frame), input_labels [batch, 1, N]
                                          int64 (1 fg, 0 bg, -1 not a point), input_boxes
                                          [batch, M, 4] float (M = 0 or 1, corners in the S x S
                                          frame) -> iou_scores [batch, 1, 3], pred_masks
                                          [batch, 1, 3, S/4, S/4] (low-res logits, multimask),
                                          object_score_logits [batch, 1, 1]
  onnx/*_quantized.onnx, onnx/*_fp16.onnx  precision variants (ORT quantize_dynamic uint8; ORT
                                          float16 converter), as those repositories ship them
  cases.json, golden/                     parity cases against PyTorch (fp32 graphs)
  variants.json, golden/*@<variant>*      parity cases of each variant against ONNX Runtime
  e2e/                                    Sam2Processor + Sam2Model + post_process_masks on the
                                          photo of ../sam: binary masks, IoU scores per prompt
  fidelity.json                           each variant's masks against PyTorch's (mask IoU)

The decoder graph takes an empty box tensor ([batch, 0, 4]) when there is no box, as the
consumers of the Hub graphs feed it. Its prompt tokens are transformers' for the same inputs:
the points, then the box corners (labels 2 and 3) when there is a box, then one not-a-point
token (transformers' padding point, or the padding corner of its box embedding). A box without
points is fed with one point labelled -1 (not a point), as those consumers do: the graph requires
a points tensor of rank 4.

Needs transformers >= 4.56 (Sam2Model) besides the packages of requirements.txt; the Optimum
venv of export_sam_hf.py has it. Fixture (tiny architecture, seeded random weights), from
models/export/:
  python export_sam2_hf.py --out ../fixtures/sam2-hf
Production: download an onnx-community repository with `edgeinfer pull`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from PIL import Image
from torch import nn
from transformers import Sam2Config, Sam2ImageProcessorFast, Sam2Model, Sam2Processor

from common import rerandomize, save_npy, seed_everything
from export_sam_hf import GRAPHS, VARIANTS, fixture_folder, write_variants

SEED = 2024
SIZE = 128
EMBEDDINGS = ["image_embeddings.0", "image_embeddings.1", "image_embeddings.2"]
VARIANT_TOLERANCE = {"quantized": (2e-2, 2e-2), "fp16": (3e-2, 3e-2)}

# Prompts in original-image pixels (the photo is 170 x 120), as Sam2Processor takes them.
PROMPTS = {
    "point": {"points": [[100, 60]], "labels": [1]},
    "points": {"points": [[100, 60], [130, 40], [20, 100]], "labels": [1, 1, 0]},
    "background": {"points": [[20, 100]], "labels": [0]},
    "box": {"box": [60, 20, 150, 100]},
    "box_point": {"points": [[100, 60]], "labels": [1], "box": [60, 20, 150, 100]},
}


def build_tiny(seed: int) -> Sam2Model:
    """transformers' SAM 2 with a tiny configuration: 128 px, a Hiera trunk of stages [1, 1, 2, 1]
    (widths 8/16/32/64, the third stage's last block global), an FPN and decoder of width 32."""
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[SIZE, SIZE],
                    blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                    num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 4, 4, 4],
                    global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4])
    vision = dict(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                  backbone_feature_sizes=[[SIZE // 4] * 2, [SIZE // 8] * 2, [SIZE // 16] * 2], fpn_hidden_size=32)
    prompt = dict(hidden_size=32, image_size=SIZE, patch_size=16, mask_input_channels=16)
    decoder = dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    config = Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    seed_everything(seed)
    model = Sam2Model(config).eval()
    rerandomize(model, seed)
    return model


def processor() -> Sam2Processor:
    return Sam2Processor(Sam2ImageProcessorFast(size={"height": SIZE, "width": SIZE},
                                                mask_size={"height": SIZE // 4, "width": SIZE // 4}))


def prompt_inputs(proc: Sam2Processor, photo: Image.Image, spec: dict) -> dict:
    """The processor's tensors for one prompt; a box alone gets one not-a-point (label -1)."""
    kwargs = {}
    if "points" in spec:
        kwargs = dict(input_points=[[spec["points"]]], input_labels=[[spec["labels"]]])
    elif "box" in spec:
        kwargs = dict(input_points=[[[[0, 0]]]], input_labels=[[[-1]]])
    if "box" in spec:
        kwargs["input_boxes"] = [[spec["box"]]]
    inputs = proc(images=photo, return_tensors="pt", **kwargs)
    if "input_points" in inputs and inputs["input_points"].dim() == 3:  # one point: [[[x, y]]]
        inputs["input_points"] = inputs["input_points"][:, :, None, :]
    return inputs


def fresh(inputs: dict) -> dict:
    """A copy to call Sam2Model with: `_embed_boxes` adds its half-pixel shift to input_boxes in place."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def decoder_feed(embeddings: list, inputs: dict) -> dict:
    boxes = inputs.get("input_boxes")
    return {**{name: e.numpy() for name, e in zip(EMBEDDINGS, embeddings)},
            "input_points": inputs["input_points"].numpy().astype(np.float32),
            "input_labels": inputs["input_labels"].numpy().astype(np.int64),
            "input_boxes": (boxes.numpy() if boxes is not None else np.zeros((1, 0, 4))).astype(np.float32)}


@torch.no_grad()
def calibrate(model: Sam2Model, inputs) -> None:
    """Random weights make every mask all-on or all-off (the upscaled embedding is mostly positive
    after its GELU). Project each hypernetwork's output layer orthogonally to the mean upscaled
    embedding and scale it so the logits spread (std 4). Other random weights, same architecture."""
    dec = model.mask_decoder
    captured = []
    channels = dec.hidden_size // 8
    hook = dec.activation.register_forward_hook(
        lambda m, i, o: captured.append(o) if o.dim() == 4 and o.shape[1] == channels else None)
    model(**inputs)
    hook.remove()
    mean = captured[-1].mean(dim=(0, 2, 3))
    proj = torch.eye(mean.numel()) - torch.outer(mean, mean) / mean.dot(mean)
    for mlp in dec.output_hypernetworks_mlps:
        mlp.proj_out.weight.copy_(proj @ mlp.proj_out.weight)
        mlp.proj_out.bias.copy_(proj @ mlp.proj_out.bias)
    scale = 4.0 / float(model(**inputs).pred_masks.std())
    for mlp in dec.output_hypernetworks_mlps:
        mlp.proj_out.weight.mul_(scale)
        mlp.proj_out.bias.mul_(scale)


class VisionEncoder(nn.Module):
    def __init__(self, model: Sam2Model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return tuple(self.model.get_image_embeddings(pixel_values))


class PromptEncoderMaskDecoder(nn.Module):
    """transformers' prompt encoder and mask decoder with the box count a graph dimension: the
    sparse tokens are [points, box corners (none when M = 0), not-a-point], which is what
    `Sam2PromptEncoder` builds for points alone (its padding point) and for points and a box
    (the padding corner of `_embed_boxes`)."""

    def __init__(self, model: Sam2Model):
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.register_buffer("image_positional_embeddings", model.get_image_wide_positional_embeddings())

    def forward(self, embeddings_0, embeddings_1, embeddings_2, input_points, input_labels, input_boxes):
        pe = self.prompt_encoder
        batch = input_points.shape[0]
        points = pe._embed_points(input_points, input_labels, pad=False)  # [B, 1, N, C]
        corners = (input_boxes + 0.5).reshape(batch, 1, -1, 2)  # [B, 1, 2M, 2]
        corner_embedding = pe.shared_embedding(corners, (pe.input_image_size, pe.input_image_size))
        corner_labels = (torch.arange(corners.shape[2]) % 2 + 2).reshape(1, 1, -1)
        corner_embedding = corner_embedding + pe.point_embed(corner_labels)
        not_a_point = pe.not_a_point_embed.weight.reshape(1, 1, 1, -1).expand(batch, 1, 1, -1)
        sparse = torch.cat([points, corner_embedding, not_a_point], dim=2)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *pe.image_embedding_size)
        masks, iou_scores, _, object_score_logits = self.mask_decoder(
            image_embeddings=embeddings_2,
            image_positional_embeddings=self.image_positional_embeddings.repeat(batch, 1, 1, 1),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
            high_resolution_features=[embeddings_0, embeddings_1])
        return iou_scores, masks, object_score_logits


def export_graphs(model: Sam2Model, proc: Sam2Processor, pixel_values, feed: dict, out: Path) -> None:
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    encoder = out / "onnx" / "vision_encoder.onnx"
    torch.onnx.export(VisionEncoder(model), (pixel_values,), str(encoder), input_names=["pixel_values"],
                      output_names=EMBEDDINGS, opset_version=17, dynamo=False,
                      dynamic_axes={"pixel_values": {0: "batch_size"}, **{e: {0: "batch_size"} for e in EMBEDDINGS}})
    args = tuple(torch.from_numpy(feed[k]) for k in [*EMBEDDINGS, "input_points", "input_labels", "input_boxes"])
    torch.onnx.export(PromptEncoderMaskDecoder(model), args, str(out / "onnx" / "prompt_encoder_mask_decoder.onnx"),
                      input_names=[*EMBEDDINGS, "input_points", "input_labels", "input_boxes"],
                      output_names=["iou_scores", "pred_masks", "object_score_logits"], opset_version=17,
                      dynamo=False,
                      dynamic_axes={**{e: {0: "batch_size"} for e in EMBEDDINGS},
                                    "input_points": {0: "batch_size", 2: "num_points"},
                                    "input_labels": {0: "batch_size", 2: "num_points"},
                                    "input_boxes": {0: "batch_size", 1: "num_boxes"},
                                    "iou_scores": {0: "batch_size"}, "pred_masks": {0: "batch_size"},
                                    "object_score_logits": {0: "batch_size"}})
    for graph in GRAPHS:  # one file each, as the checks below and the Hub files load them
        path = out / "onnx" / f"{graph}.onnx"
        onnx.save(onnx.load(str(path)), str(path))
    with tempfile.TemporaryDirectory() as tmp:
        model.config.save_pretrained(tmp)
        proc.save_pretrained(tmp)
        for name in ["config.json", "preprocessor_config.json"]:
            shutil.copy(Path(tmp) / name, out / name)


def post_process(proc: Sam2Processor, pred_masks, inputs) -> np.ndarray:
    masks = proc.post_process_masks(torch.as_tensor(pred_masks), inputs["original_sizes"])
    return masks[0][0].numpy().astype(np.uint8)  # [3, H, W]


@torch.no_grad()
def main() -> None:
    out, photo = fixture_folder()
    proc = processor()
    model = build_tiny(SEED)
    calibrate(model, prompt_inputs(proc, photo, PROMPTS["point"]))

    first = prompt_inputs(proc, photo, PROMPTS["point"])
    pixel_values = first["pixel_values"]
    embeddings = model.get_image_embeddings(pixel_values)
    decoder = PromptEncoderMaskDecoder(model)
    references, feeds = {}, {}
    for name, spec in PROMPTS.items():
        inputs = prompt_inputs(proc, photo, spec)
        ref = model(image_embeddings=embeddings, input_points=inputs["input_points"],
                    input_labels=inputs["input_labels"], input_boxes=fresh(inputs).get("input_boxes"))
        feed = decoder_feed(embeddings, inputs)
        mine = decoder(*[torch.from_numpy(v) for v in feed.values()])
        for a, b in zip(mine, [ref.iou_scores, ref.pred_masks, ref.object_score_logits]):
            assert torch.allclose(a, b, atol=1e-5), f"{name}: the graph's module differs from Sam2Model"
        references[name], feeds[name] = (inputs, ref), feed
    export_graphs(model, proc, pixel_values, feeds["box_point"], out)

    # Parity cases: each graph on the processor's inputs, against PyTorch.
    g = out / "golden"
    encoder_case = {"name": "vision_encoder", "model": "onnx/vision_encoder.onnx", "atol": 1e-4, "rtol": 1e-4,
                    "inputs": {"pixel_values": "golden/" + save_npy(g / "vision_encoder.pixel_values.npy", pixel_values)},
                    "outputs": {}}
    for name, value in zip(EMBEDDINGS, embeddings):
        encoder_case["outputs"][name] = "golden/" + save_npy(g / f"vision_encoder.{name}.npy", value)
    cases = [encoder_case]
    decoder_cases = {}
    for name in ["point", "points", "box", "box_point"]:
        inputs, ref = references[name]
        case = {"name": f"decoder_{name}", "model": "onnx/prompt_encoder_mask_decoder.onnx", "atol": 1e-3,
                "rtol": 1e-4, "inputs": {}, "outputs": {}}
        for k, v in feeds[name].items():
            case["inputs"][k] = encoder_case["outputs"][k] if k in EMBEDDINGS else \
                "golden/" + save_npy(g / f"decoder_{name}.{k}.npy", v)
        for k, v in [("iou_scores", ref.iou_scores), ("pred_masks", ref.pred_masks),
                     ("object_score_logits", ref.object_score_logits)]:
            case["outputs"][k] = "golden/" + save_npy(g / f"decoder_{name}.{k}.npy", v.float())
        cases.append(case)
        decoder_cases[name] = case
    (out / "cases.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")

    # End to end: Sam2Processor -> Sam2Model -> post_process_masks, per prompt.
    e2e = {}
    for name, spec in PROMPTS.items():
        inputs, _ = references[name]
        ref = model(**{k: v for k, v in fresh(inputs).items() if k not in ("original_sizes", "reshaped_input_sizes")})
        masks = post_process(proc, ref.pred_masks, inputs)
        np.save(out / "e2e" / f"{name}.masks.npy", masks)
        np.save(out / "e2e" / f"{name}.iou.npy", ref.iou_scores[0, 0].numpy().astype(np.float32))
        e2e[name] = (masks, inputs)
        print(f"{name}: areas {[int(m.sum()) for m in masks]} of {masks[0].size}, iou {ref.iou_scores[0, 0].tolist()}")
    (out / "e2e" / "prompts.json").write_text(json.dumps(PROMPTS, indent=1) + "\n")

    # Variants: written as the Hub repositories ship them.
    write_variants(out, VARIANTS, VARIANT_TOLERANCE, encoder_case, decoder_cases, feeds, e2e,
                   lambda emb, inputs: decoder_feed([torch.from_numpy(emb[e]) for e in EMBEDDINGS], inputs),
                   lambda masks, inputs: post_process(proc, masks, inputs))
    for f in sorted((out / "onnx").iterdir()):
        print(f"{f.name}: {f.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
