"""FID and KID on the FID Inception: about 0 for a set against itself, growing with noise; cached
reference features give the same figures as the images; small sample counts are handled."""

import pytest
import torch

from pipeline.evaluation.fid_kid import (
    FidKid,
    SampleCountError,
    fid_metric,
    kid_metric,
    sample_counts,
)
from pipeline.evaluation.reference_stats import reference_features_of_images
from tests.evaluation.helpers import add_noise, smooth_images

N = 8


@pytest.fixture(scope="module")
def real():
    return smooth_images(N, seed=10)


@pytest.fixture(scope="module")
def reference(real, inception64, tmp_path_factory):
    return reference_features_of_images(real, inception64, tmp_path_factory.mktemp("fid_ref"))


def _against_reference(extractor, reference, fake):
    metrics = FidKid(extractor, kid_subset_size=N, kid_subsets=20, reference=reference)
    metrics.update(fake)
    figures = metrics.compute()
    return figures["fid"], figures["kid"]


def test_fid_and_kid_are_about_zero_against_itself_and_grow_with_noise(
    inception64, real, reference
):
    fid_self, kid_self = _against_reference(inception64, reference, real)
    fid_low, kid_low = _against_reference(inception64, reference, add_noise(real, 20.0, seed=1))
    fid_high, kid_high = _against_reference(inception64, reference, add_noise(real, 60.0, seed=1))
    assert abs(fid_self) < 1e-4 * fid_low
    assert 0 < fid_low < fid_high
    # KID is an unbiased MMD^2 estimate: a set against an identical copy (all m samples in
    # both subsets) gives -(2/m)(mean k(x,x) - mean k(x,y)), small and negative, not exactly 0.
    feats = reference.features.double()
    kernel = (feats @ feats.T / feats.shape[1] + 1) ** 3
    off_diagonal = (kernel.sum() - kernel.trace()) / (N * (N - 1))
    expected_self = -(2 / N) * (kernel.trace() / N - off_diagonal)
    assert kid_self == pytest.approx(expected_self.item(), rel=1e-4)
    assert abs(kid_self) < 0.2 * kid_low
    assert 0 < kid_low < kid_high


def test_cached_reference_gives_the_same_figures_as_the_images(inception64, real, reference):
    """FidKid (features computed once, reference from the cache) against torchmetrics' FID and
    KID fed with the images on both sides."""
    fake = add_noise(real, 30.0, seed=2)
    fid, kid = fid_metric(inception64), kid_metric(inception64, subset_size=N, subsets=20)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    metrics = FidKid(inception64, kid_subset_size=N, kid_subsets=20, reference=reference)
    metrics.update(fake[:5])
    metrics.update(fake[5:])
    figures = metrics.compute()
    assert figures["fid"] == pytest.approx(fid.compute().item(), rel=1e-6)
    kid_mean, kid_std = kid.compute()
    assert figures["kid"] == pytest.approx(kid_mean.item(), rel=1e-5)
    assert figures["kid_std"] == pytest.approx(kid_std.item(), rel=1e-4)
    assert {k: figures[k] for k in ("num_real", "num_fake", "kid_subset_size")} == {
        "num_real": N,
        "num_fake": N,
        "kid_subset_size": N,
    }
    assert sample_counts(kid) == {"num_real": N, "num_fake": N}
    # reset() drops the generated side only: the cached reference stays.
    metrics.reset()
    metrics.update(fake[:3])
    assert sample_counts(metrics.fid) == {"num_real": N, "num_fake": 3}


def test_kid_with_few_samples(inception64, real, reference):
    """A subset size up to the sample count works (and is reproducible: its own seed); a
    larger one is a clear error, raised before any subset is drawn."""
    kid = kid_metric(inception64, subset_size=3, subsets=10, reference=reference)
    kid.update(add_noise(real[:3], 30.0, seed=3), real=False)
    first, second = kid.compute()[0].item(), kid.compute()[0].item()
    assert first == second and first > 0
    kid = kid_metric(inception64, subset_size=5, reference=reference)
    kid.update(real[:4], real=False)
    with pytest.raises(SampleCountError, match="subset_size=5 fake images, got 4"):
        kid.compute()
    with pytest.raises(SampleCountError, match=">= 2"):
        kid_metric(inception64, subset_size=1)


def test_reference_of_another_feature_width_is_refused(inception2048, reference):
    with pytest.raises(ValueError, match="64-d but the metric's extractor gives 2048-d"):
        fid_metric(inception2048, reference=reference)
    assert torch.is_tensor(reference.features)
