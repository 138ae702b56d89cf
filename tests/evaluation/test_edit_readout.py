"""The edit read-out: every exact target is a success with nothing else changed; the unedited
input is no success; an object the edit should have left alone and did not is seen."""

import numpy as np

from pipeline.config.schema import SyntheticScenesConfig
from pipeline.data.scene_edits import EDIT_KINDS, sample_edit_triple
from pipeline.data.synthetic_scenes import BACKGROUNDS, COLOURS, render_scene
from pipeline.evaluation.edit_readout import (
    edit_succeeded,
    others_kept,
    preservation_error,
    untouched_objects,
)

RES = 64


def test_targets_succeed_inputs_do_not_and_preservation_sees_changes():
    triples = [sample_edit_triple(i, 1, SyntheticScenesConfig(), held_out=False) for i in range(60)]
    kinds = set()
    for before, after, _, edit in filter(None, triples):
        kinds.add(edit["kind"])
        source = np.asarray(render_scene(before, RES))
        target = np.asarray(render_scene(after, RES))
        assert edit_succeeded(target, edit, before), edit
        assert not edit_succeeded(source, edit, before), edit
        assert preservation_error(target, source, edit, before) == 0.0
        noisy = np.clip(target.astype(int) + 40, 0, 255).astype(np.uint8)  # everything changed
        assert preservation_error(noisy, source, edit, before) > 0.1
    assert kinds == set(EDIT_KINDS)


def test_others_kept_sees_each_object_the_edit_leaves_alone():
    drawn = [sample_edit_triple(i, 2, SyntheticScenesConfig(), held_out=False) for i in range(80)]
    scored = 0
    for before, after, _, edit in filter(None, drawn):
        target = np.asarray(render_scene(after, RES))
        others = untouched_objects(edit, before)
        assert len(others) == len(before["objects"]) - (edit["kind"] != "add")
        if not others:
            assert others_kept(target, edit, before) is None
            continue
        scored += 1
        assert others_kept(target, edit, before) is True, edit
        assert others_kept(np.asarray(render_scene(before, RES)), edit, before) is True
        blank = np.broadcast_to(
            np.asarray(BACKGROUNDS[before["background"]], np.uint8), target.shape
        )
        assert others_kept(blank.copy(), edit, before) is False
        lost = np.asarray(
            render_scene(dict(after, objects=[o for o in after["objects"] if o != others[0]]), RES)
        )
        assert others_kept(lost, edit, before) is False, edit  # one untouched object gone
        taken = {o["colour"] for o in after["objects"]}
        recoloured = dict(others[0], colour=next(c for c in COLOURS if c not in taken))
        changed = [recoloured if o == others[0] else o for o in after["objects"]]
        changed_image = np.asarray(render_scene(dict(after, objects=changed), RES))
        assert others_kept(changed_image, edit, before) is False, edit  # in place, other colour
    assert scored >= 10
