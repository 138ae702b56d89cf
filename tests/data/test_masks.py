"""Inpainting training masks: each kind covers what it should, the mix is honoured, seeded."""

import pytest
import torch

from pipeline.data.masks import mask_mix_weights, random_masks

SIZE = 32


def masks_of(kind, n=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    masks, kinds = random_masks(n, SIZE, {kind: 1.0}, generator)
    assert set(kinds) == {kind}
    assert masks.shape == (n, 1, SIZE, SIZE) and set(masks.unique().tolist()) <= {0.0, 1.0}
    return masks[:, 0]


def generated_fraction(masks):
    return 1.0 - masks.mean(dim=(1, 2))


def test_rectangles_erase_one_box_of_varied_size():
    masks = masks_of("rectangle")
    erased = generated_fraction(masks)
    assert erased.min() >= 0.1**2 * 0.5 and erased.max() <= 0.75**2 + 0.05
    assert 0.1 < erased.mean() < 0.3  # E[U(.1,.75)]^2 ~ 0.18
    assert erased.std() > 0.05
    for mask in masks[:20]:  # the erased pixels form one box: rows x columns
        rows, cols = (mask == 0).any(dim=1), (mask == 0).any(dim=0)
        assert int((mask == 0).sum()) == int(rows.sum()) * int(cols.sum())


def test_brush_strokes_erase_part_of_the_image_not_a_box():
    masks = masks_of("brush")
    erased = generated_fraction(masks)
    assert (erased > 0).all() and (erased < 0.9).all()
    assert 0.05 < erased.mean() < 0.5
    not_boxes = 0
    for mask in masks:
        rows, cols = (mask == 0).any(dim=1), (mask == 0).any(dim=0)
        not_boxes += int((mask == 0).sum()) < int(rows.sum()) * int(cols.sum())
    assert not_boxes > 0.8 * len(masks)


def test_borders_touch_the_edge_and_keep_the_centre():
    masks = masks_of("border")
    for mask in masks:
        edge = torch.cat([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert (edge == 0).any()
        assert mask[SIZE // 2, SIZE // 2] == 1.0
    assert 0.1 < generated_fraction(masks).mean() < 0.45


def test_full_and_none():
    assert (masks_of("full", n=4) == 0).all()
    assert (masks_of("none", n=4) == 1).all()


def test_the_mix_is_honoured_and_seeded():
    mix = {"rectangle": 0.5, "brush": 0.2, "border": 0.2, "full": 0.05, "none": 0.05}
    _, kinds = random_masks(2000, 8, mix, torch.Generator().manual_seed(1))
    for kind, share in mix.items():
        assert abs(kinds.count(kind) / 2000 - share) < 0.04, kind
    one, _ = random_masks(16, SIZE, mix, torch.Generator().manual_seed(3))
    two, _ = random_masks(16, SIZE, mix, torch.Generator().manual_seed(3))
    other, _ = random_masks(16, SIZE, mix, torch.Generator().manual_seed(4))
    assert torch.equal(one, two) and not torch.equal(one, other)


@pytest.mark.parametrize(
    "mix", [{"circle": 1.0}, {"rectangle": -1.0, "brush": 2.0}, {"rectangle": 0.0}]
)
def test_bad_mixes_are_named(mix):
    with pytest.raises(ValueError, match="mask"):
        mask_mix_weights(mix)
