"""``glide-sample --edit IN.png --instruction "make the circle blue"``: instruction editing
(InstructPix2Pix) from the command line, with the image scale ``--image-guidance`` (default 1.5)
and the instruction scale ``--guidance`` (default 7.5). Writes the edits, a grid of rows
(input | edits) per instruction and samples.json, as the other modes do.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from pipeline.diffusion import SamplerSettings
from pipeline.sampling.instruct_edit import check_instruct_inputs, sample_instruct_edit
from pipeline.sampling.loading import load_sampling_model

DEFAULT_MODEL = "models/instruct.pt"
DEFAULT_IMAGE_GUIDANCE = 1.5
DEFAULT_TEXT_GUIDANCE = 7.5


def add_instruct_arguments(parser: argparse.ArgumentParser, finite_float: Any) -> None:
    group = parser.add_argument_group("instruction editing (InstructPix2Pix; models/instruct.pt)")
    group.add_argument("--edit", default="", help="PNG/JPEG to edit from an instruction, no mask")
    group.add_argument(
        "--instruction", action="append", default=[], help="what to change (repeat for several)"
    )
    group.add_argument(
        "--image-guidance",
        type=finite_float,
        default=None,
        help=f"image guidance scale s_I (default {DEFAULT_IMAGE_GUIDANCE}); with --edit, "
        f"--guidance is the instruction scale s_T (default {DEFAULT_TEXT_GUIDANCE})",
    )


def check_instruct_args(args: argparse.Namespace, usage_error: type[Exception]) -> None:
    """Fill the mode's defaults; the instructions become the prompts the outputs are named by."""
    if not args.edit:
        if args.instruction or args.image_guidance is not None:
            raise usage_error("--instruction and --image-guidance need --edit IMAGE")
        return
    others = [flag for flag, on in (("--image/--mask", args.image or args.mask),
              ("--prompt", args.prompt), ("--upsample", args.upsample),
              ("--clip-guidance", args.clip_guidance is not None)) if on]  # fmt: skip
    if others:
        raise usage_error(f"--edit edits from --instruction alone; leave out {', '.join(others)}")
    if not args.instruction or any(not text.strip() for text in args.instruction):
        raise usage_error('--edit needs a non-empty --instruction, e.g. "make the circle blue"')
    args.prompt = list(args.instruction)
    args.model = args.model or DEFAULT_MODEL
    args.guidance = DEFAULT_TEXT_GUIDANCE if args.guidance is None else args.guidance
    if args.image_guidance is None:
        args.image_guidance = DEFAULT_IMAGE_GUIDANCE


def generate_instruct_edits(
    args: argparse.Namespace,
    device: torch.device,
    settings: SamplerSettings,
    image: np.ndarray,
    usage_error: type[Exception],
) -> tuple[torch.Tensor, dict[str, Any]]:
    """uint8 edits [I * batch, H, W, 3], instruction-major, and the model's info (with the
    input, for the grid)."""
    loaded = load_sampling_model(args.model, device=device, expect="instruct",
                                 compile=args.compile, precision=args.precision)  # fmt: skip
    source = torch.from_numpy(image.copy())
    prompts = [text for text in args.instruction for _ in range(args.batch)]
    try:
        check_instruct_inputs(loaded, source, prompts)
    except ValueError as err:
        raise usage_error(str(err)) from err
    edits = sample_instruct_edit(loaded, prompts, source, settings,
                                 image_guidance=args.image_guidance, guidance=args.guidance)  # fmt: skip
    return edits, {**loaded.info, "source_image": source}


def grid_rows(images: np.ndarray, captions: list[str], source: np.ndarray, batch: int):
    """(images, captions, columns) of a grid whose rows are (input | the edits of one
    instruction)."""
    rows, labels = [], []
    for start in range(0, len(images), batch):
        rows += [source, *images[start : start + batch]]
        labels += ["input", *captions[start : start + batch]]
    return np.stack(rows), labels, batch + 1
