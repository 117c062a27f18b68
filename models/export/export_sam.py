"""Export Segment Anything (the official `segment-anything` package) to the ONNX layouts edgeinfer
loads, and (with --tiny) record PyTorch goldens for the parity tests.

Files written to --out:
  encoder.onnx        samexporter layout: input_image [image_height, image_width, 3] float32 RGB
                      0..255, already resized so the longest side is img_size; normalisation,
                      HWC->CHW and bottom-right padding happen inside the graph
                      -> image_embeddings [1, C, h, w]
  encoder_plain.onnx  plain layout: image [1, 3, S, S], normalised and padded by the caller
                      -> image_embeddings [1, C, h, w]
  decoder.onnx        official segment-anything layout (segment_anything.utils.onnx.SamOnnxModel,
                      return_single_mask=False): image_embeddings, point_coords [1, N, 2],
                      point_labels [1, N], mask_input [1, 1, 4h, 4w], has_mask_input [1],
                      orig_im_size [2] -> masks [1, K, H, W], iou_predictions [1, K],
                      low_res_masks [1, K, 4h, 4w]
  decoder_lowres.onnx the same decoder without the in-graph upsampling (no orig_im_size input)
                      -> iou_predictions [1, K], low_res_masks [1, K, 4h, 4w]; the pipeline
                      upsamples on the host, and only the masks it returns. Point the manifest's
                      "decoder" at it to use it.
  manifest.json       family, image size, pixel mean/std, file roles

Production use (weights from the official release):
  python export_sam.py --checkpoint sam_vit_b_01ec64.pth --model-type vit_b --out /srv/models/sam-vit-b
Fixture (tiny architecture, random seeded weights, goldens):
  python export_sam.py --tiny --out ../fixtures/sam
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common import (Manifest, check_with_onnxruntime, onnx_size_report, rerandomize, scale_mask_logits,
                    seed_everything, spread_mask_logits)

from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.onnx import SamOnnxModel
from segment_anything.utils.transforms import ResizeLongestSide

OPSET = 17


def build_tiny_sam(seed: int) -> Sam:
    """The official architecture with a tiny configuration: 128 px input, 8 px patches (16x16
    embedding grid), 2 ViT blocks of width 32 with windowed and global attention, 32-wide prompt
    encoder and mask decoder."""
    image_size, patch, prompt_dim = 128, 8, 64
    grid = image_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=32,
            img_size=image_size,
            mlp_ratio=2,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[1],
            window_size=4,
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    rerandomize(sam, seed)
    # The positional-encoding Gaussian matrix is a buffer, not a parameter: keep it as built.
    return sam


@torch.no_grad()
def calibrate_decoder(sam: Sam, photo: np.ndarray, target_std: float = 4.0) -> None:
    """Random weights give mask logits dominated by one offset (the upscaled embedding is mostly
    positive after its GELU), so every mask is all-on or all-off. Project each hypernetwork's
    output layer orthogonally to the mean upscaled embedding and scale it so logits have a useful
    spread. This only chooses other random weights; the architecture is untouched."""
    captured = {}
    hook = sam.mask_decoder.output_upscaling.register_forward_hook(lambda m, i, o: captured.__setitem__("up", o))
    predictor = SamPredictor(sam)
    predictor.set_image(photo)
    h, w = photo.shape[:2]
    predictor.predict(point_coords=np.array([[w / 2, h / 2]], dtype=np.float32), point_labels=np.array([1]))
    hook.remove()
    spread_mask_logits(sam.mask_decoder.output_hypernetworks_mlps, captured["up"].mean(dim=(0, 2, 3)))
    _, _, low = predictor.predict(point_coords=np.array([[w / 2, h / 2]], dtype=np.float32),
                                  point_labels=np.array([1]), return_logits=True)
    scale_mask_logits(sam.mask_decoder.output_hypernetworks_mlps, low, target_std)


class SamExporterEncoder(torch.nn.Module):
    """The samexporter encoder layout: preprocessing inside the graph."""

    def __init__(self, sam: Sam):
        super().__init__()
        self.image_encoder = sam.image_encoder
        self.img_size = sam.image_encoder.img_size
        self.register_buffer("pixel_mean", torch.tensor(sam.pixel_mean.flatten().tolist()))
        self.register_buffer("pixel_std", torch.tensor(sam.pixel_std.flatten().tolist()))

    @torch.no_grad()
    def forward(self, input_image: torch.Tensor) -> torch.Tensor:
        x = (input_image - self.pixel_mean) / self.pixel_std
        x = torch.permute(x, (2, 0, 1))
        h, w = x.shape[-2:]
        x = F.pad(x, (0, self.img_size - w, 0, self.img_size - h))
        x = torch.unsqueeze(x, 0)
        return self.image_encoder(x)


class PlainEncoder(torch.nn.Module):
    def __init__(self, sam: Sam):
        super().__init__()
        self.image_encoder = sam.image_encoder

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class SamDecoderOnnx(SamOnnxModel):
    """`SamOnnxModel` as on segment-anything's main branch. The PyPI release (1.0) crops the
    upscaled masks with `int(prepadded_size[i])`, which tracing freezes to the dummy input's aspect
    ratio (upstream issues #56/#130, fixed by PR #58): the crop must stay a tensor expression."""

    def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        prepadded = self.resize_longest_image_size(orig_im_size, self.img_size).to(torch.int64)
        masks = masks[..., : prepadded[0], : prepadded[1]]
        size = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear", align_corners=False)


class SamLowResDecoderOnnx(SamOnnxModel):
    """`SamOnnxModel.forward` up to the mask decoder's output: no `mask_postprocessing`."""

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input)
        masks, scores = self.model.mask_decoder.predict_masks(
            image_embeddings=image_embeddings, image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
        return scores, masks


PARTS = ("encoder", "encoder_plain", "decoder", "decoder_lowres")


def export(sam: Sam, out: Path, parts=PARTS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    size = sam.image_encoder.img_size
    embed_dim = sam.prompt_encoder.embed_dim
    grid = sam.prompt_encoder.image_embedding_size
    mask_size = [4 * g for g in grid]

    hwc = torch.rand(size, int(size * 0.75), 3) * 255
    if "encoder" in parts:
        torch.onnx.export(
            SamExporterEncoder(sam), (hwc,), out / "encoder.onnx", input_names=["input_image"],
            output_names=["image_embeddings"], dynamic_axes={"input_image": {0: "image_height", 1: "image_width"}},
            opset_version=OPSET, dynamo=False,
        )
    if "encoder_plain" in parts:
        torch.onnx.export(
            PlainEncoder(sam), (torch.randn(1, 3, size, size),), out / "encoder_plain.onnx", input_names=["image"],
            output_names=["image_embeddings"], opset_version=OPSET, dynamo=False,
        )
    decoder = SamDecoderOnnx(sam, return_single_mask=False)
    dummy = {
        "image_embeddings": torch.randn(1, embed_dim, *grid, dtype=torch.float),
        "point_coords": torch.randint(low=0, high=size, size=(1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *mask_size, dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([size * 1.5, size * 2.0], dtype=torch.float),
    }
    torch.onnx.export(
        decoder, tuple(dummy.values()), out / "decoder.onnx", input_names=list(dummy.keys()),
        output_names=["masks", "iou_predictions", "low_res_masks"],
        dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
        opset_version=OPSET, do_constant_folding=True, dynamo=False,
    )
    if "decoder_lowres" in parts:
        lowres = {k: v for k, v in dummy.items() if k != "orig_im_size"}
        torch.onnx.export(
            SamLowResDecoderOnnx(sam, return_single_mask=False), tuple(lowres.values()), out / "decoder_lowres.onnx",
            input_names=list(lowres.keys()), output_names=["iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    manifest = {
        "family": "sam",
        "layout": "segment-anything",
        "image_size": size,
        "pixel_mean": sam.pixel_mean.flatten().tolist(),
        "pixel_std": sam.pixel_std.flatten().tolist(),
        # The encoder the pipeline loads: the samexporter one when exported, else the plain one.
        "encoder": "encoder.onnx" if "encoder" in parts else "encoder_plain.onnx",
        "encoder_plain": "encoder_plain.onnx",
        "decoder": "decoder.onnx",
        "mask_threshold": sam.mask_threshold,
    }
    if "decoder_lowres" in parts:
        manifest["decoder_lowres"] = "decoder_lowres.onnx"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for f in ["encoder.onnx", "encoder_plain.onnx", "decoder.onnx", "decoder_lowres.onnx"]:
        if (out / f).exists():
            print(onnx_size_report(out / f))


def sample_photo() -> np.ndarray:
    """A real photo (scikit-image's bundled 'chelsea', 451x300), its centre cropped to 120x170 so
    the goldens stay small and the resize/pad path is non-square."""
    from skimage import data

    return np.ascontiguousarray(data.chelsea()[60:180, 150:320])  # 120 x 170 RGB uint8


def e2e_prompts() -> dict:
    """The end-to-end prompts on sample_photo(), in original-image pixels (predictor keyword
    arguments), shared by the SAM and SAM 2 fixtures."""
    return {
        "point": dict(point_coords=np.array([[100, 60]], dtype=np.float32), point_labels=np.array([1])),
        "points": dict(point_coords=np.array([[100, 60], [130, 40], [20, 100]], dtype=np.float32),
                       point_labels=np.array([1, 1, 0])),
        "box": dict(box=np.array([40, 15, 150, 110], dtype=np.float32)),
        "box_and_point": dict(box=np.array([40, 15, 150, 110], dtype=np.float32),
                              point_coords=np.array([[20, 100]], dtype=np.float32), point_labels=np.array([0])),
    }


@torch.no_grad()
def goldens(sam: Sam, out: Path) -> None:
    m = Manifest(out)
    size = sam.image_encoder.img_size
    photo = sample_photo()
    Image.fromarray(photo).save(out / "photo.png")
    h, w = photo.shape[:2]

    # Encoder inputs exactly as upstream prepares them.
    transform = ResizeLongestSide(size)
    resized = transform.apply_image(photo)  # PIL bilinear resize, HWC uint8
    hwc = torch.as_tensor(resized.astype(np.float32))
    chw = sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float())
    emb = sam.image_encoder(chw)
    emb_hwc = SamExporterEncoder(sam)(hwc)
    assert torch.allclose(emb, emb_hwc, atol=1e-5), "the two encoder layouts disagree"
    m.add("encoder_hwc", "encoder.onnx", {"input_image": hwc}, {"image_embeddings": emb_hwc}, atol=1e-4, rtol=1e-3)
    m.add("encoder_plain", "encoder_plain.onnx", {"image": chw}, {"image_embeddings": emb}, atol=1e-4, rtol=1e-3)
    check_with_onnxruntime(out / "encoder.onnx", {"input_image": hwc}, {"image_embeddings": emb_hwc}, 1e-4, 1e-3)

    decoder = SamDecoderOnnx(sam, return_single_mask=False)
    grid = sam.prompt_encoder.image_embedding_size
    # The decoder upsamples to orig_im_size inside the graph; half the photo size keeps the
    # golden masks small while still exercising the crop-and-resize path.
    orig = torch.tensor([h // 2, w // 2], dtype=torch.float)
    no_mask = torch.zeros(1, 1, 4 * grid[0], 4 * grid[1])

    def coords(points) -> torch.Tensor:
        return torch.as_tensor(transform.apply_coords(np.array(points, dtype=np.float32), (h, w)))[None].float()

    cases = {
        # One positive point, plus the padding point the official ONNX usage appends.
        "one_point": (coords([[100, 60], [0, 0]]), torch.tensor([[1, -1]], dtype=torch.float), no_mask, 0.0),
        # Two positives and a negative, plus padding.
        "three_points": (
            coords([[100, 60], [130, 40], [20, 100], [0, 0]]),
            torch.tensor([[1, 1, 0, -1]], dtype=torch.float), no_mask, 0.0,
        ),
        # A box (corners labelled 2 and 3); no padding point with a box.
        "box": (coords([[40, 15], [150, 110]]), torch.tensor([[2, 3]], dtype=torch.float), no_mask, 0.0),
    }
    results = {}
    for name, (pc, pl, mask_in, has_mask) in cases.items():
        feeds = {
            "image_embeddings": emb, "point_coords": pc, "point_labels": pl, "mask_input": mask_in,
            "has_mask_input": torch.tensor([has_mask]), "orig_im_size": orig,
        }
        masks, iou, low = decoder(**feeds)
        results[name] = (masks, iou, low)
        m.add(f"decoder_{name}", "decoder.onnx", feeds,
              {"masks": masks, "iou_predictions": iou, "low_res_masks": low}, atol=1e-3, rtol=1e-3)
    # A follow-up click that feeds back the best low-res mask of the first one.
    _, iou1, low1 = results["one_point"]
    best = int(iou1[0].argmax())
    feeds = {
        "image_embeddings": emb, "point_coords": coords([[100, 60], [120, 80], [0, 0]]),
        "point_labels": torch.tensor([[1, 1, -1]], dtype=torch.float), "mask_input": low1[:, best:best + 1],
        "has_mask_input": torch.tensor([1.0]), "orig_im_size": orig,
    }
    masks, iou, low = decoder(**feeds)
    m.add("decoder_mask_prompt", "decoder.onnx", feeds,
          {"masks": masks, "iou_predictions": iou, "low_res_masks": low}, atol=1e-3, rtol=1e-3)
    check_with_onnxruntime(out / "decoder.onnx", {k: v for k, v in feeds.items()},
                           {"masks": masks, "iou_predictions": iou, "low_res_masks": low}, 1e-3, 1e-3)
    m.write()

    # End-to-end reference through the official predictor (original-image coordinates in, masks
    # at original resolution out) for the pipeline tests.
    predictor = SamPredictor(sam)
    predictor.set_image(photo)
    e2e = {}
    prompts = e2e_prompts()
    e2e_dir = out / "e2e"
    e2e_dir.mkdir(exist_ok=True)
    from pycocotools import mask as coco_mask

    def save(name, masks, iou, prompt):
        np.save(e2e_dir / f"{name}.masks.npy", masks.astype(np.uint8))
        np.save(e2e_dir / f"{name}.iou.npy", iou.astype(np.float32))
        rles = [coco_mask.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
        (e2e_dir / f"{name}.rle.json").write_text(json.dumps(
            [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]) + "\n")
        e2e[name] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in prompt.items()}

    low_res = {}
    for name, prompt in prompts.items():
        masks, iou, low = predictor.predict(multimask_output=True, return_logits=False, **prompt)
        low_res[name] = (low, iou)
        save(name, masks, iou, prompt)
    # The single-mask output, and a refinement that feeds back the best low-res mask.
    single = prompts["point"]
    masks, iou, _ = predictor.predict(multimask_output=False, **single)
    save("point_single", masks, iou, {**single, "multimask_output": False})
    low, iou = low_res["point"]
    best = int(np.argmax(iou))
    refine = dict(point_coords=np.array([[100, 60], [120, 80]], dtype=np.float32), point_labels=np.array([1, 1]))
    masks, iou, _ = predictor.predict(multimask_output=True, mask_input=low[best:best + 1], **refine)
    np.save(e2e_dir / "refine.mask_input.npy", low[best].astype(np.float32))
    save("refine", masks, iou, refine)
    (e2e_dir / "prompts.json").write_text(json.dumps(e2e, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="tiny architecture with random weights + goldens")
    ap.add_argument("--checkpoint", type=Path, help="official SAM checkpoint (.pth)")
    ap.add_argument("--model-type", default="vit_b", choices=sorted(sam_model_registry))
    ap.add_argument("--random-weights", action="store_true",
                    help="real-size architecture of --model-type with random weights (benchmarks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ", ".join(PARTS))
    args = ap.parse_args()
    parts = tuple(p for p in args.parts.split(",") if p)
    seed_everything(args.seed)
    if args.tiny:
        sam = build_tiny_sam(args.seed)
        calibrate_decoder(sam, sample_photo())
    elif args.checkpoint or args.random_weights:
        sam = sam_model_registry[args.model_type](checkpoint=str(args.checkpoint) if args.checkpoint else None)
        sam.eval()
        if args.random_weights:
            rerandomize(sam, args.seed)
    else:
        ap.error("give --tiny, --checkpoint or --random-weights")
    export(sam, args.out, parts)
    if args.tiny:
        goldens(sam, args.out)


if __name__ == "__main__":
    main()
