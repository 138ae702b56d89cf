"""Caption following on the embedded synthetic scenes: read the colour and shape of the one object
in an image and check them against its caption.

FID and CLIP score need many samples and (for CLIP score) a strong CLIP; on the embedded data a
direct read-out says more with a few dozen images: an object is every pixel far from the
background colour, its colour is the palette colour nearest to the median of those pixels, its
shape is the one whose rendering (by the data generator itself, at the object's centroid, over a
range of radii) overlaps the object best (intersection over union). On the generator's own
images it reads colour and shape right (tested); on samples it measures whether the caption got
through. Chance is one over the number of colours (shapes) the caption could have named.

Only captions that name exactly one object (one colour word and one shape word) are scored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from pipeline.data.synthetic_scenes import BACKGROUNDS, COLOURS, SHAPES, render_scene

# A pixel belongs to the object when its summed |RGB - background| exceeds this (0..765).
OBJECT_THRESHOLD = 90
MIN_OBJECT_PIXELS = 4
RADIUS_FACTORS = np.linspace(0.7, 1.8, 12)  # tried radii, relative to sqrt(area / pi)
_WORD = re.compile(r"[a-z]+")


def caption_attributes(
    caption: str, colours: Sequence[str] = tuple(COLOURS), shapes: Sequence[str] = SHAPES
) -> dict[str, str] | None:
    """``{"colour", "shape"}`` named by a one-object caption, else None (none or several)."""
    words = _WORD.findall(caption.lower())
    named_colours = [w for w in words if w in colours]
    named_shapes = [w for w in words if w in shapes]
    if len(named_colours) != 1 or len(named_shapes) != 1:
        return None
    return {"colour": named_colours[0], "shape": named_shapes[0]}


def object_mask(image: np.ndarray, background: Sequence[int]) -> np.ndarray:
    """bool [H, W]: pixels of uint8 ``image`` [H, W, 3] far from the ``background`` colour."""
    distance = np.abs(image.astype(np.float64) - np.asarray(background, np.float64)).sum(-1)
    return distance > OBJECT_THRESHOLD


def _shape_mask(shape: str, x: float, y: float, radius: float, size: int) -> np.ndarray:
    scene = {
        "background": "dark gray",
        "objects": [{"shape": shape, "colour": "white", "x": x, "y": y, "radius": radius}],
    }
    rendered = np.asarray(render_scene(scene, size))[..., 0]
    return rendered > (BACKGROUNDS["dark gray"][0] + COLOURS["white"][0]) // 2


def border_colour(image: np.ndarray) -> np.ndarray:
    """Median RGB of the outermost pixel ring of ``image`` [H, W, 3]: the scene's background
    (objects never touch the border)."""
    ring = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return np.median(ring.astype(np.float64), axis=0)


def read_object(
    image: np.ndarray,
    background: str = "auto",
    colours: Sequence[str] = tuple(COLOURS),
    shapes: Sequence[str] = SHAPES,
) -> dict[str, Any] | None:
    """The object in uint8 ``image`` [H, W, 3]: ``{"colour", "shape", "iou", "pixels"}``, or None
    when fewer than MIN_OBJECT_PIXELS pixels differ from the background (a name from
    synthetic_scenes.BACKGROUNDS, or "auto": the image's border colour)."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square uint8 image [H, W, 3], got {list(image.shape)}")
    reference = border_colour(image) if background == "auto" else BACKGROUNDS[background]
    mask = object_mask(image, reference)
    pixels = int(mask.sum())
    if pixels < MIN_OBJECT_PIXELS:
        return None
    median = np.median(image[mask].astype(np.float64), axis=0)
    colour = min(colours, key=lambda c: float(((np.asarray(COLOURS[c]) - median) ** 2).sum()))
    size = image.shape[0]
    rows, cols = np.nonzero(mask)
    x, y = (cols.mean() + 0.5) / size, (rows.mean() + 0.5) / size
    base_radius = float(np.sqrt(pixels / np.pi)) / size
    best_shape, best_iou = shapes[0], -1.0
    for shape in shapes:
        for factor in RADIUS_FACTORS:
            candidate = _shape_mask(shape, x, y, base_radius * factor, size)
            union = np.logical_or(candidate, mask).sum()
            iou = float(np.logical_and(candidate, mask).sum() / union) if union else 0.0
            if iou > best_iou:
                best_shape, best_iou = shape, iou
    return {"colour": colour, "shape": best_shape, "iou": round(best_iou, 4), "pixels": pixels}


def caption_following(
    images: np.ndarray,
    captions: Sequence[str],
    background: str = "auto",
    colours: Sequence[str] = tuple(COLOURS),
    shapes: Sequence[str] = SHAPES,
) -> dict[str, Any]:
    """Colour and shape accuracy of uint8 ``images`` [N, H, W, 3] against their ``captions``.

    Returns ``{"scored", "colour_hits", "shape_hits", "both_hits", "skipped_captions",
    "no_object", "colour_accuracy", "shape_accuracy", "both_accuracy", "colour_chance",
    "shape_chance", "shape_confusion"}``; an image with no object counts as wrong. Accuracies are
    None when no caption could be scored. ``shape_confusion`` counts the scored images by
    ``"wanted->read"`` shape (``"->none"`` where no object was found).
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    scored = skipped = no_object = colour_ok = shape_ok = both_ok = 0
    confusion: Counter[str] = Counter()
    for image, caption in zip(images, captions, strict=True):
        wanted = caption_attributes(caption, colours, shapes)
        if wanted is None:
            skipped += 1
            continue
        scored += 1
        seen = read_object(np.asarray(image), background, colours, shapes)
        confusion[f"{wanted['shape']}->{seen['shape'] if seen else 'none'}"] += 1
        if seen is None:
            no_object += 1
            continue
        colour_hit = seen["colour"] == wanted["colour"]
        shape_hit = seen["shape"] == wanted["shape"]
        colour_ok += colour_hit
        shape_ok += shape_hit
        both_ok += colour_hit and shape_hit

    def rate(hits: int) -> float | None:
        return round(hits / scored, 4) if scored else None

    return {
        "scored": scored,
        "colour_hits": colour_ok,
        "shape_hits": shape_ok,
        "both_hits": both_ok,
        "skipped_captions": skipped,
        "no_object": no_object,
        "colour_accuracy": rate(colour_ok),
        "shape_accuracy": rate(shape_ok),
        "both_accuracy": rate(both_ok),
        "colour_chance": round(1 / len(colours), 4),
        "shape_chance": round(1 / len(shapes), 4),
        "shape_confusion": dict(sorted(confusion.items())),
    }


class CaptionFollowing(Metric):
    """:func:`caption_following` as a torchmetrics metric: hit counts are summed across
    workers. ``update(images uint8 [B, H, W, 3], captions)``; ``compute()`` -> accuracies."""

    full_state_update = False

    def __init__(self, colours: Sequence[str], shapes: Sequence[str]) -> None:
        super().__init__()
        self.colours, self.shapes = list(colours), list(shapes)
        for name in ("scored", "colour_hits", "shape_hits", "both_hits"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor, captions: Sequence[str]) -> None:
        result = caption_following(
            images.cpu().numpy(), list(captions), colours=self.colours, shapes=self.shapes
        )
        for name in ("scored", "colour_hits", "shape_hits", "both_hits"):
            setattr(self, name, getattr(self, name) + int(result[name]))

    def compute(self) -> dict[str, float]:
        scored = int(self.scored)
        rate = (lambda hits: float(hits) / scored) if scored else (lambda hits: float("nan"))
        return {
            "colour_accuracy": rate(self.colour_hits),
            "shape_accuracy": rate(self.shape_hits),
            "both_accuracy": rate(self.both_hits),
            "readout_scored": float(scored),
        }
