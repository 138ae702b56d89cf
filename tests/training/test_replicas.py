"""Data-parallel workers: each draws its own random numbers; their weights are compared."""

import torch

from pipeline.training.replicas import check_replicas, rank_seed, weights_digest


def test_worker_zero_keeps_the_run_seed_and_every_worker_gets_its_own():
    assert rank_seed(7, 0) == 7  # a one-worker run is unchanged
    seeds = [rank_seed(7, rank) for rank in range(64)]
    assert len(set(seeds)) == 64 and seeds == [rank_seed(7, rank) for rank in range(64)]
    assert rank_seed(8, 1) != rank_seed(7, 1)


def test_the_digest_changes_with_any_weight_and_without_workers_there_is_one_replica():
    weights = {"a": torch.zeros(3), "b": torch.ones(2, 2), "step": torch.tensor(5)}
    digest = weights_digest(weights)
    assert digest == weights_digest({k: v.clone() for k, v in weights.items()})
    changed = {**weights, "b": torch.ones(2, 2).index_put_((torch.tensor([1]),), torch.tensor(2.0))}
    assert weights_digest(changed) != digest
    assert check_replicas(weights, "pretrain_base") == 1  # no process group: nothing to compare
