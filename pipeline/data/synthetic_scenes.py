"""The embedded default dataset: procedurally generated, captioned scenes of coloured shapes.

A scene is a few objects (shape, colour, size, position) on a plain background. Everything is
deterministic from ``(seed, index)``: scene ``index`` is drawn from its own generator
``np.random.default_rng([seed, index])``, never from a global RNG, so any slice of a dataset of
any size can be generated lazily, in parallel, in any order, and always gives the same pixels.

Three steps, each usable on its own:

- :func:`sample_scene` draws the attributes (a JSON-serialisable dict, the ground truth);
- :func:`caption_scene` writes the caption from the dict alone (its random choices, such as
  whether a size or a spatial relation is stated, were drawn into the dict);
- :func:`render_scene` draws the dict at any resolution, anti-aliased by 4x supersampling, so
  one scene rendered at 64 and at 256 px gives a consistent low-res / high-res pair.

Geometry conventions: ``x`` and ``y`` are the object's centre in ``[0, 1]`` of the image width and
height, ``y`` growing downwards (image rows), ``radius`` the radius of the disc that contains the
whole shape, as a fraction of the image side (the size word's nominal radius, jittered, times
the config's ``size_scale``). Objects never overlap (their discs are separated by
a gap) and stay inside the image. Every caption is true of its image: relations are only stated
when the offset along the stated axis is large and dominant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

# Clearly distinct colours; none is close to any background below.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 70, 225),
    "yellow": (245, 220, 30),
    "purple": (135, 45, 185),
    "orange": (250, 135, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "pink": (250, 140, 190),
    "brown": (120, 70, 30),
    "cyan": (40, 210, 220),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "light gray": (185, 185, 185),
    "dark gray": (70, 70, 70),
    "beige": (215, 200, 165),
}
# Nominal radius (fraction of the image side) of each size word; jittered by +-SIZE_JITTER.
SIZES: dict[str, float] = {"small": 0.11, "medium": 0.15, "large": 0.19}
SIZE_JITTER = 0.06
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")

# Caption and layout parameters.
SAY_SIZE_PROBABILITY = 0.75  # each object's size is stated with this probability
LOCATION_PROBABILITY = 0.35  # one-object scenes: "on the left" etc. when clearly off-centre
LOCATION_MARGIN = 0.17  # offset from the centre needed to say "on the left"
RELATION_MARGIN = 0.12  # offset along the stated axis needed to state a relation
RELATION_DOMINANCE = 0.6  # ... and it must be at least this fraction of the offset on the other
GAP = 0.02  # minimum gap between two objects' discs and between a disc and the image border
PLACEMENT_TRIES = 100
SUPERSAMPLE = 4

RELATION_PHRASES = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
LOCATION_PHRASES = ("on the left", "on the right", "at the top", "at the bottom")


def scene_spec(cfg: Any) -> dict[str, Any]:
    """Read and check the config section once: a dataclass or OmegaConf node (attribute access),
    or a plain dict such as ``OmegaConf.to_container(section)``."""

    def get(key: str) -> Any:
        return cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)

    spec = {
        "min_objects": int(get("min_objects")),
        "max_objects": int(get("max_objects")),
        "shapes": [str(s) for s in get("shapes")],
        "colours": [str(c) for c in get("colours")],
        "sizes": [str(s) for s in get("sizes")],
        "backgrounds": [str(b) for b in get("backgrounds")],
        "relation_probability": float(get("relation_probability")),
        "size_scale": float(get("size_scale")),
        "object_count_weights": [float(w) for w in get("object_count_weights")],
    }
    if not 1 <= spec["min_objects"] <= spec["max_objects"]:
        raise ValueError("synthetic scenes need 1 <= min_objects <= max_objects")
    for key, known in (
        ("shapes", SHAPES),
        ("colours", COLOURS),
        ("sizes", SIZES),
        ("backgrounds", BACKGROUNDS),
    ):
        if not spec[key]:
            raise ValueError(f"synthetic scenes: {key} must not be empty")
        unknown = [v for v in spec[key] if v not in known]
        if unknown:
            raise ValueError(f"synthetic scenes: unknown {key} {unknown}; known: {sorted(known)}")
    if len(spec["shapes"]) * len(spec["colours"]) < spec["max_objects"]:
        raise ValueError("synthetic scenes: fewer (shape, colour) pairs than max_objects")
    largest = max(SIZES[s] for s in spec["sizes"]) * (1 + SIZE_JITTER) * spec["size_scale"]
    if spec["size_scale"] <= 0.0 or largest + GAP >= 0.5:
        raise ValueError(
            f"synthetic scenes: size_scale {spec['size_scale']} must be > 0 and keep the largest "
            f"object (radius {largest:.3f}) inside the image (radius + {GAP} < 0.5)"
        )
    if not 0.0 <= spec["relation_probability"] <= 1.0:
        raise ValueError("synthetic scenes: relation_probability must be in [0, 1]")
    _check_count_weights(spec)
    return spec


def _check_count_weights(spec: dict[str, Any]) -> None:
    """ValueError unless object_count_weights is empty or one non-negative weight per count."""
    weights, counts = spec["object_count_weights"], spec["max_objects"] - spec["min_objects"] + 1
    if not weights:
        return
    if len(weights) != counts or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(
            f"synthetic scenes: object_count_weights {weights} must hold {counts} non-negative "
            f"weights (one per count {spec['min_objects']}..{spec['max_objects']}), not all zero"
        )


def _draw_count(rng: np.random.Generator, spec: dict[str, Any]) -> int:
    """How many objects a scene gets: uniform over min..max, or by object_count_weights."""
    low, high = spec["min_objects"], spec["max_objects"]
    weights = spec["object_count_weights"]
    if not weights:
        return int(rng.integers(low, high + 1))
    return low + int(rng.choice(len(weights), p=np.asarray(weights) / sum(weights)))


def place_disc(rng: np.random.Generator, radius: float, placed: list[dict[str, Any]]):
    """Rejection-sample a centre for a disc of ``radius`` clear of ``placed``; None on failure."""
    lo, hi = radius + GAP, 1.0 - radius - GAP
    for _ in range(PLACEMENT_TRIES):
        x, y = rng.uniform(lo, hi, size=2)
        if all(math.hypot(x - o["x"], y - o["y"]) >= radius + o["radius"] + GAP for o in placed):
            return float(x), float(y)
    return None


def relation_between(subject: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """The relations of ``subject`` to ``obj`` that are unambiguous from their positions.

    ``"left of"`` needs ``subject.x`` smaller than ``obj.x`` by more than RELATION_MARGIN, and
    that horizontal offset at least RELATION_DOMINANCE times the vertical one (likewise for the
    others), so a stated relation is clearly visible in the image.
    """
    dx = obj["x"] - subject["x"]  # > 0: subject is to the left
    dy = obj["y"] - subject["y"]  # > 0: subject is above (y grows downwards)
    out = []
    if abs(dx) > RELATION_MARGIN and abs(dx) >= RELATION_DOMINANCE * abs(dy):
        out.append("left of" if dx > 0 else "right of")
    if abs(dy) > RELATION_MARGIN and abs(dy) >= RELATION_DOMINANCE * abs(dx):
        out.append("above" if dy > 0 else "below")
    return out


def location_candidates(obj: dict[str, Any]) -> list[str]:
    cands = []
    if obj["x"] < 0.5 - LOCATION_MARGIN:
        cands.append("on the left")
    if obj["x"] > 0.5 + LOCATION_MARGIN:
        cands.append("on the right")
    if obj["y"] < 0.5 - LOCATION_MARGIN:
        cands.append("at the top")
    if obj["y"] > 0.5 + LOCATION_MARGIN:
        cands.append("at the bottom")
    return cands


def _pick(rng: np.random.Generator, choices: Sequence[Any]) -> Any:
    return choices[int(rng.integers(len(choices)))]


def _draw_object(
    rng: np.random.Generator, spec: dict[str, Any], placed: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """A new object whose (shape, colour) no ``placed`` object has, at a free place; when its
    size does not fit, the smallest size; None when that does not fit either."""
    used = {(o["shape"], o["colour"]) for o in placed}
    while True:
        shape, colour = _pick(rng, spec["shapes"]), _pick(rng, spec["colours"])
        if (shape, colour) not in used:
            break
    size = _pick(rng, spec["sizes"])
    factor = float(rng.uniform(1.0 - SIZE_JITTER, 1.0 + SIZE_JITTER)) * spec["size_scale"]
    radius = SIZES[size] * factor
    pos = place_disc(rng, radius, placed)
    small = min(spec["sizes"], key=SIZES.__getitem__)
    if pos is None and size != small:  # crowded: try the smallest size instead
        size, radius = small, SIZES[small] * factor
        pos = place_disc(rng, radius, placed)
    if pos is None:
        return None
    return {"shape": shape, "colour": colour, "size": size, "x": pos[0], "y": pos[1],
            "radius": radius, "say_size": bool(rng.random() < SAY_SIZE_PROBABILITY)}  # fmt: skip


def _draw_relation_or_location(
    rng: np.random.Generator, spec: dict[str, Any], objects: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str | None]:
    """The relations the caption states (at most one) and a one-object scene's location."""
    relations: list[dict[str, Any]] = []
    location = None
    if len(objects) >= 2 and rng.random() < spec["relation_probability"]:
        i, j = (int(v) for v in rng.choice(len(objects), size=2, replace=False))
        cands = relation_between(objects[i], objects[j])
        if cands:  # always true for non-overlapping discs, kept for safety
            relations.append({"subject": i, "relation": _pick(rng, cands), "object": j})
    elif len(objects) == 1 and rng.random() < LOCATION_PROBABILITY:
        cands = location_candidates(objects[0])
        if cands:
            location = _pick(rng, cands)
    return relations, location


def sample_scene(index: int, seed: int, cfg: Any) -> dict[str, Any]:
    """Draw scene ``index`` of the dataset ``seed``: a JSON-serialisable dict of its attributes.

    Keys: ``index``, ``seed``, ``background``; ``objects``: list of ``{"shape", "colour",
    "size", "x", "y", "radius", "say_size"}``; ``relations``: the spatial relations the caption
    states, ``{"subject": i, "relation": "left of" | "right of" | "above" | "below", "object":
    j}`` with indices into ``objects``; ``location``: for a one-object scene, an optional
    ``"on the left"`` / ``"on the right"`` / ``"at the top"`` / ``"at the bottom"``, else None.
    No two objects of a scene share both shape and colour, so every phrase names one object.
    """
    index, seed = int(index), int(seed)
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be non-negative, got index={index}, seed={seed}")
    spec = scene_spec(cfg)
    rng = np.random.default_rng([seed, index])

    n = _draw_count(rng, spec)
    background = _pick(rng, spec["backgrounds"])
    objects: list[dict[str, Any]] = []
    for _ in range(n):
        obj = _draw_object(rng, spec, objects)
        if obj is None:  # no room: the scene gets fewer objects (min_objects permitting)
            if len(objects) >= spec["min_objects"]:
                break
            raise RuntimeError(f"scene {index}: cannot place {n} objects; lower max_objects")
        objects.append(obj)
    relations, location = _draw_relation_or_location(rng, spec, objects)
    return {
        "index": index,
        "seed": seed,
        "background": background,
        "objects": objects,
        "relations": relations,
        "location": location,
    }


def article(word: str) -> str:
    """'a' or 'an' for the word that follows (all words of this vocabulary sound as written)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def describe_object(obj: dict[str, Any]) -> str:
    """'a small red circle', 'an orange star' (size only when ``say_size``)."""
    words = ([obj["size"]] if obj.get("say_size", True) else []) + [obj["colour"], obj["shape"]]
    return f"{article(words[0])} {' '.join(words)}"


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 2:
        return " and ".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption_scene(scene: dict[str, Any]) -> str:
    """The caption of a scene, a pure function of the dict.

    Examples: "a large purple diamond", "an orange star on the left", "a small red circle to the
    left of a large blue square", "a green star above a yellow triangle, and a white cross",
    "a red circle, a blue square and a small white star".
    """
    objects = scene["objects"]
    phrases = [describe_object(o) for o in objects]
    if scene.get("relations"):
        rel = scene["relations"][0]
        s, o = rel["subject"], rel["object"]
        head = f"{phrases[s]} {RELATION_PHRASES[rel['relation']]} {phrases[o]}"
        rest = [p for k, p in enumerate(phrases) if k not in (s, o)]
        if not rest:
            return head
        if len(rest) == 1:
            return f"{head}, and {rest[0]}"
        return f"{head}, {_join(rest)}"
    text = _join(phrases)
    if scene.get("location") and len(objects) == 1:
        text = f"{text} {scene['location']}"
    return text


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape contained in the disc (cx, cy, r); y grows downwards."""
    if shape == "square":
        h = 0.70 * r  # corners at 0.99 r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # equilateral, pointing up, centroid at the centre
        s = r * math.sqrt(3) / 2
        return [(cx, cy - r), (cx + s, cy + r / 2), (cx - s, cy + r / 2)]
    if shape == "diamond":
        w = 0.72 * r
        return [(cx, cy - r), (cx + w, cy), (cx, cy + r), (cx - w, cy)]
    if shape == "star":  # five points, one pointing up
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    if shape == "cross":  # a plus sign
        a, w = 0.95 * r, 0.30 * r
        return [
            (cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w),
            (cx + a, cy + w), (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a),
            (cx - w, cy + w), (cx - a, cy + w), (cx - a, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: dict[str, Any], resolution: int) -> Image.Image:
    """Draw a scene as an RGB image of ``resolution`` x ``resolution`` pixels.

    Shapes are drawn at SUPERSAMPLE x the resolution and box-filtered down (area averaging), so
    edges are anti-aliased and a scene rendered at 64 px equals, up to rounding, its 256 px
    rendering downsampled by area averaging.
    """
    resolution = int(resolution)
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    side = resolution * SUPERSAMPLE
    canvas = Image.new("RGB", (side, side), BACKGROUNDS[scene["background"]])
    draw = ImageDraw.Draw(canvas)
    for obj in scene["objects"]:
        # Continuous coordinates: pixel k covers [k, k+1); the centre of the image is side / 2.
        cx, cy, r = obj["x"] * side, obj["y"] * side, obj["radius"] * side
        fill = COLOURS[obj["colour"]]
        if obj["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_shape_points(obj["shape"], cx, cy, r), fill=fill)
    return canvas.reduce(SUPERSAMPLE)


def generate_sample(
    index: int, seed: int, cfg: Any, resolution: int
) -> tuple[Image.Image, str, dict[str, Any]]:
    """Scene ``index`` of dataset ``seed``: (RGB image at ``resolution``, caption, attributes)."""
    scene = sample_scene(index, seed, cfg)
    return render_scene(scene, resolution), caption_scene(scene), scene
