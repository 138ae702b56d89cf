"""Reference features are computed once per image set and weights, then read from the cache."""

import pytest
import torch

from pipeline.evaluation.reference_stats import (
    images_content_hash,
    reference_features,
    reference_features_of_images,
)
from tests.evaluation.helpers import smooth_images


def test_second_call_reads_the_cache_and_changed_images_miss_it(tmp_path, inception64):
    images = smooth_images(6, seed=0)
    first = reference_features_of_images(images, inception64, tmp_path, batch_size=4)
    assert not first.from_cache
    assert (tmp_path / f"{first.key}.pt").is_file()
    assert first.features.shape == (6, 64)
    torch.testing.assert_close(first.mean, first.features.double().mean(0))
    torch.testing.assert_close(first.cov, torch.cov(first.features.double().T))

    second = reference_features_of_images(images.clone(), inception64, tmp_path)
    assert second.from_cache and second.key == first.key
    torch.testing.assert_close(second.features, first.features, rtol=0, atol=0)

    changed = images.clone()
    changed[3, 0, 5, 5] ^= 1  # one pixel, one bit
    third = reference_features_of_images(changed, inception64, tmp_path)
    assert not third.from_cache and third.key != first.key
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_a_cache_hit_does_not_read_the_images(tmp_path, inception64):
    """With a caller-given content hash (e.g. of the shards), a hit never touches the data."""
    images = smooth_images(4, seed=1)
    calls = []

    def batches():
        calls.append(1)
        return [images[:2], images[2:]]

    first = reference_features(inception64, tmp_path, "shards-abc", batches)
    second = reference_features(inception64, tmp_path, "shards-abc", batches)
    assert len(calls) == 1 and second.from_cache
    assert second.num_samples == 4 and second.content_hash == "shards-abc"
    torch.testing.assert_close(second.cov, first.cov)


def test_the_key_depends_on_the_weights(tmp_path, inception64):
    from pipeline.evaluation.reference_stats import reference_cache_key

    other = type(inception64)(feature=64)
    with pytest.raises(ValueError, match="weights_sha256"):
        reference_cache_key("x", other)
    other.weights_sha256 = "0" * 64
    assert reference_cache_key("x", other) != reference_cache_key("x", inception64)


def test_content_hash_covers_shape_and_dtype():
    images = smooth_images(2, seed=2)
    assert images_content_hash(images) == images_content_hash(list(images.split(1)))
    assert images_content_hash(images) != images_content_hash(images.reshape(2, 3, 16, 64))
    with pytest.raises(TypeError, match="uint8"):
        images_content_hash(images.float())
