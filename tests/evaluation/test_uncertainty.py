"""The uncertainty primitives: FID from features as torchmetrics computes it, Wilson intervals,
bootstrap spreads that shrink with more samples, per-sample values lined up by index, and the
evaluation CLIP's retrieval against chance."""

import pytest
import torch

from pipeline.evaluation.clip_score import clip_retrieval
from pipeline.evaluation.fid_kid import FeaturePassthrough, fid_metric
from pipeline.evaluation.per_sample import PerSampleValues
from pipeline.evaluation.uncertainty import (
    bootstrap_fid,
    bootstrap_indices,
    centred_interval,
    frechet_distance,
    wilson_interval,
)


@pytest.mark.parametrize(("samples", "width"), [(12, 64), (200, 16)])  # both code paths
def test_frechet_distance_matches_torchmetrics_fid(samples, width):
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(samples, width, generator=generator)
    fake = 1.3 * torch.randn(samples + 3, width, generator=generator) + 0.2
    metric = fid_metric(FeaturePassthrough(width))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert frechet_distance(real, fake) == pytest.approx(float(metric.compute()), rel=1e-4)


def test_wilson_interval_known_values():
    assert wilson_interval(8, 10, 0.95) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    low, high = wilson_interval(10, 10, 0.95)  # a perfect score still has an interval
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0, 0.95)[0] != wilson_interval(0, 0, 0.95)[0]  # NaN: no trials
    for trials in range(1, 60):  # the rate lies inside its interval, rounding included
        for hits in (0, trials // 3, trials):
            low, high = wilson_interval(hits, trials, 0.95)
            assert low <= hits / trials <= high


def test_bootstrap_spread_narrows_with_more_samples_and_holds_the_estimate():
    generator = torch.Generator().manual_seed(1)
    widths = []
    for n in (16, 64):
        real = torch.randn(n, 8, generator=generator)
        fake = torch.randn(n, 8, generator=generator) + 0.5
        point = frechet_distance(real, fake)
        low, high = centred_interval(
            point, bootstrap_fid(real, fake, bootstrap_indices(n, 200, 0)), 0.95
        )
        assert low < point < high
        widths.append(high - low)
    assert widths[1] < 0.75 * widths[0]


def test_per_sample_values_come_back_in_index_order_whoever_added_them():
    metric = PerSampleValues(shape=(2,))
    metric.update(torch.tensor([2, 3]), torch.tensor([[2.0, 2.0], [3.0, 3.0]]))
    metric.update(torch.tensor([0, 1]), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert metric.compute()[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    metric.update(torch.tensor([1]), torch.tensor([[9.0, 9.0]]))
    with pytest.raises(RuntimeError, match="added twice"):
        metric.compute()


def test_retrieval_counts_identical_captions_as_right_and_sets_chance_by_them():
    texts = torch.eye(3)[[0, 0, 1, 2]]  # four pairs, the first two with the same caption
    assert clip_retrieval(texts.clone(), texts) == {
        "pairs": 4, "hits": 4, "accuracy": 1.0, "chance": pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4)
    }  # fmt: skip
    swapped = texts[[2, 3, 0, 1]]  # each image looks like another caption
    assert clip_retrieval(swapped, texts)["hits"] == 0
