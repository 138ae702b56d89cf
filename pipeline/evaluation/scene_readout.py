"""Caption following on the embedded synthetic scenes: read the objects in an image (colour,
shape and, for two objects, where they are) and check them against the caption.

FID and CLIP score need many samples and (for CLIP score) a strong CLIP; on the embedded data a
direct read-out says more with a few dozen images: an object is every pixel far from the
background colour, its colour is the palette colour nearest to the median of those pixels, its
shape is the one whose rendering (by the data generator itself, at the object's centroid, over a
range of radii) overlaps the object best (intersection over union). On the generator's own
images it reads colour and shape right (tested); on samples it measures whether the caption got
through. Chance is one over the number of colours (shapes) the caption could have named.

Two kinds of caption are scored:

- one object (exactly one colour word and one shape word, e.g. "a large red circle on the
  left"): all object pixels are read as one object (:func:`read_object`);
- two objects and a spatial relation, as the generator writes them ("a small red circle to the
  left of a blue square", phrases from ``synthetic_scenes.RELATION_PHRASES``;
  :func:`caption_pair`): the object pixels are split into 4-connected components, the two
  largest are read as above, assigned to the caption's two objects (the assignment that matches
  more colours and shapes; on a tie the larger component is the caption's first object), and
  the relation is checked between their centroids with the generator's own rule
  (``synthetic_scenes.relation_between``: offset beyond RELATION_MARGIN and dominant). An image
  with fewer than two components is wrong on every count.

Other captions (three objects, two objects without a relation) are skipped.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torchmetrics import Metric

from pipeline.data.synthetic_scenes import (
    BACKGROUNDS,
    COLOURS,
    RELATION_PHRASES,
    SHAPES,
    SIZES,
    relation_between,
    render_scene,
)

# A pixel belongs to the object when its summed |RGB - background| exceeds this (0..765).
OBJECT_THRESHOLD = 90
MIN_OBJECT_PIXELS = 4
RADIUS_FACTORS = np.linspace(0.7, 1.8, 12)  # tried radii, relative to sqrt(area / pi)
_WORD = re.compile(r"[a-z]+")
# 4-connected components: two objects that touch only at a diagonal stay apart.
_FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)
ONE_COUNTS = ("scored", "colour_hits", "shape_hits", "both_hits")
PAIR_COUNTS = (
    "pair_scored",
    "pair_colour_hits",
    "pair_shape_hits",
    "pair_relation_hits",
    "pair_all_hits",
)
PAIR_RATES = {  # rate key -> the hit count it divides by pair_scored
    "pair_colour_accuracy": "pair_colour_hits",
    "pair_shape_accuracy": "pair_shape_hits",
    "pair_relation_accuracy": "pair_relation_hits",
    "pair_all_accuracy": "pair_all_hits",
}


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


def _alternatives(words: Sequence[str]) -> str:
    """Regex alternation of ``words``, longest first (so no word is cut short by a prefix)."""
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


@functools.lru_cache(maxsize=8)
def _pair_pattern(colours: tuple[str, ...], shapes: tuple[str, ...]) -> re.Pattern[str]:
    """The generator's two-object relation caption: ``<object> <relation phrase> <object>``,
    an object being ``a|an [size] colour shape`` (see synthetic_scenes.describe_object)."""
    phrase_of = r"an? (?:(?:{sizes}) )?(?P<{role}_colour>{colours}) (?P<{role}_shape>{shapes})"
    words = {"sizes": _alternatives(SIZES), "colours": _alternatives(colours)}
    words["shapes"] = _alternatives(shapes)
    subject = phrase_of.format(role="subject", **words)
    obj = phrase_of.format(role="object", **words)
    relation = f"(?P<relation>{_alternatives(RELATION_PHRASES.values())})"
    return re.compile(f"{subject} {relation} {obj}")


def caption_pair(
    caption: str, colours: Sequence[str] = tuple(COLOURS), shapes: Sequence[str] = SHAPES
) -> dict[str, Any] | None:
    """The two objects and their relation named by a two-object relation caption, e.g. "a
    small red circle to the left of a blue square" -> ``{"subject": {"colour": "red", "shape":
    "circle"}, "relation": "left of", "object": {"colour": "blue", "shape": "square"}}`` (the
    relation as synthetic_scenes.RELATION_PHRASES names it; size words are ignored). None for
    any other caption (one or three objects, two objects joined by "and", unknown words)."""
    text = " ".join(_WORD.findall(caption.lower()))
    match = _pair_pattern(tuple(colours), tuple(shapes)).fullmatch(text)
    if match is None:
        return None
    relation_named = {phrase: name for name, phrase in RELATION_PHRASES.items()}
    return {
        "subject": {"colour": match["subject_colour"], "shape": match["subject_shape"]},
        "relation": relation_named[match["relation"]],
        "object": {"colour": match["object_colour"], "shape": match["object_shape"]},
    }


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


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square uint8 image [H, W, 3], got {list(image.shape)}")


def _image_mask(image: np.ndarray, background: str) -> np.ndarray:
    """:func:`object_mask` against ``background`` (a BACKGROUNDS name, or "auto": the border)."""
    reference = border_colour(image) if background == "auto" else BACKGROUNDS[background]
    return object_mask(image, reference)


def read_masked_object(
    image: np.ndarray,
    mask: np.ndarray,
    colours: Sequence[str] = tuple(COLOURS),
    shapes: Sequence[str] = SHAPES,
) -> dict[str, Any]:
    """The object made of the (non-empty) bool ``mask`` [H, W] of uint8 ``image`` [H, W, 3]:
    ``{"colour", "shape", "iou", "pixels", "x", "y"}``, ``x``, ``y`` its centroid in ``[0, 1]``
    of the image side (synthetic_scenes' convention, ``y`` growing downwards)."""
    pixels = int(mask.sum())
    median = np.median(image[mask].astype(np.float64), axis=0)
    colour = min(colours, key=lambda c: float(((np.asarray(COLOURS[c]) - median) ** 2).sum()))
    size = image.shape[0]
    rows, cols = np.nonzero(mask)
    x, y = float((cols.mean() + 0.5) / size), float((rows.mean() + 0.5) / size)
    base_radius = float(np.sqrt(pixels / np.pi)) / size
    best_shape, best_iou = shapes[0], -1.0
    for shape in shapes:
        for factor in RADIUS_FACTORS:
            candidate = _shape_mask(shape, x, y, base_radius * factor, size)
            union = np.logical_or(candidate, mask).sum()
            iou = float(np.logical_and(candidate, mask).sum() / union) if union else 0.0
            if iou > best_iou:
                best_shape, best_iou = shape, iou
    return {
        "colour": colour,
        "shape": best_shape,
        "iou": round(best_iou, 4),
        "pixels": pixels,
        "x": x,
        "y": y,
    }


def read_object(
    image: np.ndarray,
    background: str = "auto",
    colours: Sequence[str] = tuple(COLOURS),
    shapes: Sequence[str] = SHAPES,
) -> dict[str, Any] | None:
    """The object in uint8 ``image`` [H, W, 3] (all its object pixels taken as one):
    ``{"colour", "shape", "iou", "pixels", "x", "y"}`` (see :func:`read_masked_object`), or None
    when fewer than MIN_OBJECT_PIXELS pixels differ from the background (a name from
    synthetic_scenes.BACKGROUNDS, or "auto": the image's border colour)."""
    _check_image(image)
    mask = _image_mask(image, background)
    if int(mask.sum()) < MIN_OBJECT_PIXELS:
        return None
    return read_masked_object(image, mask, colours, shapes)


def object_components(image: np.ndarray, background: str = "auto") -> list[np.ndarray]:
    """The separate objects of uint8 ``image`` [H, W, 3]: bool masks [H, W] of the 4-connected
    components of its object pixels with at least MIN_OBJECT_PIXELS pixels, largest first."""
    _check_image(image)
    labels, count = ndimage.label(_image_mask(image, background), structure=_FOUR_NEIGHBOURS)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = [int(k) for k in np.argsort(-sizes, kind="stable") if sizes[k] >= MIN_OBJECT_PIXELS]
    return [labels == k + 1 for k in order]


def _matches(seen: dict[str, Any], wanted: dict[str, str]) -> int:
    return int(seen["colour"] == wanted["colour"]) + int(seen["shape"] == wanted["shape"])


def _assign(
    larger: dict[str, Any], smaller: dict[str, Any], wanted: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(subject, object): the two read objects in the order that matches more of the caption's
    colours and shapes; on a tie the larger object is the subject."""
    as_read, swapped = (larger, smaller), (smaller, larger)
    score = [
        _matches(s, wanted["subject"]) + _matches(o, wanted["object"])
        for s, o in (as_read, swapped)
    ]
    return swapped if score[1] > score[0] else as_read


def read_pair(
    image: np.ndarray,
    wanted: dict[str, Any],
    background: str = "auto",
    colours: Sequence[str] = tuple(COLOURS),
    shapes: Sequence[str] = SHAPES,
) -> dict[str, Any]:
    """Check uint8 ``image`` [H, W, 3] against a two-object caption parsed by
    :func:`caption_pair`: ``{"colour", "shape", "relation", "all"}`` (bools: both objects'
    colours right, both shapes right, the caption's relation holds between the centroids by
    synthetic_scenes.relation_between, everything right) and ``"found"`` (objects found; with
    fewer than two everything is wrong). The two largest objects are assigned to the caption's
    subject and object, whichever way matches more colours and shapes."""
    found = object_components(image, background)
    if len(found) < 2:
        return dict.fromkeys(("colour", "shape", "relation", "all"), False) | {"found": len(found)}
    larger, smaller = (read_masked_object(image, m, colours, shapes) for m in found[:2])
    subject, obj = _assign(larger, smaller, wanted)
    pairs = ((subject, wanted["subject"]), (obj, wanted["object"]))
    colour = all(seen["colour"] == want["colour"] for seen, want in pairs)
    shape = all(seen["shape"] == want["shape"] for seen, want in pairs)
    relation = wanted["relation"] in relation_between(subject, obj)
    return {
        "colour": colour,
        "shape": shape,
        "relation": relation,
        "all": colour and shape and relation,
        "found": len(found),
    }


def _score_one(
    image: np.ndarray,
    wanted: dict[str, str],
    tally: Counter[str],
    confusion: Counter[str],
    settings: dict[str, Any],
) -> None:
    """Add one image of a one-object caption to ``tally`` and its ``"wanted->read"`` shape to
    ``confusion``."""
    seen = read_object(image, **settings)
    tally["scored"] += 1
    confusion[f"{wanted['shape']}->{seen['shape'] if seen else 'none'}"] += 1
    if seen is None:
        tally["no_object"] += 1
        return
    colour_hit = seen["colour"] == wanted["colour"]
    shape_hit = seen["shape"] == wanted["shape"]
    tally["colour_hits"] += colour_hit
    tally["shape_hits"] += shape_hit
    tally["both_hits"] += colour_hit and shape_hit


def _score_pair(
    image: np.ndarray, wanted: dict[str, Any], tally: Counter[str], settings: dict[str, Any]
) -> None:
    """Add one image of a two-object relation caption to ``tally``."""
    seen = read_pair(image, wanted, **settings)
    tally["pair_scored"] += 1
    tally["pair_missing"] += seen["found"] < 2
    for name in ("colour", "shape", "relation", "all"):
        tally[f"pair_{name}_hits"] += seen[name]


def caption_following(
    images: np.ndarray,
    captions: Sequence[str],
    background: str = "auto",
    colours: Sequence[str] = tuple(COLOURS),
    shapes: Sequence[str] = SHAPES,
) -> dict[str, Any]:
    """Caption following of uint8 ``images`` [N, H, W, 3] against their ``captions``.

    One-object captions (:func:`caption_attributes`): ``"scored", "colour_hits", "shape_hits",
    "both_hits", "no_object", "colour_accuracy", "shape_accuracy", "both_accuracy",
    "colour_chance", "shape_chance", "shape_confusion"``; an image with no object counts as
    wrong. ``shape_confusion`` counts the scored images by ``"wanted->read"`` shape (``"->none"``
    where no object was found).

    Two-object relation captions (:func:`caption_pair`, read by :func:`read_pair`):
    ``"pair_scored", "pair_colour_hits", "pair_shape_hits", "pair_relation_hits",
    "pair_all_hits"`` (both colours, both shapes, the relation, all of them right),
    ``"pair_missing"`` (images with fewer than two objects, counted wrong) and the rates
    ``"pair_colour_accuracy", "pair_shape_accuracy", "pair_relation_accuracy",
    "pair_all_accuracy"``.

    ``"skipped_captions"`` counts the captions neither kind accepts. Accuracies are None when no
    caption of their kind could be scored.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    settings = {"background": background, "colours": colours, "shapes": shapes}
    tally: Counter[str] = Counter()
    confusion: Counter[str] = Counter()
    for image, caption in zip(images, captions, strict=True):
        one = caption_attributes(caption, colours, shapes)
        pair = None if one else caption_pair(caption, colours, shapes)
        if one:
            _score_one(np.asarray(image), one, tally, confusion, settings)
        elif pair:
            _score_pair(np.asarray(image), pair, tally, settings)
        else:
            tally["skipped_captions"] += 1
    return _following_result(tally, confusion, len(colours), len(shapes))


def _rate(hits: int, scored: int) -> float | None:
    return round(hits / scored, 4) if scored else None


def _following_result(
    tally: Counter[str], confusion: Counter[str], num_colours: int, num_shapes: int
) -> dict[str, Any]:
    """:func:`caption_following`'s dict from its counts."""
    scored = tally["scored"]
    result: dict[str, Any] = {name: tally[name] for name in (*ONE_COUNTS, "skipped_captions")}
    result |= {
        "no_object": tally["no_object"],
        "colour_accuracy": _rate(tally["colour_hits"], scored),
        "shape_accuracy": _rate(tally["shape_hits"], scored),
        "both_accuracy": _rate(tally["both_hits"], scored),
        "colour_chance": round(1 / num_colours, 4),
        "shape_chance": round(1 / num_shapes, 4),
        "shape_confusion": dict(sorted(confusion.items())),
    }
    result |= {name: tally[name] for name in (*PAIR_COUNTS, "pair_missing")}
    result |= {key: _rate(tally[hits], tally["pair_scored"]) for key, hits in PAIR_RATES.items()}
    return result


class CaptionFollowing(Metric):
    """:func:`caption_following` as a torchmetrics metric: hit counts are summed across
    workers. ``update(images uint8 [B, H, W, 3], captions)``; ``compute()`` -> accuracies."""

    full_state_update = False

    def __init__(self, colours: Sequence[str], shapes: Sequence[str]) -> None:
        super().__init__()
        self.colours, self.shapes = list(colours), list(shapes)
        for name in (*ONE_COUNTS, *PAIR_COUNTS):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor, captions: Sequence[str]) -> None:
        """Read ``images`` uint8 [B, H, W, 3] against ``captions`` and add up the hits."""
        result = caption_following(
            images.cpu().numpy(), list(captions), colours=self.colours, shapes=self.shapes
        )
        for name in (*ONE_COUNTS, *PAIR_COUNTS):
            setattr(self, name, getattr(self, name) + int(result[name]))

    def compute(self) -> dict[str, float]:
        """One-object accuracies (NaN when nothing was scored) and ``readout_scored``;
        ``readout_pair_scored`` and, when it is not 0, the two-object rates (left out rather
        than NaN: most profiles' scenes have one object, and the rows feed plots and MLflow)."""
        scored = int(self.scored)
        rate = (lambda hits: float(hits) / scored) if scored else (lambda hits: float("nan"))
        out = {
            "colour_accuracy": rate(self.colour_hits),
            "shape_accuracy": rate(self.shape_hits),
            "both_accuracy": rate(self.both_hits),
            "readout_scored": float(scored),
            "readout_pair_scored": float(self.pair_scored),
        }
        pair_scored = int(self.pair_scored)
        if pair_scored:
            out |= {
                key: float(getattr(self, hits)) / pair_scored for key, hits in PAIR_RATES.items()
            }
        return out
