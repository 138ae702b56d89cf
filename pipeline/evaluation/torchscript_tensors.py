"""Read the tensors of a TorchScript archive without running any of its code.

``torch.load(..., weights_only=True)`` refuses TorchScript archives, and ``torch.jit.load`` would
compile and run the code stored inside the file. A TorchScript archive is a zip whose
``data.pkl`` pickles the module tree: each module is an object of a ``__torch__.*`` class whose
state is a dict of attributes (tensors, sub-modules, ints), and each tensor points to a raw
storage file ``data/<key>`` in the zip. This reader unpickles ``data.pkl`` with an allow-list of
exactly those constructs (like ``weights_only`` does for ordinary checkpoints): module objects
become plain attribute records, tensors are rebuilt from the raw storages, anything else is
refused. The result is a flat ``{dotted.name: tensor}`` dict, the module's state dict.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict

import torch
from torch import Tensor

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

_LIST_BUILDERS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")


class TorchScriptReadError(ValueError):
    """The file is not a TorchScript archive this reader understands."""


class _ModuleRecord:
    """Stands in for a scripted module: keeps the attribute dict, runs nothing."""

    class_name = "module"
    state: dict = {}  # replaced per object by __setstate__

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TorchScriptReadError(f"unexpected state for {self.class_name}")
        self.state = state


def _record_class(class_name: str) -> type[_ModuleRecord]:
    return type(class_name.rsplit(".", 1)[-1], (_ModuleRecord,), {"class_name": class_name})


def _rebuild_tensor(storage: Tensor, offset: int, size, stride, *_unused) -> Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._root = root

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _record_class(f"{module}.{name}")
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch.jit._pickle" and name in _LIST_BUILDERS:
            return list  # typed lists of attributes (e.g. a convolution's padding)
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise TorchScriptReadError(f"refusing to load {module}.{name} from a TorchScript archive")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchScriptReadError(f"unexpected persistent id {pid!r}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise TorchScriptReadError(f"unexpected storage type {dtype!r}")
        raw = self._archive.read(f"{self._root}data/{key}")
        storage = torch.frombuffer(bytearray(raw), dtype=dtype)
        if storage.numel() != numel:
            raise TorchScriptReadError(f"storage {key}: {storage.numel()} values, expected {numel}")
        return storage


def _flatten(record: _ModuleRecord, prefix: str, out: dict[str, Tensor]) -> None:
    for name, value in record.state.items():
        if isinstance(value, Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ModuleRecord):
            _flatten(value, f"{prefix}{name}.", out)


def read_torchscript_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensors of the TorchScript module saved at ``path``, by dotted attribute name."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise TorchScriptReadError(f"{path} is not a TorchScript archive: {err}") from err
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1 or not any("/code/" in n for n in archive.namelist()):
            raise TorchScriptReadError(
                f"{path} is not a TorchScript archive (no code/ and data.pkl)"
            )
        root = pickles[0][: -len("data.pkl")]
        try:
            top = _AllowListUnpickler(archive.read(pickles[0]), archive, root).load()
        except (pickle.UnpicklingError, KeyError, EOFError) as err:
            raise TorchScriptReadError(f"{path}: unreadable TorchScript data: {err}") from err
    if not isinstance(top, _ModuleRecord):
        raise TorchScriptReadError(f"{path} does not hold a scripted module")
    tensors: dict[str, Tensor] = {}
    _flatten(top, "", tensors)
    return tensors
