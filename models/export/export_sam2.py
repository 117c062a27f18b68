"""Export Segment Anything 2 (Meta's `sam2` package) to the ONNX layout edgeinfer loads (the
samexporter SAM 2 layout), and (with --tiny) record PyTorch goldens for the parity tests.

Files written to --out:
  encoder.onnx   input image [1, 3, S, S] float32 (what SAM2ImagePredictor.set_image feeds the
                 model, see "Host preprocessing" below)
                 -> high_res_feats_0 [1, C/8, S/4, S/4]   (FPN level 0 through mask_decoder.conv_s0)
                    high_res_feats_1 [1, C/4, S/8, S/8]   (FPN level 1 through mask_decoder.conv_s1)
                    image_embed      [1, C, S/16, S/16]   (FPN level 2 + no_mem_embed)
                 i.e. exactly SAM2ImagePredictor._features after set_image.
  decoder.onnx   image_embed, high_res_feats_0, high_res_feats_1, point_coords [1, N, 2] (x, y in
                 the S x S input space, N dynamic), point_labels [1, N] float (1 fg, 0 bg, 2/3 box
                 top-left/bottom-right), mask_input [1, 1, S/4, S/4], has_mask_input [1]
                 -> masks [1, 3, S/4, S/4] low-res logits of the three multimask tokens (1..3),
                    clamped to [-32, 32]; iou_predictions [1, 3]
                 The graph appends the padding point (label -1) itself, shifts points by +0.5
                 pixel and divides by S, as PromptEncoder._embed_points(pad=True) does.
  manifest.json  family, image size, pixel mean/std (0..255 scale), resize rule, file roles
  (--tiny only) photo.png, cases.json + golden/ (per-graph goldens), e2e/ (official predictor)

Host preprocessing (sam2/utils/transforms.py SAM2Transforms, lines 27-39):
  RGB uint8 HWC -> ToTensor (/255, CHW) -> torchvision Resize((S, S)) on the tensor: a stretch
  (no aspect ratio kept, no padding), bilinear WITH antialias (torchvision >= 0.17 default
  antialias=True; matters when a side shrinks) -> Normalize(ImageNet mean/std). Equivalent to
  (resize(x) - 255*mean) / (255*std) on the 0..255 scale, the manifest's pixel_mean/pixel_std.
Prompts (transforms.py transform_coords/transform_boxes lines 46-74; sam2_image_predictor.py
  _prep_prompts lines 305-334 and _predict lines 387-410):
  x' = x * S / W, y' = y * S / H (original pixel coordinates, no clamping, no rounding). A box
  [x0, y0, x1, y1] becomes two points (x0', y0') label 2 and (x1', y1') label 3, placed BEFORE
  the click points; the padding point is then appended after everything (also for box-only).
Postprocessing (transforms.py postprocess_masks line 117, predictor _predict lines 431-437):
  masks = bilinear upsample of the low-res logits to (H, W), align_corners=False, antialias off,
  then logits > 0 (mask_threshold). The predictor upsamples the UNclamped logits and clamps only
  the returned low-res logits to [-32, 32]; this graph returns clamped logits (identical masks
  unless a logit exceeds 32 in magnitude next to a sign change). Hole/sprinkle filling is off by
  default (max_hole_area = max_sprinkle_area = 0). The low-res logits feed back as mask_input
  unchanged (has_mask_input = 1).

Production use (weights from the official release):
  python export_sam2.py --checkpoint sam2.1_hiera_tiny.pt --model-cfg sam2.1_hiera_t.yaml --out /srv/models/sam2.1-t
Fixture (tiny architecture, random seeded weights, goldens):
  python export_sam2.py --tiny --out ../fixtures/sam2
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from PIL import Image

from common import (Manifest, check_with_onnxruntime, onnx_size_report, rerandomize, scale_mask_logits,
                    seed_everything, spread_mask_logits)
from export_sam import e2e_prompts, sample_photo

from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.transformer import RoPEAttention, TwoWayTransformer
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor

OPSET = 17
# SAM2Transforms normalises x/255 with ImageNet mean/std; the same on the 0..255 scale:
PIXEL_MEAN = [123.675, 116.28, 103.53]  # 255 * (0.485, 0.456, 0.406)
PIXEL_STD = [58.395, 57.12, 57.375]  # 255 * (0.229, 0.224, 0.225)


def build_tiny_sam2(seed: int) -> SAM2Base:
    """The official SAM2Base with a tiny configuration mirroring sam2.1_hiera_t.yaml's flags:
    128 px input; Hiera trunk embed_dim 4, 1 head, stages [1, 1, 2, 1] (dims 4/8/16/32, heads
    1/2/4/8, head width 4), windows (8, 4, 4, 2), global attention in block 3 (stage 3),
    window-pos-embed background 4x4 (width 8 would triple the file: stage 4's MLP dominates);
    FpnNeck d_model 32 with nearest top-down on levels [2, 3] and scalp 1 (so FPN levels at
    32x32, 16x16, 8x8); prompt encoder / mask decoder width 32 with high-res features, object-score
    token and sigmoid IoU head; one-layer memory attention and a small memory encoder (unused by
    the image predictor but required by the constructor)."""
    image_size, d_model, mem_dim = 128, 32, 16
    grid = image_size // 16
    trunk = Hiera(
        embed_dim=4,
        num_heads=1,
        stages=(1, 1, 2, 1),
        window_spec=(8, 4, 4, 2),
        global_att_blocks=(3,),
        window_pos_embed_bkg_spatial_size=(4, 4),
    )
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=d_model, normalize=True, image_size=image_size),
        d_model=d_model,
        backbone_channel_list=trunk.channel_list,  # [32, 16, 8, 4]
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    rope = dict(rope_theta=10000.0, feat_sizes=[grid, grid], embedding_dim=d_model, num_heads=1,
                downsample_rate=1, dropout=0.1)
    memory_attention = MemoryAttention(
        d_model=d_model,
        pos_enc_at_input=True,
        num_layers=1,
        layer=MemoryAttentionLayer(
            activation="relu", d_model=d_model, dim_feedforward=64, dropout=0.1, pos_enc_at_attn=False,
            pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
            self_attention=RoPEAttention(**rope),
            cross_attention=RoPEAttention(**rope, rope_k_repeat=True, kv_in_dim=mem_dim),
        ),
    )
    memory_encoder = MemoryEncoder(
        out_dim=mem_dim,
        in_dim=d_model,
        position_encoding=PositionEmbeddingSine(num_pos_feats=mem_dim, normalize=True, image_size=image_size),
        mask_downsampler=MaskDownSampler(embed_dim=d_model, kernel_size=4, stride=4, padding=0),
        fuser=Fuser(CXBlock(dim=d_model, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True),
                    num_layers=1),
    )
    sam = SAM2Base(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=1),
        memory_attention=memory_attention,
        memory_encoder=memory_encoder,
        num_maskmem=7,
        image_size=image_size,
        backbone_stride=16,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        no_obj_embed_spatial=True,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True,
        use_signed_tpos_enc_to_obj_ptrs=True,
        only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
        # What build_sam2(apply_postprocessing=True) adds.
        sam_mask_decoder_extra_args=dict(dynamic_multimask_via_stability=True,
                                         dynamic_multimask_stability_delta=0.05,
                                         dynamic_multimask_stability_thresh=0.98),
    )
    # SAM2Base._build_sam_heads hard-codes the decoder transformer (mlp 2048, 8 heads) and a
    # 256-wide IoU head: ~1 MB at width 32. Swap in the same official MaskDecoder, just smaller.
    sam.sam_mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=d_model, mlp_dim=64, num_heads=2),
        transformer_dim=d_model,
        iou_head_depth=3,
        iou_head_hidden_dim=32,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        **sam.sam_mask_decoder_extra_args,
    )
    sam.eval()
    rerandomize(sam, seed)
    # The prompt encoder's positional-encoding Gaussian matrix is a buffer, not a parameter: kept as built.
    return sam


def make_predictor(sam: SAM2Base) -> SAM2ImagePredictor:
    predictor = SAM2ImagePredictor(sam)
    # The predictor hard-codes the backbone feature sizes of a 1024 px model
    # (sam2_image_predictor.py lines 62-66); derive them from the model's image size instead.
    s = sam.image_size
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return predictor


@torch.no_grad()
def calibrate_decoder(sam: SAM2Base, photo: np.ndarray, target_std: float = 4.0) -> None:
    """Random weights give mask logits dominated by one offset (the upscaled embedding is mostly
    positive after its final GELU), so every mask is all-on or all-off. Project each hypernetwork's
    output layer orthogonally to the mean upscaled embedding and scale it so logits have a useful
    spread. This only chooses other random weights; the architecture is untouched (as in
    export_sam.calibrate_decoder)."""
    captured = {}
    # The high-res path calls output_upscaling's modules one by one; its last GELU gives the
    # upscaled embedding.
    act2 = sam.sam_mask_decoder.output_upscaling[4]
    hook = act2.register_forward_hook(lambda m, i, o: captured.__setitem__("up", o))
    predictor = make_predictor(sam)
    predictor.set_image(photo)
    h, w = photo.shape[:2]
    centre = dict(point_coords=np.array([[w / 2, h / 2]], dtype=np.float32), point_labels=np.array([1]))
    predictor.predict(**centre)
    hook.remove()
    spread_mask_logits(sam.sam_mask_decoder.output_hypernetworks_mlps, captured["up"].mean(dim=(0, 2, 3)))
    _, _, low = predictor.predict(return_logits=True, **centre)
    scale_mask_logits(sam.sam_mask_decoder.output_hypernetworks_mlps, low, target_std)


@contextlib.contextmanager
def frozen_pos_embed(trunk: Hiera, hw: tuple[int, int]):
    """Hiera interpolates its background positional embedding (bicubic Resize) on every call.
    At a fixed input size it is a constant: precompute it so the graph carries a plain initializer
    instead of a run-time bicubic Resize (which tract does not run)."""
    with torch.no_grad():
        pos = trunk._get_pos_embed(hw).detach().clone()
    trunk._get_pos_embed = lambda _hw: pos  # instance attribute shadows the method
    try:
        yield
    finally:
        del trunk._get_pos_embed


class Sam2Encoder(torch.nn.Module):
    """Image -> the three feature maps SAM2ImagePredictor.set_image stores."""

    def __init__(self, sam: SAM2Base):
        super().__init__()
        self.image_encoder = sam.image_encoder
        self.conv_s0 = sam.sam_mask_decoder.conv_s0
        self.conv_s1 = sam.sam_mask_decoder.conv_s1
        self.no_mem_embed = sam.no_mem_embed  # [1, 1, C]
        self.directly_add_no_mem_embed = sam.directly_add_no_mem_embed

    @torch.no_grad()
    def forward(self, image: torch.Tensor):
        fpn = self.image_encoder(image)["backbone_fpn"]  # high to low resolution, scalp applied
        feat0 = self.conv_s0(fpn[0])
        feat1 = self.conv_s1(fpn[1])
        embed = fpn[2]
        if self.directly_add_no_mem_embed:
            embed = embed + self.no_mem_embed.reshape(1, -1, 1, 1)
        return feat0, feat1, embed


class Sam2Decoder(torch.nn.Module):
    """Prompt encoder (points incl. box corners, padded; dense mask or no-mask embedding chosen by
    has_mask_input) + mask decoder with high-res features; multimask tokens 1..3."""

    def __init__(self, sam: SAM2Base):
        super().__init__()
        self.prompt_encoder = sam.sam_prompt_encoder
        self.mask_decoder = sam.sam_mask_decoder
        self.image_size = sam.image_size
        # Constant: the dense positional encoding of the embedding grid.
        self.register_buffer("image_pe", self.prompt_encoder.get_dense_pe().detach().clone())

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        coords = torch.cat([coords + 0.5, torch.zeros_like(coords[:, :1])], dim=1)
        labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1).unsqueeze(-1)
        emb = pe.pe_layer._pe_encoding(coords / self.image_size)  # square input: same divisor for x and y
        emb = torch.where(labels == -1, torch.zeros_like(emb) + pe.not_a_point_embed.weight, emb)
        for i, table in enumerate(pe.point_embeddings):
            emb = emb + (labels == i).to(emb.dtype) * table.weight
        return emb

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        dense = pe.mask_downscaling(mask_input)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        has = has_mask_input.reshape(-1, 1, 1, 1)
        return has * dense + (1 - has) * no_mask

    @torch.no_grad()
    def forward(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input,
                has_mask_input):
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        masks, iou, _, _ = self.mask_decoder.predict_masks(
            image_embeddings=image_embed,
            image_pe=self.image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[high_res_feats_0, high_res_feats_1],
        )
        return torch.clamp(masks[:, 1:], -32.0, 32.0), iou[:, 1:]


ENC_OUT = ["high_res_feats_0", "high_res_feats_1", "image_embed"]
DEC_IN = ["image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels", "mask_input",
          "has_mask_input"]


def finish_graph(path: Path, output_shapes: dict) -> None:
    """Post-process a traced graph: fold the tracer's shape arithmetic (onnxscript's optimizer:
    constant folding + dead-code elimination, standard ONNX ops only; everything but the point
    count is static), write the concrete output shapes (the tracer names every output dimension
    symbolically), and give intermediate values short names (the tracer's scope paths are ~40%
    of the file). Inputs, outputs and weight names are kept."""
    import onnxscript.optimizer

    model = onnxscript.optimizer.optimize(onnx.load(str(path)))
    for output in model.graph.output:
        for dim, value in zip(output.type.tensor_type.shape.dim, output_shapes[output.name]):
            dim.Clear()
            dim.dim_value = int(value)
    keep = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    keep |= {t.name for t in model.graph.initializer}
    renamed = {}
    for i, node in enumerate(model.graph.node):
        node.name = f"{node.op_type}_{i}"
        for j, name in enumerate(node.output):
            if name and name not in keep:
                renamed[name] = f"t{len(renamed)}"
                node.output[j] = renamed[name]
        for j, name in enumerate(node.input):
            node.input[j] = renamed.get(name, name)
    del model.graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def export(sam: SAM2Base, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    size = sam.image_size
    encoder = Sam2Encoder(sam).eval()
    image = torch.randn(1, 3, size, size)
    with frozen_pos_embed(sam.image_encoder.trunk, (size // 4, size // 4)):
        feats = encoder(image)
        torch.onnx.export(
            encoder, (image,), out / "encoder.onnx", input_names=["image"], output_names=ENC_OUT,
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    finish_graph(out / "encoder.onnx", dict(zip(ENC_OUT, (f.shape for f in feats))))
    decoder = Sam2Decoder(sam).eval()
    dummy = (
        feats[2], feats[0], feats[1],
        torch.randint(low=0, high=size, size=(1, 5, 2), dtype=torch.float),
        torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
        torch.randn(1, 1, size // 4, size // 4),
        torch.tensor([1.0]),
    )
    torch.onnx.export(
        decoder, dummy, out / "decoder.onnx", input_names=DEC_IN, output_names=["masks", "iou_predictions"],
        dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
        opset_version=OPSET, do_constant_folding=True, dynamo=False,
    )
    masks, iou = decoder(*dummy)
    finish_graph(out / "decoder.onnx", {"masks": masks.shape, "iou_predictions": iou.shape})
    manifest = {
        "family": "sam2",
        "layout": "samexporter-sam2",
        "image_size": size,
        "pixel_mean": PIXEL_MEAN,
        "pixel_std": PIXEL_STD,
        "resize": "stretch",
        "encoder": "encoder.onnx",
        "decoder": "decoder.onnx",
        "mask_threshold": 0.0,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for f in ["encoder.onnx", "decoder.onnx"]:
        print(onnx_size_report(out / f))


def run_onnx(path: Path, feeds: dict) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in feeds.items()}
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@torch.no_grad()
def goldens(sam: SAM2Base, out: Path) -> None:
    m = Manifest(out)
    size = sam.image_size
    photo = sample_photo()
    Image.fromarray(photo).save(out / "photo.png")
    h, w = photo.shape[:2]

    # Encoder: the predictor's own transform and features.
    predictor = make_predictor(sam)
    predictor.set_image(photo)
    image = predictor._transforms(photo)[None]
    feats = predictor._features
    enc_out = {"high_res_feats_0": feats["high_res_feats"][0], "high_res_feats_1": feats["high_res_feats"][1],
               "image_embed": feats["image_embed"]}
    mine = Sam2Encoder(sam)(image)
    for (k, want), got in zip(enc_out.items(), mine):
        assert torch.allclose(want, got, atol=1e-5), f"encoder wrapper disagrees with the predictor on {k}"
    m.add("encoder", "encoder.onnx", {"image": image}, enc_out, atol=1e-4, rtol=1e-3)
    check_with_onnxruntime(out / "encoder.onnx", {"image": image}, enc_out, 1e-4, 1e-3)

    decoder = Sam2Decoder(sam)
    no_mask = torch.zeros(1, 1, size // 4, size // 4)

    def coords(points) -> torch.Tensor:
        return predictor._transforms.transform_coords(
            torch.tensor(points, dtype=torch.float), normalize=True, orig_hw=(h, w))[None]

    def labels(values) -> torch.Tensor:
        return torch.tensor([values], dtype=torch.float)

    cases = {
        "one_point": (coords([[100, 60]]), labels([1]), no_mask, 0.0),
        "three_points": (coords([[100, 60], [130, 40], [20, 100]]), labels([1, 1, 0]), no_mask, 0.0),
        # Box corners first (labels 2, 3), as SAM2ImagePredictor concatenates them before points.
        "box": (coords([[40, 15], [150, 110]]), labels([2, 3]), no_mask, 0.0),
    }
    results = {}

    def add(name, pc, pl, mask_in, has_mask):
        feeds = {"image_embed": enc_out["image_embed"], "high_res_feats_0": enc_out["high_res_feats_0"],
                 "high_res_feats_1": enc_out["high_res_feats_1"], "point_coords": pc, "point_labels": pl,
                 "mask_input": mask_in, "has_mask_input": torch.tensor([has_mask])}
        masks, iou = decoder(**feeds)
        expected = {"masks": masks, "iou_predictions": iou}
        m.add(f"decoder_{name}", "decoder.onnx", feeds, expected, atol=1e-3, rtol=1e-3)
        check_with_onnxruntime(out / "decoder.onnx", feeds, expected, 1e-3, 1e-3)
        results[name] = (masks, iou)

    for name, args in cases.items():
        add(name, *args)
    # A follow-up click that feeds back the best low-res mask of the first one.
    low1, iou1 = results["one_point"]
    best = int(iou1[0].argmax())
    add("mask_prompt", coords([[100, 60], [120, 80]]), labels([1, 1]), low1[:, best:best + 1], 1.0)
    m.write()

    # End-to-end reference through the official predictor (original-image coordinates in, masks
    # at original resolution out), cross-checked against decoder.onnx + host-side postprocessing.
    e2e_dir = out / "e2e"
    e2e_dir.mkdir(exist_ok=True)
    np.save(e2e_dir / "input_image.npy", image.numpy().astype(np.float32))
    prompts = e2e_prompts()
    from pycocotools import mask as coco_mask

    e2e = {}
    report = []

    def host_pipeline(prompt, mask_input):
        """What edgeinfer does: scale coordinates, box corners first, decoder.onnx, upsample, threshold."""
        pts, lbl = [], []
        if "box" in prompt:
            b = np.asarray(prompt["box"], dtype=np.float64)
            pts += [[b[0], b[1]], [b[2], b[3]]]
            lbl += [2, 3]
        if "point_coords" in prompt:
            pts += np.asarray(prompt["point_coords"], dtype=np.float64).tolist()
            lbl += np.asarray(prompt["point_labels"]).tolist()
        pts = np.array(pts, dtype=np.float64)
        pts[:, 0] *= size / w
        pts[:, 1] *= size / h
        feeds = {k: enc_out[k] for k in ENC_OUT}
        feeds.update(point_coords=pts[None].astype(np.float32), point_labels=np.array([lbl], dtype=np.float32),
                     mask_input=(no_mask.numpy() if mask_input is None else mask_input[None].astype(np.float32)),
                     has_mask_input=np.array([0.0 if mask_input is None else 1.0], dtype=np.float32))
        got = run_onnx(out / "decoder.onnx", feeds)
        up = F.interpolate(torch.from_numpy(got["masks"]), (h, w), mode="bilinear", align_corners=False)
        return (up[0] > 0).numpy(), got["iou_predictions"][0], got["masks"][0]

    def save(name, prompt, mask_input=None):
        masks, iou, low = predictor.predict(multimask_output=True, mask_input=mask_input, **prompt)
        masks = masks.astype(np.uint8)
        np.save(e2e_dir / f"{name}.masks.npy", masks)
        np.save(e2e_dir / f"{name}.iou.npy", iou.astype(np.float32))
        np.save(e2e_dir / f"{name}.low_res.npy", low.astype(np.float32))
        rles = [coco_mask.encode(np.asfortranarray(mk)) for mk in masks]
        (e2e_dir / f"{name}.rle.json").write_text(json.dumps(
            [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]) + "\n")
        e2e[name] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in prompt.items()}
        onnx_masks, onnx_iou, onnx_low = host_pipeline(prompt, mask_input)
        assert np.allclose(onnx_iou, iou, atol=1e-4), f"{name}: onnx iou {onnx_iou} vs predictor {iou}"
        assert np.allclose(onnx_low, low, atol=1e-3), f"{name}: onnx low-res logits differ from the predictor"
        for k in range(masks.shape[0]):
            inter = np.logical_and(onnx_masks[k], masks[k]).sum()
            union = np.logical_or(onnx_masks[k], masks[k]).sum()
            miou = inter / union if union else 1.0
            area = masks[k].mean()
            report.append(f"  {name}[{k}] area {100 * area:5.1f}%  iou_pred {iou[k]:.3f}  onnx-vs-predictor IoU "
                          f"{miou:.6f} ({int((onnx_masks[k] != masks[k]).sum())} px differ)")
        return low, iou

    low_res = {name: save(name, prompt) for name, prompt in prompts.items()}
    low, iou = low_res["point"]
    best = int(np.argmax(iou))
    refine = dict(point_coords=np.array([[100, 60], [120, 80]], dtype=np.float32), point_labels=np.array([1, 1]))
    np.save(e2e_dir / "refine.mask_input.npy", low[best].astype(np.float32))
    save("refine", refine, mask_input=low[best:best + 1])
    (e2e_dir / "prompts.json").write_text(json.dumps(e2e, indent=2) + "\n")
    print("e2e masks (predictor) and the host pipeline on decoder.onnx:")
    print("\n".join(report))


def resolve_config(name: str) -> str:
    """Accept a bare config name (sam2.1_hiera_t.yaml) or a path inside the sam2 package."""
    import sam2

    root = Path(sam2.__file__).parent
    for candidate in (name, f"configs/sam2.1/{name}", f"configs/sam2/{name}"):
        if (root / candidate).is_file():
            return candidate
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="tiny architecture with random weights + goldens")
    ap.add_argument("--checkpoint", type=Path, help="official SAM 2 / 2.1 checkpoint (.pt)")
    ap.add_argument("--model-cfg", default="sam2.1_hiera_t.yaml", help="sam2 config matching --checkpoint")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seed_everything(args.seed)
    if args.tiny:
        sam = build_tiny_sam2(args.seed)
        calibrate_decoder(sam, sample_photo())
    elif args.checkpoint:
        from sam2.build_sam import build_sam2

        sam = build_sam2(resolve_config(args.model_cfg), str(args.checkpoint), device="cpu")
    else:
        ap.error("give --tiny or --checkpoint")
    export(sam, args.out)
    if args.tiny:
        goldens(sam, args.out)


if __name__ == "__main__":
    main()
