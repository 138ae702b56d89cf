"""The FID Inception-v3: the published torchmetrics value, the shipped network, its input path."""

import os
import warnings

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from pipeline.evaluation.inception_net import FIDInceptionV3, resize_bilinear_tf1
from pipeline.evaluation.inception_weights import default_weights_path, load_fid_inception


def test_reproduces_the_torchmetrics_fid_docstring_example():
    """torchmetrics' FrechetInceptionDistance docstring: feature=64, seed 42 (its doctest
    fixture), 100 + 100 random 299x299 images -> tensor(12.6388). Building torch-fidelity's
    network (Inception + a 2048->1008 fc) draws its random init from the seeded RNG before the
    images are drawn; building ours plus that fc layer draws exactly the same numbers."""
    torch.manual_seed(42)
    net = load_fid_inception(feature=64)
    torch.nn.Linear(2048, 1008)
    fid = FrechetInceptionDistance(feature=net)
    imgs_dist1 = torch.randint(0, 200, (100, 3, 299, 299), dtype=torch.uint8)
    imgs_dist2 = torch.randint(100, 255, (100, 3, 299, 299), dtype=torch.uint8)
    fid.update(imgs_dist1, real=True)
    fid.update(imgs_dist2, real=False)
    assert fid.compute().item() == pytest.approx(12.6388, abs=1e-4)


@pytest.mark.skipif(
    not torch.cuda.is_available() and not os.environ.get("GLIDE_SLOW_TESTS"),
    reason="200 full Inception passes: ~9 min on 2 busy CPU cores; runs on a GPU or with "
    "GLIDE_SLOW_TESTS=1",
)
def test_reproduces_the_torchmetrics_kid_docstring_example():
    """torchmetrics' KernelInceptionDistance docstring: 2048-d features, subset_size=50, the
    same seeded set-up as the FID example -> (tensor(0.0312), tensor(0.0025))."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(42)
    net = load_fid_inception(feature=2048)
    torch.nn.Linear(2048, 1008)
    kid = KernelInceptionDistance(feature=net, subset_size=50).to(device)
    imgs_dist1 = torch.randint(0, 200, (100, 3, 299, 299), dtype=torch.uint8)
    imgs_dist2 = torch.randint(100, 255, (100, 3, 299, 299), dtype=torch.uint8)
    with torch.backends.cudnn.flags(allow_tf32=False):
        for start in range(0, 100, 25):
            kid.update(imgs_dist1[start : start + 25].to(device), real=True)
            kid.update(imgs_dist2[start : start + 25].to(device), real=False)
    mean, std = kid.compute()
    assert (round(mean.item(), 4), round(std.item(), 4)) == (0.0312, 0.0025)


def test_features_equal_those_of_the_shipped_torchscript_network(inception2048):
    """All 2048 features against the fid-helper file's own scripted forward (the file is
    hash-checked by load_fid_inception; running it here only serves as the oracle)."""
    images = torch.randint(0, 256, (2, 3, 40, 56), generator=torch.Generator().manual_seed(3))
    images = images.to(torch.uint8)
    ours = inception2048(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(default_weights_path())).eval()
    with torch.no_grad(), torch.jit.optimized_execution(False):
        theirs = scripted(inception2048.preprocess(images))
    assert ours.shape == (2, 2048)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert ours.std() > 0.1  # real features, not a constant


def test_tf1_resize_uses_top_left_aligned_source_coordinates():
    """TensorFlow 1's resize_bilinear samples at i * in/out (no half-pixel offset) and repeats
    the last pixel: [0, 10] -> [0, 5, 10, 10] (PyTorch's half-pixel resize gives 0, 2.5, ...)."""
    row = torch.tensor([0.0, 10.0]).reshape(1, 1, 1, 2).expand(1, 1, 2, 2)
    out = resize_bilinear_tf1(row, 4)
    assert out[0, 0, 0].tolist() == [0.0, 5.0, 10.0, 10.0]
    assert out.shape == (1, 1, 4, 4)


def test_input_checks_name_the_problem(inception64):
    with pytest.raises(TypeError, match="uint8"):
        inception64(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        inception64(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="feature must be one of"):
        FIDInceptionV3(feature=1000)


def test_network_stays_in_eval_mode_without_gradients(inception64):
    inception64.train()
    assert not inception64.training
    assert not any(p.requires_grad for p in inception64.parameters())
