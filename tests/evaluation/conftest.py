"""Shared FID Inception networks (loading one takes ~2 s)."""

import pytest

from pipeline.evaluation.inception_weights import load_fid_inception


@pytest.fixture(scope="session")
def inception64():
    """The FID Inception-v3 up to its first pooled feature (64-d): the same weights, input
    resize and normalisation as the 2048-d network at a tenth of its CPU cost."""
    return load_fid_inception(feature=64)


@pytest.fixture(scope="session")
def inception2048():
    return load_fid_inception(feature=2048)
