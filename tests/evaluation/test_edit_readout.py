"""The edit read-out: every exact target is a success with nothing else changed; the unedited
input is no success."""

import numpy as np

from pipeline.config.schema import SyntheticScenesConfig
from pipeline.data.scene_edits import EDIT_KINDS, sample_edit_triple
from pipeline.data.synthetic_scenes import render_scene
from pipeline.evaluation.edit_readout import edit_succeeded, preservation_error

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
