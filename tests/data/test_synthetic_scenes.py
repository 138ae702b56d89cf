"""The synthetic captioned-scene dataset: determinism, layout, captions true of their images."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from pipeline.config.schema import SyntheticScenesConfig
from pipeline.data.synthetic_scenes import (
    BACKGROUNDS,
    COLOURS,
    RELATION_MARGIN,
    RELATION_PHRASES,
    caption_scene,
    describe_object,
    generate_sample,
    render_scene,
    sample_scene,
)

CFG = SyntheticScenesConfig()
N_SCENES = 400


@pytest.fixture(scope="module")
def scenes():
    return [sample_scene(i, 3, CFG) for i in range(N_SCENES)]


def test_same_seed_and_index_give_identical_pixels_and_caption():
    img1, cap1, scene1 = generate_sample(17, 5, CFG, 64)
    img2, cap2, scene2 = generate_sample(17, 5, CFG, 64)
    assert cap1 == cap2 and scene1 == scene2
    assert np.array_equal(np.asarray(img1), np.asarray(img2))


def test_different_index_or_seed_gives_a_different_scene():
    ref = sample_scene(17, 5, CFG)
    assert sample_scene(18, 5, CFG) != ref
    assert sample_scene(17, 6, CFG) != ref
    captions = {caption_scene(sample_scene(i, 5, CFG)) for i in range(100)}
    assert len(captions) > 90


def test_generation_does_not_touch_or_depend_on_the_global_rng():
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    a = sample_scene(3, 1, CFG)
    assert np.array_equal(np.random.get_state()[1], state)
    np.random.seed(123)
    assert sample_scene(3, 1, CFG) == a


def test_omegaconf_node_and_plain_dict_give_the_same_scenes_as_the_dataclass():
    node = OmegaConf.structured(CFG)
    plain = OmegaConf.to_container(node)
    expected = [sample_scene(i, 0, CFG) for i in range(20)]
    assert [sample_scene(i, 0, node) for i in range(20)] == expected
    assert [sample_scene(i, 0, plain) for i in range(20)] == expected


def test_object_counts_stay_within_bounds():
    cfg = SyntheticScenesConfig(min_objects=2, max_objects=4)
    counts = {len(sample_scene(i, 0, cfg)["objects"]) for i in range(300)}
    assert counts <= {2, 3, 4} and {2, 3} <= counts
    cfg = SyntheticScenesConfig(min_objects=1, max_objects=1)
    assert all(len(sample_scene(i, 0, cfg)["objects"]) == 1 for i in range(50))


def test_object_count_weights_set_the_share_of_each_count():
    cfg = SyntheticScenesConfig(min_objects=1, max_objects=2, object_count_weights=[3.0, 1.0])
    counts = [len(sample_scene(i, 0, cfg)["objects"]) for i in range(400)]
    assert 0.17 < counts.count(2) / len(counts) < 0.33  # 1/4 expected; 3 sd is +-0.065
    only_two = SyntheticScenesConfig(min_objects=1, max_objects=2, object_count_weights=[0, 1])
    assert all(len(sample_scene(i, 0, only_two)["objects"]) == 2 for i in range(50))


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0], [0.0, 0.0]])
def test_bad_object_count_weights_are_refused(weights):
    cfg = SyntheticScenesConfig(min_objects=1, max_objects=2, object_count_weights=weights)
    with pytest.raises(ValueError, match="object_count_weights"):
        sample_scene(0, 0, cfg)


def test_objects_are_inside_the_image_and_do_not_overlap(scenes):
    for scene in scenes:
        objs = scene["objects"]
        for o in objs:
            assert o["radius"] <= o["x"] <= 1 - o["radius"]
            assert o["radius"] <= o["y"] <= 1 - o["radius"]
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                assert np.hypot(a["x"] - b["x"], a["y"] - b["y"]) >= a["radius"] + b["radius"]


def test_sizes_have_clearly_different_radii(scenes):
    objs = [o for s in scenes for o in s["objects"]]
    small = [o["radius"] for o in objs if o["size"] == "small"]
    large = [o["radius"] for o in objs if o["size"] == "large"]
    assert small and large and max(small) * 1.3 < min(large)


def test_scene_is_json_serialisable_and_captions_from_the_round_trip(scenes):
    for scene in scenes[:50]:
        back = json.loads(json.dumps(scene))
        assert back == scene
        assert caption_scene(back) == caption_scene(scene)


def test_caption_mentions_every_object_colour_and_shape(scenes):
    for scene in scenes:
        caption = caption_scene(scene)
        for o in scene["objects"]:
            assert f"{o['colour']} {o['shape']}" in caption, (caption, o)
            if o["say_size"]:
                assert f"{o['size']} {o['colour']} {o['shape']}" in caption


def test_stated_relations_agree_with_positions(scenes):
    stated = 0
    for scene in scenes:
        objs = scene["objects"]
        caption = caption_scene(scene)
        for rel in scene["relations"]:
            s, o = objs[rel["subject"]], objs[rel["object"]]
            phrase = RELATION_PHRASES[rel["relation"]]
            assert f"{describe_object(s)} {phrase} {describe_object(o)}" in caption
            dx, dy = o["x"] - s["x"], o["y"] - s["y"]  # y grows downwards
            expected = {
                "left of": dx > RELATION_MARGIN,
                "right of": -dx > RELATION_MARGIN,
                "above": dy > RELATION_MARGIN,
                "below": -dy > RELATION_MARGIN,
            }[rel["relation"]]
            assert expected, (caption, s, o)
            stated += 1
    assert stated > 100  # relation_probability 0.7 of the 2+-object scenes


def test_relation_probability_zero_and_one():
    never = SyntheticScenesConfig(min_objects=2, relation_probability=0.0)
    always = SyntheticScenesConfig(min_objects=2, relation_probability=1.0)
    assert all(not sample_scene(i, 0, never)["relations"] for i in range(100))
    assert all(len(sample_scene(i, 0, always)["relations"]) == 1 for i in range(100))


def test_single_object_location_phrases_are_true():
    cfg = SyntheticScenesConfig(min_objects=1, max_objects=1)
    seen = 0
    for i in range(300):
        scene = sample_scene(i, 0, cfg)
        o, loc = scene["objects"][0], scene["location"]
        if loc is None:
            continue
        seen += 1
        assert caption_scene(scene).endswith(loc)
        assert {
            "on the left": o["x"] < 0.5,
            "on the right": o["x"] > 0.5,
            "at the top": o["y"] < 0.5,
            "at the bottom": o["y"] > 0.5,
        }[loc]
    assert seen > 20


def test_articles_are_correct(scenes):
    for scene in scenes:
        caption = caption_scene(scene)
        for art, word in re.findall(r"\b(an?) (\w+)", caption):
            assert (art == "an") == (word[0] in "aeiou"), caption
    orange = {"shape": "star", "colour": "orange", "size": "small", "say_size": False}
    assert describe_object(orange) == "an orange star"
    assert describe_object({**orange, "say_size": True}) == "a small orange star"


def test_captions_are_short(scenes):
    lengths = [len(caption_scene(s).split()) for s in scenes]
    assert max(lengths) <= 20


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_render_size_and_mode(resolution):
    img, _, _ = generate_sample(0, 0, CFG, resolution)
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB" and img.size == (resolution, resolution)


def _nearest_colour(pixels: np.ndarray) -> list[str]:
    names = list(COLOURS)
    table = np.array([COLOURS[n] for n in names], dtype=np.float64)
    d = ((pixels[:, None, :].astype(np.float64) - table[None]) ** 2).sum(-1)
    return [names[k] for k in d.argmin(1)]


def test_named_colour_dominates_each_object_disc(scenes):
    res = 128
    for scene in scenes[:120]:
        arr = np.asarray(render_scene(scene, res))
        for o in scene["objects"]:
            r = 0.25 * o["radius"] * res
            ys, xs = np.mgrid[-2:3, -2:3] * (r / 2)
            px = np.clip((o["x"] * res + xs).astype(int), 0, res - 1)
            py = np.clip((o["y"] * res + ys).astype(int), 0, res - 1)
            names = _nearest_colour(arr[py.ravel(), px.ravel()])
            assert names.count(o["colour"]) >= 0.8 * len(names), (caption_scene(scene), o)


def test_background_differs_from_every_object_colour():
    for bg in BACKGROUNDS.values():
        for colour in COLOURS.values():
            assert np.abs(np.subtract(bg, colour)).sum() > 80
    corner = np.asarray(render_scene(sample_scene(0, 0, CFG), 64))[0, 0]
    assert tuple(corner) == BACKGROUNDS[CFG.backgrounds[0]]


def test_low_res_render_matches_downsampled_high_res(scenes):
    for scene in scenes[:10]:
        low = np.asarray(render_scene(scene, 64), dtype=np.float64)
        high = render_scene(scene, 256).resize((64, 64), Image.Resampling.BOX)
        diff = np.abs(low - np.asarray(high, dtype=np.float64))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) < 24


def test_render_has_antialiased_edges():
    scene = {
        "background": "gray",
        "objects": [{"shape": "circle", "colour": "white", "size": "large",
                     "x": 0.5, "y": 0.5, "radius": 0.3}],
    }  # fmt: skip
    arr = np.asarray(render_scene(scene, 64))[..., 0]
    intermediate = ((arr > 130) & (arr < 248)).sum()
    assert intermediate > 20  # edge pixels blend object and background


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="colours"):
        sample_scene(0, 0, SyntheticScenesConfig(colours=["red", "mauve"]))
    with pytest.raises(ValueError, match="min_objects"):
        sample_scene(0, 0, SyntheticScenesConfig(min_objects=3, max_objects=2))
    with pytest.raises(ValueError, match="size_scale"):
        sample_scene(0, 0, SyntheticScenesConfig(size_scale=2.5))  # a large object would not fit
    with pytest.raises(ValueError, match="size_scale"):
        sample_scene(0, 0, SyntheticScenesConfig(size_scale=0.0))


def test_size_scale_scales_every_radius_and_keeps_scenes_valid():
    one = SyntheticScenesConfig(max_objects=1)
    doubled = SyntheticScenesConfig(max_objects=1, size_scale=2.0)
    for index in range(60):
        plain, big = sample_scene(index, 4, one), sample_scene(index, 4, doubled)
        (p,), (b,) = plain["objects"], big["objects"]
        assert (b["shape"], b["colour"], b["size"]) == (p["shape"], p["colour"], p["size"])
        assert b["radius"] == pytest.approx(2.0 * p["radius"])
        assert b["radius"] <= b["x"] <= 1 - b["radius"] and b["radius"] <= b["y"] <= 1 - b["radius"]
        area = (np.asarray(render_scene(big, 64)) != BACKGROUNDS[big["background"]]).any(-1).sum()
        plain_area = (
            (np.asarray(render_scene(plain, 64)) != BACKGROUNDS[plain["background"]]).any(-1).sum()
        )
        assert area > 3 * plain_area  # four times the area, less anti-aliasing at the edges
