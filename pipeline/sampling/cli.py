"""``glide-sample``: text-to-image sampling and text-guided editing from a model file.

    glide-sample --prompt "a red circle" --prompt "a blue square" --guidance 3 --steps fast27 \\
        --batch 4 --seed 0 --out samples/cli

writes ``<out>/<prompt index>_<image index>.png`` for every image, ``<out>/grid.png`` (captioned)
and ``<out>/samples.json`` (prompts, files, settings, the model's MLflow run).

Editing: ``--image IN.png --mask MASK.png`` (white keep, black generate; ``--invert-mask`` for the
reverse) regenerates the masked region with the inpainting model (models/inpaint.pt), guidance 5
by default; ``--baseline-replace`` does the same edit with the text-to-image model by replacing
the known region only.

Cascade: ``--upsample`` passes the base samples, quantised to 8 bits, through the upsampler
(models/upsampler.pt) with the same caption, "fast27" steps, initial noise scaled by 0.997 and no
guidance, as GLIDE does; the images written are the upsampled ones, the base samples are kept as
``<prompt index>_<image index>_base.png``. With editing, ``--image``/``--mask`` are then at the
upsampler's resolution: the base model edits their downsampled versions and the upsampler keeps
the known high-res region.

Instruction editing: ``--edit IN.png --instruction "make the circle blue"`` edits without a mask
with models/instruct.pt (:mod:`pipeline.sampling.cli_instruct`).

CLIP guidance: ``--clip-guidance SCALE`` steers the CFG-fine-tuned base model (models/cfg.pt),
sampled without classifier-free guidance as in GLIDE's comparison, with the gradient of the noised
CLIP's similarity (``--clip-model``, default models/noised_clip.pt) at every step.

The command runs in steps (load, generate, write) so that the cascade (``--upsample``) and
editing (``--image``/``--mask``) add their step without changing the others.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from pipeline.diffusion import SamplerSettings, create_diffusion
from pipeline.io import OutputWriteError
from pipeline.models.clip_file import load_noised_clip
from pipeline.models.execution import SAMPLING_PRECISIONS
from pipeline.models.model_file import ModelFileError
from pipeline.sampling.cascade import sample_cascade
from pipeline.sampling.cli_instruct import (
    add_instruct_arguments,
    check_instruct_args,
    generate_instruct_edits,
)
from pipeline.sampling.cli_outputs import write_outputs
from pipeline.sampling.clip_guided import check_clip_for_model, sample_clip_guided
from pipeline.sampling.inpaint import check_edit_inputs, sample_inpaint
from pipeline.sampling.loading import SamplingModel, load_sampling_model
from pipeline.sampling.text_to_image import sample_text_to_image
from pipeline.sampling.tiles import Tiling
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
    for add_arguments in (
        _add_sampling_arguments,
        _add_edit_arguments,
        _add_cascade_arguments,
        _add_clip_arguments,
        lambda p: add_instruct_arguments(p, finite_float),
        _add_runtime_arguments,
    ):
        add_arguments(parser)
    return parser


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Prompts, model, guidance, steps, batch, seed, output folder, thresholding."""
    parser.add_argument(
        "--prompt", action="append", default=[], help="a caption (repeat for several)"
    )
    parser.add_argument(
        "--model",
        default="",
        help="model file (default: models/cfg.pt; models/inpaint.pt when editing)",
    )
    parser.add_argument(
        "--guidance",
        type=finite_float,
        default=None,
        help="classifier-free guidance scale s; 1 = conditional model alone "
        "(default 3; 5 when editing, as GLIDE)",
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


def _add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    edit = parser.add_argument_group("editing (inpainting)")
    edit.add_argument("--image", default="", help="PNG/JPEG to edit, at the model's resolution")
    edit.add_argument("--mask", default="", help="mask image: white = keep, black = generate")
    edit.add_argument("--invert-mask", action="store_true", help="white = generate instead")
    edit.add_argument(
        "--baseline-replace",
        action="store_true",
        help="edit with the text-to-image model by replacing the known region only "
        "(the baseline GLIDE compares against; default model models/cfg.pt)",
    )


def _add_cascade_arguments(parser: argparse.ArgumentParser) -> None:
    cascade = parser.add_argument_group("cascade (GLIDE's upsampler)")
    cascade.add_argument(
        "--upsample", action="store_true", help="upsample the base samples (64 -> 256 in GLIDE)"
    )
    cascade.add_argument(
        "--upsampler-model", default="models/upsampler.pt", help="default models/upsampler.pt"
    )
    cascade.add_argument(
        "--upsample-steps", default="fast27", help="upsampler steps (default fast27, as GLIDE)"
    )
    cascade.add_argument(
        "--upsample-temp",
        type=finite_float,
        default=0.997,
        help="upsampler initial-noise scale (default 0.997, as GLIDE)",
    )
    cascade.add_argument(
        "--upsample-aug-level",
        type=int,
        default=0,
        help="noise-conditioning augmentation level (noise_cond_aug upsamplers only; default 0)",
    )
    cascade.add_argument(
        "--upsample-tile",
        type=int,
        default=0,
        help="run the upsampler on tiles of this size: its training crop size, for an upsampler "
        "trained on crops (default 0: whole images, as GLIDE)",
    )
    cascade.add_argument(
        "--upsample-tile-stride", type=int, default=8, help="pixels between tiles (default 8)"
    )
    cascade.add_argument(
        "--upsample-tile-below-t",
        type=int,
        default=200,
        help="tiles only at timesteps below this (default 200: the low-noise steps; 1000: all)",
    )
    cascade.add_argument(
        "--upsample-projection",
        action="store_true",
        help="keep the upsampler's x0 predictions at the base image's block means (not GLIDE's)",
    )


def _add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    clip = parser.add_argument_group("CLIP guidance (instead of classifier-free guidance)")
    clip.add_argument(
        "--clip-guidance",
        type=finite_float,
        default=None,
        metavar="SCALE",
        help="guide with the noised CLIP at this scale; no classifier-free guidance",
    )
    clip.add_argument(
        "--clip-model", default="models/noised_clip.pt", help="default models/noised_clip.pt"
    )


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Device, compilation, precision and GPT-2 vocabulary files."""
    parser.add_argument("--device", default="", help="cpu, cuda, cuda:1 (default: cuda if any)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the networks (CUDA graphs on a GPU): faster steps after a first, "
        "compiling call",
    )
    parser.add_argument(
        "--precision",
        default="32-true",
        choices=list(SAMPLING_PRECISIONS),
        help="the networks' precision: bf16-mixed / 16-mixed run them under autocast (tensor "
        "cores on a GPU; GLIDE samples in fp16), the sampler's maths stays float32",
    )
    parser.add_argument("--gpt2-encoder-json", default="", help="GPT-2 BPE models only")
    parser.add_argument("--gpt2-vocab-bpe", default="", help="GPT-2 BPE models only")


def check_args(args: argparse.Namespace) -> None:
    """Fill mode-dependent defaults; raise UsageError for values the command cannot use."""
    check_instruct_args(args, UsageError)
    if not args.prompt:
        raise UsageError("no prompt given: pass at least one --prompt")
    editing = bool(args.image or args.mask)
    if editing and not (args.image and args.mask):
        raise UsageError("editing needs both --image and --mask")
    if args.baseline_replace and not editing:
        raise UsageError("--baseline-replace is an editing option: also pass --image and --mask")
    if not args.model:
        inpaint_model = editing and not args.baseline_replace
        args.model = "models/inpaint.pt" if inpaint_model else "models/cfg.pt"
    if args.clip_guidance is not None:
        if editing or args.upsample:
            raise UsageError("--clip-guidance samples text-to-image only (no editing, no cascade)")
        if args.guidance not in (None, 1.0):
            raise UsageError(
                "--clip-guidance samples without classifier-free guidance, as GLIDE's "
                "comparison does: leave out --guidance"
            )
        args.guidance = 1.0
    if args.guidance is None:
        args.guidance = 5.0 if editing else 3.0
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise UsageError(f"--threshold must be in (0, 1), got {args.threshold}")
    try:
        create_diffusion(1000, "linear", args.steps)
    except ValueError as err:
        raise UsageError(f"--steps {args.steps!r}: {err}") from err
    if args.upsample:
        try:
            create_diffusion(1000, "linear", args.upsample_steps)
        except ValueError as err:
            raise UsageError(f"--upsample-steps {args.upsample_steps!r}: {err}") from err
        if args.upsample_temp <= 0:
            raise UsageError(f"--upsample-temp must be > 0, got {args.upsample_temp}")
        if args.upsample_aug_level < 0:
            raise UsageError(f"--upsample-aug-level must be >= 0, got {args.upsample_aug_level}")
        try:
            upsample_tiling(args)
        except ValueError as err:
            raise UsageError(f"--upsample-tile*: {err}") from err


def upsample_tiling(args: argparse.Namespace) -> Tiling:
    """The upsampler's tiling from ``--upsample-tile``, ``-stride`` and ``-below-t``."""
    return Tiling(args.upsample_tile, args.upsample_tile_stride, args.upsample_tile_below_t)


def read_image(path: str, what: str, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as opened:
            return np.asarray(opened.convert(mode))
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {what} {path}: {err}") from err


def read_edit_inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(image uint8 [H, W, 3], keep bool [H, W]) from --image / --mask (white = keep)."""
    image = torch.from_numpy(read_image(args.image, "image", "RGB").copy())
    keep = torch.from_numpy(read_image(args.mask, "mask", "L") >= 128)
    return image, ~keep if args.invert_mask else keep


def generate(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, dict]:
    """Text-to-image or editing: uint8 images [P * batch, H, W, 3], prompt-major, and the
    model's info."""
    if args.edit:
        image = read_image(args.edit, "image", "RGB")
        settings = sampler_settings(args, device)
        return generate_instruct_edits(args, device, settings, image, UsageError)
    editing = bool(args.image)
    edit_inputs = read_edit_inputs(args) if editing else None
    loaded = load_sampling_model(
        args.model,
        device=device,
        expect="inpaint" if editing and not args.baseline_replace else "text2im",
        gpt2_encoder_json=args.gpt2_encoder_json,
        gpt2_vocab_bpe=args.gpt2_vocab_bpe,
        compile=args.compile,
        precision=args.precision,
    )
    upsampler = None
    if args.upsample:
        upsampler = load_sampling_model(
            args.upsampler_model,
            device=device,
            expect="upsample",
            gpt2_encoder_json=args.gpt2_encoder_json,
            gpt2_vocab_bpe=args.gpt2_vocab_bpe,
            compile=args.compile,
            precision=args.precision,
        )
    if edit_inputs is not None:
        try:
            check_edit_inputs(*edit_inputs, int((upsampler or loaded).model.image_size))
        except ValueError as err:
            raise UsageError(str(err)) from err
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
        if upsampler is not None:
            return _sample_cascade(loaded, upsampler, prompts, args, device, edit_inputs)
        images = _sample(loaded, prompts, args, device, edit_inputs)
    return images, loaded.info


def sampler_settings(args: argparse.Namespace, device: torch.device) -> SamplerSettings:
    """The base model's sampling settings from the command line."""
    return SamplerSettings(
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch,
        device=device,
        threshold=args.threshold,
        progress=True,
    )


def _sample_cascade(
    loaded: SamplingModel,
    upsampler: SamplingModel,
    prompts: list[str],
    args: argparse.Namespace,
    device: torch.device,
    edit_inputs: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, dict]:
    """Base model then upsampler: the upsampled images, and the model info with the upsampler's
    and the base samples (``base_images``, written beside the upsampled ones)."""
    base_settings = sampler_settings(args, device)
    upsample_settings = replace(
        base_settings, steps=args.upsample_steps, temperature=args.upsample_temp, threshold=None
    )
    try:
        result = sample_cascade(
            loaded,
            upsampler,
            prompts,
            base_settings,
            upsample_settings,
            guidance_scale=args.guidance,
            aug_level=args.upsample_aug_level,
            edit=edit_inputs,
            tiling=upsample_tiling(args),
            project=args.upsample_projection,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err
    info = {**loaded.info, "upsampler": upsampler.info, "base_images": result.base}
    return result.upsampled, info


def _sample(
    loaded: SamplingModel,
    prompts: list[str],
    args: argparse.Namespace,
    device: torch.device,
    edit_inputs: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    settings = sampler_settings(args, device)
    if edit_inputs is not None:
        return sample_inpaint(loaded, prompts, *edit_inputs, settings, guidance_scale=args.guidance)
    if args.clip_guidance is not None:
        return _sample_clip_guided(loaded, prompts, args, device, settings)
    return sample_text_to_image(loaded, prompts, settings, guidance_scale=args.guidance)


def _sample_clip_guided(
    loaded: SamplingModel,
    prompts: list[str],
    args: argparse.Namespace,
    device: torch.device,
    settings: SamplerSettings,
) -> torch.Tensor:
    clip_model, clip_info = load_noised_clip(args.clip_model, device=device)
    try:
        check_clip_for_model(
            clip_info, clip_model, int(loaded.model.image_size), loaded.diffusion_settings
        )
    except ValueError as err:
        raise UsageError(f"--clip-model {args.clip_model}: {err}") from err
    return sample_clip_guided(
        loaded, clip_model, prompts, settings, clip_guidance_scale=args.clip_guidance
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        images, info = generate(args, device)
        written = write_outputs(images, args, info, UsageError)
    except (UsageError, ModelFileError, OutputWriteError) as err:
        parser.exit(2, f"glide-sample: error: {err}\n")
    print(f"wrote {len(written) - 1} images and {written[-1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
