"""Captioned image grids (PNG) for people to look at."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def captioned_grid(
    images: np.ndarray | Sequence[np.ndarray],
    captions: Sequence[str],
    *,
    columns: int = 4,
    cell: int = 128,
    caption_lines: int = 3,
) -> Image.Image:
    """Lay out uint8 HWC images with their captions under each, upscaled to ``cell`` pixels.

    Small images are enlarged with nearest-neighbour so that pixels stay visible.
    """
    images = [np.asarray(img) for img in images]
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if not images:
        raise ValueError("no images to lay out")
    font = ImageFont.load_default()
    chars = max(8, cell // 6)
    line_height = 11
    text_height = caption_lines * line_height + 4
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * cell, rows * (cell + text_height)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (img, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (i % columns) * cell, (i // columns) * (cell + text_height)
        tile = Image.fromarray(img).resize((cell, cell), Image.Resampling.NEAREST)
        grid.paste(tile, (x, y))
        lines = textwrap.wrap(caption, chars)[:caption_lines]
        for j, line in enumerate(lines):
            draw.text((x + 2, y + cell + 2 + j * line_height), line, fill="black", font=font)
    return grid
