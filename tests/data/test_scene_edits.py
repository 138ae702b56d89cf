"""Edit triples: exact before/after pairs, instructions that name the edit, disjoint splits."""

import numpy as np
import pytest

from pipeline.config.schema import SyntheticScenesConfig
from pipeline.data.scene_edits import (
    EDIT_KINDS,
    apply_edit,
    candidate_edits,
    edit_region,
    edit_scene_settings,
    is_held_out,
    sample_edit_triple,
)
from pipeline.data.synthetic_scenes import (
    SIZE_JITTER,
    SIZES,
    caption_scene,
    relation_between,
    render_scene,
    sample_scene,
)

CFG = SyntheticScenesConfig()
RES = 64


def triples(held_out: bool, count: int = 40):
    drawn = [sample_edit_triple(i, 3, CFG, held_out=held_out) for i in range(count)]
    assert sum(t is None for t in drawn) <= count // 20  # a scene rarely allows no edit
    return [t for t in drawn if t is not None]


@pytest.mark.parametrize("held_out", [False, True])
def test_only_the_edited_object_changes_and_it_visibly_does(held_out):
    for before, after, _, edit in triples(held_out):
        a = np.asarray(render_scene(before, RES))
        b = np.asarray(render_scene(after, RES))
        outside = ~edit_region(edit, RES)
        assert np.array_equal(a[outside], b[outside]), edit
        assert (a != b).any(), edit  # the edit shows


def test_every_kind_occurs_with_instructions_that_name_it():
    seen = set()
    for before, after, text, edit in triples(False, 80):
        seen.add(edit["kind"])
        if edit["kind"] == "add":
            assert f"{edit['to']['colour']} {edit['to']['shape']}" in text
            assert len(after["objects"]) == len(before["objects"]) + 1
            continue
        target = before["objects"][edit["object"]]
        assert f"{target['colour']} {target['shape']}" in text
        if edit["kind"] == "remove":
            assert len(after["objects"]) == len(before["objects"]) - 1
        else:
            assert str(edit["to"]) in text
            assert after["objects"][edit["object"]] != target
    assert seen == set(EDIT_KINDS)


def test_edited_scenes_keep_unique_objects_and_true_captions():
    for _, after, _, _ in triples(False) + triples(True):
        pairs = [(o["shape"], o["colour"]) for o in after["objects"]]
        assert len(pairs) == len(set(pairs))  # every phrase still names one object
        for rel in after["relations"]:
            subject, obj = after["objects"][rel["subject"]], after["objects"][rel["object"]]
            assert rel["relation"] in relation_between(subject, obj)
        assert caption_scene(after)


def test_splits_are_disjoint_deterministic_and_both_drawn():
    train, held = triples(False), triples(True)
    assert not any(is_held_out(edit, CFG) for *_, edit in train)
    assert all(is_held_out(edit, CFG) for *_, edit in held)
    assert sample_edit_triple(5, 3, CFG, held_out=False) == sample_edit_triple(
        5, 3, CFG, held_out=False
    )
    assert sample_edit_triple(5, 4, CFG, held_out=False) != sample_edit_triple(
        5, 3, CFG, held_out=False
    )
    assert {edit["kind"] for *_, edit in held} == set(EDIT_KINDS)


def test_edits_a_scene_cannot_take_are_not_offered_and_bad_kinds_are_refused():
    one = sample_scene(0, 0, SyntheticScenesConfig(min_objects=1, max_objects=1))
    offered = candidate_edits(one, CFG)
    assert {kind for kind, *_ in offered} == {"recolour", "reshape", "move", "add"}
    for choice in offered:
        after, _ = apply_edit(np.random.default_rng(0), one, choice, CFG)
        objects = after["objects"]
        assert all(
            o["radius"] + 0.02 <= v <= 1 - o["radius"] - 0.02
            for o in objects
            for v in (o["x"], o["y"])
        )
    with pytest.raises(ValueError, match="edit kinds"):
        sample_edit_triple(0, 0, CFG, held_out=False, kinds=("recolor",))


def test_edit_scenes_take_shard_edits_own_object_counts_and_sizes():
    caption_scenes = {**vars(SyntheticScenesConfig()), "min_objects": 1, "max_objects": 2}
    caption_scenes["object_count_weights"] = [1.0, 0.0]  # the caption shards: one object each
    edit_scenes = edit_scene_settings(caption_scenes, [0.0, 1.0], 0.75)
    assert caption_scenes["object_count_weights"] == [1.0, 0.0]  # the shard section is kept
    assert edit_scene_settings(caption_scenes) == caption_scenes  # nothing set: the shard's
    drawn = [sample_edit_triple(i, 3, edit_scenes, held_out=False) for i in range(20)]
    scenes = [t[0] for t in drawn if t is not None]
    assert len(scenes) >= 19 and all(len(s["objects"]) == 2 for s in scenes)
    radii = [o["radius"] / SIZES[o["size"]] for s in scenes for o in s["objects"]]
    assert 0.75 * (1 - SIZE_JITTER) <= min(radii) <= max(radii) <= 0.75 * (1 + SIZE_JITTER)
    with pytest.raises(ValueError, match=r"shard_edits' \{'object_count_weights'.*one per count"):
        edit_scene_settings(caption_scenes, [1.0, 1.0, 1.0])
