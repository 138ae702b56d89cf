import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data.synthetic_scenes import generate_sample, render_scene
from pipeline.evaluation.scene_readout import caption_attributes, caption_following, read_object


@pytest.fixture(scope="module")
def one_object_scenes():
    syn = load_config(["profile=mini"], params_path=None).shard.synthetic
    images, captions = [], []
    for index in range(60):
        image, caption, _ = generate_sample(index, 3, syn, 32)
        images.append(np.asarray(image))
        captions.append(caption)
    return np.stack(images), captions


def test_reads_the_generators_own_images_right(one_object_scenes):
    images, captions = one_object_scenes
    result = caption_following(images, captions)
    assert result["scored"] == 60 and result["skipped_captions"] == 0
    assert result["colour_accuracy"] == 1.0
    assert result["shape_accuracy"] >= 0.95
    confusion = result["shape_confusion"]  # "wanted->read": right reads on the diagonal
    assert sum(confusion.values()) == 60
    diagonal = sum(n for pair, n in confusion.items() if pair.split("->")[0] == pair.split("->")[1])
    assert diagonal == result["shape_hits"]


def test_images_under_the_wrong_captions_score_near_chance(one_object_scenes):
    images, captions = one_object_scenes
    shifted = captions[1:] + captions[:1]
    result = caption_following(images, shifted)
    truth = [caption_attributes(c) for c in captions]
    pairs = zip(truth, truth[1:] + truth[:1], strict=True)
    same_colour = np.mean([a["colour"] == b["colour"] for a, b in pairs])
    assert result["colour_accuracy"] == pytest.approx(same_colour)
    assert result["colour_accuracy"] < 0.4


def test_each_shape_and_colour_is_told_apart():
    for shape in ("circle", "square", "triangle", "diamond", "star", "cross"):
        for colour in ("red", "black", "white", "purple"):
            scene = {
                "background": "gray",
                "objects": [{"shape": shape, "colour": colour, "x": 0.4, "y": 0.6, "radius": 0.2}],
            }
            seen = read_object(np.asarray(render_scene(scene, 32)))
            assert (seen["colour"], seen["shape"]) == (colour, shape)


def test_a_tinted_background_is_taken_from_the_border():
    scene = {
        "background": "gray",
        "objects": [{"shape": "square", "colour": "blue", "x": 0.5, "y": 0.5, "radius": 0.2}],
    }
    image = np.asarray(render_scene(scene, 32)).astype(int)
    tinted = np.clip(image + np.array([40, 10, -30]), 0, 255).astype(np.uint8)
    assert read_object(tinted)["colour"] == "blue"


def test_blank_images_count_as_wrong_and_multi_object_captions_are_skipped():
    blank = np.full((2, 32, 32, 3), 128, np.uint8)
    result = caption_following(blank, ["a red circle", "a red circle above a blue square"])
    assert result["scored"] == 1 and result["skipped_captions"] == 1
    assert result["no_object"] == 1 and result["colour_accuracy"] == 0.0
    assert result["shape_confusion"] == {"circle->none": 1}
    assert caption_attributes("a large yellow star on the left") == {
        "colour": "yellow",
        "shape": "star",
    }
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        caption_following(blank, ["a red circle"])
