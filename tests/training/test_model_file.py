"""Model files load with weights_only=True; anything else is refused with a clear error."""

import pickle

import pytest
import torch

from pipeline.models import create_glide_model
from pipeline.models.model_file import (
    ModelFileError,
    load_model,
    model_file_payload,
    read_model_file,
    require_compatible,
)
from tests.training.conftest import DIFFUSION


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def tiny_payload(model_kwargs, tokenizer="t"):
    model = create_glide_model(**model_kwargs)
    return model_file_payload(
        model.state_dict(), model.config, diffusion=DIFFUSION, tokenizer=tokenizer, step=1
    )


def test_pickled_objects_are_refused(tmp_path, tiny_model_kwargs):
    payload = tiny_payload(tiny_model_kwargs)
    payload["extra"] = {"evil": Evil()}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match="refusing"):
        read_model_file(tmp_path / "evil.pt")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        read_model_file(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="is not a"):
        read_model_file(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]) + b"garbage")
    with pytest.raises(ModelFileError):
        read_model_file(tmp_path / "junk.pt")


def test_weights_that_do_not_fit_are_named(tmp_path, tiny_model_kwargs):
    model = create_glide_model(**tiny_model_kwargs)
    state = model.state_dict()
    state.pop("out.2.weight")
    payload = model_file_payload(state, model.config, diffusion=DIFFUSION, tokenizer="t", step=1)
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match="out.2.weight"):
        load_model(tmp_path / "m.pt")


def test_truncated_file_is_named_as_unreadable(tmp_path, tiny_model_kwargs):
    payload = tiny_payload(tiny_model_kwargs)
    torch.save(payload, tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cannot read model file .*m.pt"):
        read_model_file(tmp_path / "m.pt")


def test_a_starting_model_that_does_not_match_the_config_is_named(tmp_path, tiny_model_kwargs):
    payload = tiny_payload(tiny_model_kwargs, tokenizer="clip-x")
    require_compatible(payload, tiny_model_kwargs, "clip-x", where="base.pt")
    wider = {**tiny_model_kwargs, "num_channels": 32}
    with pytest.raises(ModelFileError, match="base.pt .*num_channels: file has 16, config has 32"):
        require_compatible(payload, wider, "clip-x", where="base.pt")
    with pytest.raises(ModelFileError, match="tokenizer: file has 'clip-x'"):
        require_compatible(payload, tiny_model_kwargs, "gpt2-y", where="base.pt")
    require_compatible(
        payload,
        {**tiny_model_kwargs, "inpaint": True},
        "clip-x",
        where="base.pt",
        ignore=("inpaint",),
    )
