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
)
from tests.training.conftest import DIFFUSION


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path, tiny_model_kwargs):
    model = create_glide_model(**tiny_model_kwargs)
    payload = model_file_payload(
        model.state_dict(), model.config, diffusion=DIFFUSION, tokenizer="t", step=1
    )
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
