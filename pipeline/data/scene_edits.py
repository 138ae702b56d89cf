"""Exact before/after edit triples from the embedded scenes, for instruction-based editing.

An edit changes one thing of a scene drawn by :func:`synthetic_scenes.sample_scene` and names it
in an instruction ("make the red circle blue"); everything else stays as it was, so input and
target differ only inside the edited object's discs (before and after the edit). Kinds:

- ``recolour``: one object's colour; ``reshape``: its shape;
- ``move``: it moves left, right, up or down by ``MOVE_DISTANCE`` of the image side;
- ``add``: a new object where there is room; ``remove``: one of two or more objects goes.

Triple ``index`` of dataset ``seed`` is drawn from ``np.random.default_rng([seed, index,
EDIT_STREAM])``, so triples are deterministic and independent of each other, like scenes.
Held-out combinations (:func:`is_held_out`) never appear in training triples: evaluation asks
for edits the model has not seen, such as a recolour of a star to green.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.data.synthetic_scenes import (
    GAP,
    SIZE_JITTER,
    SIZES,
    describe_object,
    location_candidates,
    place_disc,
    relation_between,
    sample_scene,
    scene_spec,
)

EDIT_KINDS = ("recolour", "reshape", "move", "add", "remove")
EDIT_STREAM = 7  # third seed word of the edit generator: never the scene's own stream
MOVE_DISTANCE = 0.2  # fraction of the image side an object moves
MOVE_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
HELD_OUT_EVERY = 5  # one (shape, value) combination in five is held out for evaluation

PHRASINGS: dict[str, tuple[str, ...]] = {
    "recolour": (
        "make the {target} {to}",
        "turn the {target} {to}",
        "change the colour of the {target} to {to}",
        "paint the {target} {to}",
    ),
    "reshape": (
        "make the {target} a {to}",
        "turn the {target} into a {to}",
        "change the {target} into a {to}",
        "replace the {target} with a {colour} {to}",
    ),
    "move": (
        "move the {target} {to}",
        "shift the {target} {to}",
        "push the {target} a bit {to}",
    ),
    "add": ("add {to}", "put {to} in the picture", "draw {to}", "insert {to}"),
    "remove": ("remove the {target}", "delete the {target}", "take away the {target}"),
}


Choice = tuple[str, int | None, Any]  # (kind, object index or None for add, new value)


def _name(obj: dict[str, Any]) -> str:
    """The object as an instruction names it: 'red circle' (colour and shape are unique)."""
    return f"{obj['colour']} {obj['shape']}"


def _held_out(kind: str, shape: str, value: Any, spec: dict[str, Any]) -> bool:
    """(kind + shape + value) % HELD_OUT_EVERY == 0 over vocabulary positions."""
    if kind in ("recolour", "add"):
        position = spec["colours"].index(value[1] if kind == "add" else value)
    elif kind == "reshape":
        position = spec["shapes"].index(value)
    elif kind == "move":
        position = list(MOVE_DIRECTIONS).index(value)
    else:
        position = 0
    code = EDIT_KINDS.index(kind) + spec["shapes"].index(shape) + position
    return code % HELD_OUT_EVERY == 0


def is_held_out(edit: dict[str, Any], cfg: Any) -> bool:
    """Whether an edit's (kind, shape, new value) combination is kept for evaluation only.

    A fixed rule over vocabulary positions, so training and evaluation agree without a list;
    the shape is the edited object's (for ``add``, the new object's).
    """
    kind, to = edit["kind"], edit["to"]
    if kind == "add":
        return _held_out(kind, to["shape"], (to["shape"], to["colour"]), scene_spec(cfg))
    return _held_out(kind, edit["from"]["shape"], to, scene_spec(cfg))


def moved_centre(obj: dict[str, Any], direction: str) -> tuple[float, float]:
    dx, dy = MOVE_DIRECTIONS[direction]
    return obj["x"] + dx * MOVE_DISTANCE, obj["y"] + dy * MOVE_DISTANCE


def _room_to_move(scene: dict[str, Any], k: int, direction: str) -> bool:
    obj = scene["objects"][k]
    (x, y), r = moved_centre(obj, direction), obj["radius"]
    others = [o for j, o in enumerate(scene["objects"]) if j != k]
    inside = all(r + GAP <= v <= 1.0 - r - GAP for v in (x, y))
    return inside and all(np.hypot(x - o["x"], y - o["y"]) >= r + o["radius"] + GAP for o in others)


def candidate_edits(scene: dict[str, Any], cfg: Any) -> list[Choice]:
    """Every edit the scene allows: new values keep each (shape, colour) unique, moved objects
    stay inside the image and clear of the others, and a removal leaves at least one object."""
    spec = scene_spec(cfg)
    objects = scene["objects"]
    pairs = {(o["shape"], o["colour"]) for o in objects}
    out: list[Choice] = []
    for k, o in enumerate(objects):
        out += [("recolour", k, c) for c in spec["colours"] if (o["shape"], c) not in pairs]
        out += [("reshape", k, s) for s in spec["shapes"] if (s, o["colour"]) not in pairs]
        out += [("move", k, d) for d in MOVE_DIRECTIONS if _room_to_move(scene, k, d)]
        if len(objects) > 1:
            out.append(("remove", k, None))
    free = [(s, c) for s in spec["shapes"] for c in spec["colours"] if (s, c) not in pairs]
    return out + [("add", None, pair) for pair in free]


def in_split(choice: Choice, scene: dict[str, Any], cfg: Any) -> bool:
    """True when ``choice`` is a held-out combination (see :func:`is_held_out`)."""
    kind, k, value = choice
    shape = value[0] if kind == "add" else scene["objects"][k]["shape"]
    return _held_out(kind, shape, value, scene_spec(cfg))


def _new_object(rng: np.random.Generator, scene: dict[str, Any], pair, spec) -> dict | None:
    size = min(spec["sizes"], key=SIZES.__getitem__)  # the smallest size finds room most often
    radius = SIZES[size] * float(rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)) * spec["size_scale"]
    pos = place_disc(rng, radius, scene["objects"])
    if pos is None:
        return None
    return {
        "shape": pair[0], "colour": pair[1], "size": size, "x": pos[0], "y": pos[1],
        "radius": radius, "say_size": False,
    }  # fmt: skip


def _still_true(scene: dict[str, Any]) -> dict[str, Any]:
    """Drop the caption's relation or location when the edit made it false."""
    objects = scene["objects"]
    scene["relations"] = [
        r for r in scene.get("relations", [])
        if r["relation"] in relation_between(objects[r["subject"]], objects[r["object"]])
    ]  # fmt: skip
    if len(objects) != 1 or scene.get("location") not in location_candidates(objects[0]):
        scene["location"] = None
    return scene


def apply_edit(
    rng: np.random.Generator, scene: dict[str, Any], choice: Choice, cfg: Any
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Apply one of :func:`candidate_edits` to a copy of ``scene``: (edited scene, record), or
    None when an added object finds no room.

    The record: ``kind``; ``object`` (its index in the input, or in the output for ``add``);
    ``from`` and ``to``: the object before, and the new colour, shape or direction (recolour,
    reshape, move), the new object (add, ``from`` None) or None (remove).
    """
    kind, k, value = choice
    after = copy.deepcopy(scene)
    objects = after["objects"]
    if kind == "add":
        new = _new_object(rng, scene, value, scene_spec(cfg))
        if new is None:
            return None
        objects.append(new)
        return _still_true(after), {
            "kind": kind,
            "object": len(objects) - 1,
            "from": None,
            "to": new,
        }
    before = copy.deepcopy(objects[k])
    if kind == "remove":
        del objects[k]
        after["relations"] = []  # the caption's relation may name the removed object
    elif kind == "move":
        objects[k]["x"], objects[k]["y"] = moved_centre(before, value)
    else:
        objects[k]["colour" if kind == "recolour" else "shape"] = value
    return _still_true(after), {"kind": kind, "object": k, "from": before, "to": value}


def instruction(edit: dict[str, Any], phrasing: int) -> str:
    """The instruction for an edit in phrasing ``phrasing`` (modulo the kind's phrasings)."""
    templates = PHRASINGS[edit["kind"]]
    template = templates[phrasing % len(templates)]
    if edit["kind"] == "add":
        return template.format(to=describe_object(dict(edit["to"], say_size=False)))
    target = edit["from"]
    return template.format(target=_name(target), to=edit["to"], colour=target["colour"])


def edit_scene_settings(
    synthetic: Mapping[str, Any],
    object_count_weights: Sequence[float] | None = None,
    size_scale: float | None = None,
) -> dict[str, Any]:
    """The scene settings edit triples are drawn with: ``synthetic`` (the ``shard.synthetic``
    section, as a dict) with ``object_count_weights`` and ``size_scale`` replaced where given
    (``shard_edits``' own). Checked like the caption scenes': a ValueError names the problem."""
    given = {"object_count_weights": object_count_weights, "size_scale": size_scale}
    overrides = {key: value for key, value in given.items() if value is not None}
    settings = {**synthetic, **overrides}
    try:
        scene_spec(settings)
    except ValueError as err:
        raise ValueError(
            f"edit scenes (shard.synthetic with shard_edits' {overrides}): {err}"
        ) from err
    return settings


def sample_edit_triple(
    index: int, seed: int, cfg: Any, *, held_out: bool, kinds: tuple[str, ...] = EDIT_KINDS
) -> tuple[dict[str, Any], dict[str, Any], str, dict[str, Any]] | None:
    """Triple ``index`` of dataset ``seed``: (input scene, edited scene, instruction, edit), or
    None when scene ``index`` allows no edit of ``kinds`` in the split.

    ``held_out`` picks the split: True draws only held-out combinations (evaluation), False
    never draws one (training). The kind is drawn first, evenly over the kinds the scene allows,
    then the edit. The input scene is scene ``index`` of the same seed.
    """
    unknown = [k for k in kinds if k not in EDIT_KINDS]
    if not kinds or unknown:
        raise ValueError(f"edit kinds must be a non-empty subset of {EDIT_KINDS}, got {kinds}")
    scene = sample_scene(index, seed, cfg)
    rng = np.random.default_rng([int(seed), int(index), EDIT_STREAM])
    pool = [c for c in candidate_edits(scene, cfg) if c[0] in kinds]
    pool = [c for c in pool if in_split(c, scene, cfg) == held_out]
    while pool:
        allowed = [k for k in kinds if any(c[0] == k for c in pool)]
        kind = allowed[int(rng.integers(len(allowed)))]
        of_kind = [c for c in pool if c[0] == kind]
        choice = of_kind[int(rng.integers(len(of_kind)))]
        edited = apply_edit(rng, scene, choice, cfg)
        if edited is not None:
            after, edit = edited
            return scene, after, instruction(edit, int(rng.integers(len(PHRASINGS[kind])))), edit
        pool.remove(choice)
    return None


def edit_region(edit: dict[str, Any], resolution: int, margin_px: int = 1) -> np.ndarray:
    """Boolean [resolution, resolution] mask of the pixels the edit may change: the edited
    object's disc before and after, widened by ``margin_px`` for anti-aliasing."""
    discs = [edit["to"]] if edit["kind"] == "add" else [edit["from"]]
    if edit["kind"] == "move":
        x, y = moved_centre(edit["from"], edit["to"])
        discs.append(dict(edit["from"], x=x, y=y))
    mask = np.zeros((resolution, resolution), dtype=bool)
    for o in discs:
        mask |= disc_mask(o, resolution, (margin_px + 0.5) * np.sqrt(2))
    return mask


def disc_mask(obj: dict[str, Any], size: int, extra_px: float) -> np.ndarray:
    """Boolean [size, size]: the pixels whose centres lie within ``obj``'s disc widened by
    ``extra_px`` pixels."""
    centres = (np.arange(size) + 0.5) / size
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.hypot(xs - obj["x"], ys - obj["y"]) <= obj["radius"] + extra_px / size
