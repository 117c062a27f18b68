"""Export DINOv2 (HF transformers `Dinov2Model`) to the Optimum / onnx-community layout edgeinfer
loads, and (with --tiny) record PyTorch goldens.

Files written to --out:
  model.onnx                 pixel_values [batch_size, num_channels, height, width]
                             -> last_hidden_state [batch_size, sequence_length, hidden],
                                pooler_output [batch_size, hidden]
  config.json                the transformers config
  preprocessor_config.json   the BitImageProcessor config shipped with DINOv2 checkpoints

Production use:
  python export_dinov2.py --hf-model /path/to/dinov2-small --out /srv/models/dinov2-small
Benchmark model (real DINOv2-S/14 size, random weights):
  python export_dinov2.py --random-weights --size small --out /tmp/dinov2-s
Fixture:
  python export_dinov2.py --tiny --out ../fixtures/dinov2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, BitImageProcessor, Dinov2Config, Dinov2Model

from common import Manifest, check_with_onnxruntime, onnx_size_report, rerandomize, seed_everything

OPSET = 17

# The preprocessor_config.json of facebook/dinov2-{small,base,large,giant}.
PREPROCESSOR = dict(
    crop_size={"height": 224, "width": 224},
    do_center_crop=True,
    do_convert_rgb=True,
    do_normalize=True,
    do_rescale=True,
    do_resize=True,
    image_mean=[0.485, 0.456, 0.406],
    image_std=[0.229, 0.224, 0.225],
    resample=3,
    rescale_factor=0.00392156862745098,
    size={"shortest_edge": 256},
)

SIZES = {
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


class Wrapper(torch.nn.Module):
    def __init__(self, model: Dinov2Model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        return out.last_hidden_state, out.pooler_output


def export(model: Dinov2Model, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    example = torch.randn(2, 3, 224, 224)
    torch.onnx.export(
        Wrapper(model), (example,), out / "model.onnx", input_names=["pixel_values"],
        output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes={
            "pixel_values": {0: "batch_size", 2: "height", 3: "width"},
            "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
            "pooler_output": {0: "batch_size"},
        },
        opset_version=OPSET, do_constant_folding=True, dynamo=False,
    )
    model.config.save_pretrained(out)
    BitImageProcessor(**PREPROCESSOR).save_pretrained(out)
    print(onnx_size_report(out / "model.onnx"))


def photos() -> dict[str, np.ndarray]:
    """Real photos bundled with scikit-image, at sizes that exercise down- and up-scaling."""
    from skimage import data

    return {
        "chelsea": data.chelsea(),  # 300x451: shortest edge 300 -> 256 (downscale)
        "coffee": data.coffee()[::2, ::2].copy(),  # 200x300: upscale to 256
        "astronaut": data.astronaut()[20:270, 150:330].copy(),  # 250x180 portrait: upscale, width short
    }


@torch.no_grad()
def goldens(model: Dinov2Model, out: Path, photo_dir: Path) -> None:
    m = Manifest(out)
    # The PIL backend: resizing exactly as PIL does, which is what DINOv2 was trained with and
    # what the issue's parity target names. (transformers 5's default torchvision backend differs
    # from it by up to ~1/255 after normalisation.)
    processor = AutoImageProcessor.from_pretrained(out, backend="pil")
    photo_dir.mkdir(parents=True, exist_ok=True)
    golden = out / "golden"
    golden.mkdir(exist_ok=True)
    pixel = {}
    for name, arr in photos().items():
        Image.fromarray(arr).save(photo_dir / f"{name}.png")
        # The HF processor on the decoded PNG, as a user would call it; and the reference
        # embedding of that photo, for the end-to-end pipeline tests.
        pixel[name] = processor(images=Image.open(photo_dir / f"{name}.png"), return_tensors="pt")["pixel_values"]
        np.save(golden / f"preprocess.{name}.npy", pixel[name][0].numpy())
        np.save(golden / f"e2e.{name}.last_hidden_state.npy", model(pixel_values=pixel[name]).last_hidden_state[0].numpy())
    # Graph parity on a batch of two at a smaller resolution (position embeddings interpolated).
    batch = torch.nn.functional.interpolate(torch.cat([pixel["chelsea"], pixel["coffee"]]), size=(112, 112),
                                            mode="bilinear")
    res = model(pixel_values=batch)
    outputs = {"last_hidden_state": res.last_hidden_state, "pooler_output": res.pooler_output}
    m.add("batch2_112", "model.onnx", {"pixel_values": batch}, outputs, atol=1e-4, rtol=1e-3)
    check_with_onnxruntime(out / "model.onnx", {"pixel_values": batch}, outputs, 1e-4, 1e-3)
    single = torch.nn.functional.interpolate(pixel["coffee"], size=(98, 126), mode="bilinear")
    res = model(pixel_values=single)
    m.add("single_98x126", "model.onnx", {"pixel_values": single},
          {"last_hidden_state": res.last_hidden_state, "pooler_output": res.pooler_output}, atol=1e-4, rtol=1e-3)
    m.write()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--hf-model", help="HF model directory or id (local files only)")
    ap.add_argument("--random-weights", action="store_true", help="real-size architecture, random weights")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seed_everything(args.seed)
    if args.tiny:
        config = Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                              patch_size=14, image_size=518)
        model = Dinov2Model(config)
        rerandomize(model, args.seed)
    elif args.random_weights:
        config = Dinov2Config(patch_size=14, image_size=518, **SIZES[args.size])
        model = Dinov2Model(config)
        rerandomize(model, args.seed)
    elif args.hf_model:
        model = Dinov2Model.from_pretrained(args.hf_model)
    else:
        ap.error("give --tiny, --hf-model or --random-weights")
    model.eval()
    export(model, args.out)
    if args.tiny:
        goldens(model, args.out, args.out.parent / "photos")


if __name__ == "__main__":
    main()
