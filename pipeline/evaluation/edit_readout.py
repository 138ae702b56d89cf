"""Read-out of instruction edits on the embedded scenes: did the asked change happen, and was
the rest of the scene left alone?

- **Edit success** reads the edited object with :func:`scene_readout.read_object` inside its
  disc (every other pixel painted background): a recolour succeeds when the disc reads the new
  colour, a reshape when it reads the new shape, a move when the object's colour and shape are
  read at the new place and nothing at the old one, a removal when nothing is read at the old
  place, an addition when an object of the asked colour and shape is read away from the objects
  already there.
- **Others kept** asks the same of every object the edit leaves alone: each reads back, inside
  its own disc, with its colour and shape (None for a scene with no such object).
- **Preservation error** is the mean absolute pixel difference (0..1) between the output and the
  input outside what the edit may change (:func:`scene_edits.edit_region`; for an addition, the
  input's objects only, since the new object may go anywhere on the background).

On the exact targets the read-out scores every edit a success with every other object kept and
zero preservation error (tested); on the unedited input, none succeeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.data.scene_edits import disc_mask, edit_region, moved_centre
from pipeline.data.synthetic_scenes import BACKGROUNDS
from pipeline.evaluation.scene_readout import read_object


def _disc(obj: dict[str, Any], size: int, margin_px: float = 1.0) -> np.ndarray:
    return disc_mask(obj, size, margin_px * np.sqrt(2))


def _read_inside(image: np.ndarray, keep: np.ndarray, background: str) -> dict[str, Any] | None:
    painted = np.where(keep[..., None], image, np.asarray(BACKGROUNDS[background], np.uint8))
    return read_object(painted.astype(np.uint8), background)


def edit_succeeded(image: np.ndarray, edit: dict[str, Any], source_scene: dict[str, Any]) -> bool:
    """Whether uint8 ``image`` [H, W, 3] shows ``edit`` applied to ``source_scene``."""
    size, background, kind = image.shape[0], source_scene["background"], edit["kind"]
    if kind == "add":
        taken = np.zeros(image.shape[:2], dtype=bool)
        for obj in source_scene["objects"]:
            taken |= _disc(obj, size, margin_px=2.0)
        seen = _read_inside(image, ~taken, background)
        wanted = edit["to"]
        return bool(seen) and (seen["colour"], seen["shape"]) == (wanted["colour"], wanted["shape"])
    before = edit["from"]
    at_old = _read_inside(image, _disc(before, size), background)
    if kind == "remove":
        return at_old is None
    if kind == "move":
        x, y = moved_centre(before, edit["to"])
        at_new_disc = _disc(dict(before, x=x, y=y), size)
        at_new = _read_inside(image, at_new_disc, background)
        vacated = _read_inside(image, _disc(before, size) & ~at_new_disc, background)
        same = bool(at_new) and (at_new["colour"], at_new["shape"]) == (
            before["colour"], before["shape"],
        )  # fmt: skip
        return same and vacated is None
    if at_old is None:
        return False
    return at_old["colour" if kind == "recolour" else "shape"] == edit["to"]


def untouched_objects(edit: dict[str, Any], source_scene: dict[str, Any]) -> list[dict]:
    """The objects of ``source_scene`` that ``edit`` leaves as they were (all, for an add)."""
    return [o for k, o in enumerate(source_scene["objects"]) if k != edit["object"]]


def others_kept(
    image: np.ndarray, edit: dict[str, Any], source_scene: dict[str, Any]
) -> bool | None:
    """Whether every object ``edit`` leaves alone reads back in uint8 ``image`` with its colour
    and shape inside its disc; None when the edit leaves no object alone."""
    others = untouched_objects(edit, source_scene)
    if not others:
        return None
    size, background = image.shape[0], source_scene["background"]
    for obj in others:
        seen = _read_inside(image, _disc(obj, size), background)
        if not seen or (seen["colour"], seen["shape"]) != (obj["colour"], obj["shape"]):
            return False
    return True


def preservation_error(
    image: np.ndarray, source: np.ndarray, edit: dict[str, Any], source_scene: dict[str, Any]
) -> float:
    """Mean |image - source| / 255 over the pixels ``edit`` must leave unchanged."""
    size = image.shape[0]
    if edit["kind"] == "add":
        keep = np.zeros((size, size), dtype=bool)
        for obj in source_scene["objects"]:
            keep |= _disc(obj, size)
        keep &= ~edit_region(edit, size)  # the new object's anti-aliased edge may reach them
    else:
        keep = ~edit_region(edit, size)
    if not keep.any():
        return 0.0
    diff = np.abs(image.astype(np.float64) - source.astype(np.float64)) / 255.0
    return float(diff[keep].mean())
