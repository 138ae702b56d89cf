"""The CLIP score metric on a toy encoder whose embeddings are known."""

import pytest
import torch

from pipeline.evaluation.clip_score import ClipScore

COLOURS = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0]}


class ColourEncoder:
    """Image embedding: mean colour in [-1, 1]; text embedding: the named colour's direction
    (negative for 'not <colour>')."""

    metric_name = "clip_score_proxy"

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        sign = [(-1.0 if c.startswith("not ") else 1.0) for c in captions]
        rows = [COLOURS[c.removeprefix("not ")] for c in captions]
        return torch.tensor(rows) * torch.tensor(sign)[:, None]


def solid(rgb: list[float], count: int = 1) -> torch.Tensor:
    return torch.tensor(rgb).reshape(1, 3, 1, 1).expand(count, 3, 8, 8).clone()


def test_score_is_100_times_clamped_cosine_averaged():
    metric = ClipScore(ColourEncoder())
    red = solid([1.0, -1.0, -1.0])  # embedding (1, -1, -1): cos with red = 1/sqrt(3)
    metric.update(red, ["red"])
    assert metric.compute().item() == pytest.approx(100 / 3**0.5, rel=1e-6)
    # cos with 'green' is -1/sqrt(3): clamped to 0 for that image, so the mean halves.
    metric.update(red, ["green"])
    assert metric.compute().item() == pytest.approx(50 / 3**0.5, rel=1e-6)
    assert metric.name == "clip_score_proxy"


def test_states_merge_like_one_metric_over_all_pairs():
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    captions = ["red", "green", "blue", "not red", "blue", "green"]
    whole = ClipScore(ColourEncoder())
    whole.update(images, captions)
    parts = [ClipScore(ColourEncoder()) for _ in range(2)]
    parts[0].update(images[:4], captions[:4])
    parts[1].update(images[4:], captions[4:])
    parts[0].merge_state(parts[1])
    assert parts[0].compute().item() == pytest.approx(whole.compute().item(), rel=1e-6)


def test_bad_encoder_or_inputs_are_named():
    with pytest.raises(TypeError, match="lacks metric_name"):
        ClipScore(type("NoName", (), {"encode_image": None, "encode_text": None})())
    metric = ClipScore(ColourEncoder())
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        metric.update(solid([1.0, 0.0, 0.0], 2), ["red"])
    with pytest.raises(ValueError, match=r"float images \[B, 3, H, W\]"):
        metric.update(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), ["red"])
    with pytest.raises(RuntimeError, match="no images"):
        metric.compute()
