"""``glide-sample``: text-to-image sampling with classifier-free guidance from a model file.

    glide-sample --prompt "a red circle" --prompt "a blue square" --guidance 3 --steps fast27 \\
        --batch 4 --seed 0 --out samples/cli

writes ``<out>/<prompt index>_<image index>.png`` for every image, ``<out>/grid.png`` (captioned)
and ``<out>/samples.json`` (prompts, files, settings, the model's MLflow run).

The command runs in steps (load, generate, write) so that the cascade (``--upsample``) and
editing (``--image``/``--mask``) add their step without changing the others.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.diffusion import create_diffusion
from pipeline.io import atomic_output_path, atomic_write_text
from pipeline.models.model_file import ModelFileError
from pipeline.sampling.grid import captioned_grid
from pipeline.sampling.loading import load_sampling_model
from pipeline.sampling.text_to_image import sample_text_to_image
from pipeline.text import CaptionTruncatedWarning, encode_batch


class UsageError(ValueError):
    """A command-line value the command cannot use."""


def finite_float(text: str) -> float:
    """argparse type: a finite number (rejects "abc", "nan", "inf" with a clear message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glide-sample",
        description="Sample images from a trained GLIDE model with classifier-free guidance.",
    )
    parser.add_argument(
        "--prompt", action="append", default=[], help="a caption (repeat for several)"
    )
    parser.add_argument(
        "--model", default="models/cfg.pt", help="model file (default: models/cfg.pt)"
    )
    parser.add_argument(
        "--guidance",
        type=finite_float,
        default=3.0,
        help="classifier-free guidance scale s; 1 = conditional model alone (default 3)",
    )
    parser.add_argument(
        "--steps",
        default="100",
        help='sampling steps: "100", "fast27", "ddim50", or sections like "10,10,5" (default 100)',
    )
    parser.add_argument(
        "--batch", type=positive_int, default=1, help="images per prompt (default 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--threshold",
        type=finite_float,
        default=None,
        help="dynamic thresholding percentile in (0, 1) instead of clipping x0 to [-1, 1]",
    )
    parser.add_argument("--device", default="", help="cpu, cuda, cuda:1 (default: cuda if any)")
    parser.add_argument("--gpt2-encoder-json", default="", help="GPT-2 BPE models only")
    parser.add_argument("--gpt2-vocab-bpe", default="", help="GPT-2 BPE models only")
    return parser


def check_args(args: argparse.Namespace) -> None:
    if not args.prompt:
        raise UsageError("no prompt given: pass at least one --prompt")
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise UsageError(f"--threshold must be in (0, 1), got {args.threshold}")
    try:
        create_diffusion(1000, "linear", args.steps)
    except ValueError as err:
        raise UsageError(f"--steps {args.steps!r}: {err}") from err


def generate(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, dict]:
    """Text-to-image: uint8 images [P * batch, H, W, 3], prompt-major, and the model's info."""
    loaded = load_sampling_model(
        args.model,
        device=device,
        expect="text2im",
        gpt2_encoder_json=args.gpt2_encoder_json,
        gpt2_vocab_bpe=args.gpt2_vocab_bpe,
    )
    text_ctx = int(loaded.model.text_ctx)
    encoded = encode_batch(loaded.tokenizer, list(args.prompt), text_ctx)
    for index, truncated in enumerate(encoded.truncated):
        if truncated:
            print(
                f"glide-sample: warning: prompt {index} is longer than the model's "
                f"text_ctx={text_ctx} tokens and is truncated (as GLIDE does)",
                file=sys.stderr,
            )
    prompts = [prompt for prompt in args.prompt for _ in range(args.batch)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaptionTruncatedWarning)  # reported above, per prompt
        images = _sample(loaded, prompts, args, device)
    return images, loaded.info


def _sample(loaded: Any, prompts: list[str], args: argparse.Namespace, device: torch.device):
    return sample_text_to_image(
        loaded.model,
        loaded.tokenizer,
        prompts,
        guidance_scale=args.guidance,
        steps=args.steps,
        diffusion_steps=loaded.diffusion_steps,
        noise_schedule=loaded.noise_schedule,
        seed=args.seed,
        batch_size=args.batch,
        device=device,
        threshold=args.threshold,
        progress=True,
    )


def write_outputs(
    images: torch.Tensor, args: argparse.Namespace, info: dict[str, Any]
) -> list[Path]:
    """Each image as PNG, the captioned grid and samples.json, all written atomically."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files, captions, records = [], [], []
    for index, image in enumerate(images.numpy()):
        prompt_index, image_index = divmod(index, args.batch)
        path = out / f"{prompt_index:03d}_{image_index:03d}.png"
        with atomic_output_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        files.append(path)
        captions.append(args.prompt[prompt_index])
        records.append({"file": path.name, "prompt": args.prompt[prompt_index]})
    grid = captioned_grid(np.asarray(images), captions, columns=max(args.batch, 1))
    with atomic_output_path(out / "grid.png") as tmp:
        grid.save(tmp, format="PNG")
    summary = {
        "model": str(args.model),
        "model_stage": info.get("stage", ""),
        "model_step": info.get("step"),
        "model_mlflow_run_id": info.get("mlflow_run_id", ""),
        "guidance": args.guidance,
        "steps": args.steps,
        "seed": args.seed,
        "images": records,
    }
    atomic_write_text(out / "samples.json", json.dumps(summary, indent=2) + "\n")
    return [*files, out / "grid.png"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        images, info = generate(args, device)
        written = write_outputs(images, args, info)
    except (UsageError, ModelFileError) as err:
        parser.exit(2, f"glide-sample: error: {err}\n")
    print(f"wrote {len(written) - 1} images and {written[-1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
