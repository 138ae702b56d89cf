"""Outputs that cannot be written: a full disk, a read-only file system, a folder this user may
not write, a file where a folder should be. Each failure is a real OS error (a tiny tmpfs, a
read-only remount, an unprivileged process); the error names the output and the cause, no
temporary file is left behind and the previous output is untouched."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from pipeline.data.shard_writer import ShardSample, write_shard
from pipeline.io import OutputWriteError, atomic_output_path, atomic_write_bytes, atomic_write_text

REPO = Path(__file__).resolve().parents[2]
PREVIOUS = '{"fid": 12.5}\n'


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs holding a previous output ``out/metrics.json``; unmounted afterwards."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    root = tmp_path / "fs"
    root.mkdir()
    _mount("-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(root))
    try:
        atomic_write_text(root / "out" / "metrics.json", PREVIOUS)
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_disk_full_names_the_output_and_keeps_the_previous_one(small_fs):
    dest = small_fs / "out" / "metrics.json"
    with pytest.raises(OutputWriteError) as caught:
        atomic_write_bytes(dest, b"x" * (1 << 20))
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"no space left on device writing {dest}"
    assert dest.read_text() == PREVIOUS
    assert leftovers(dest.parent) == []
    # the space the temporary file took is free again: a small write succeeds
    atomic_write_text(dest, '{"fid": 11.0}\n')
    assert json.loads(dest.read_text()) == {"fid": 11.0}


def test_disk_full_inside_torch_save_is_reported_as_such(small_fs):
    """torch.save turns ENOSPC into an opaque RuntimeError; the cause is recovered."""
    dest = small_fs / "out" / "model.pt"
    torch.save({"w": torch.arange(4.0)}, dest)
    free = os.statvfs(small_fs).f_bavail
    with (
        pytest.raises(OutputWriteError, match="no space left on device writing") as caught,
        atomic_output_path(dest) as tmp,
    ):
        torch.save({"w": torch.zeros(1 << 18)}, tmp)  # 1 MiB
    assert caught.value.errno == errno.ENOSPC and str(dest) in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)  # torch's own error kept as cause
    assert torch.equal(torch.load(dest, weights_only=True)["w"], torch.arange(4.0))
    assert leftovers(dest.parent) == []
    # torch's handle on the removed temp file is closed: the disk is not left full
    assert os.statvfs(small_fs).f_bavail == free


def test_disk_full_while_writing_a_shard(small_fs):
    dest = small_fs / "out" / "shard-000000.tar"
    big = ShardSample("train-000000000", os.urandom(1 << 19), os.urandom(1 << 19), "a red circle")
    with pytest.raises(OutputWriteError, match=f"no space left on device writing {dest}"):
        write_shard(dest, [big])
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_read_only_file_system(small_fs):
    dest = small_fs / "out" / "metrics.json"
    _mount("-o", "remount,ro", str(small_fs))
    with pytest.raises(OutputWriteError) as caught:
        atomic_write_text(dest, "new")
    assert caught.value.errno == errno.EROFS
    assert str(caught.value) == f"cannot write {dest}: read-only file system"
    with (
        pytest.raises(OutputWriteError, match="read-only file system"),
        atomic_output_path(small_fs / "out" / "model.pt") as tmp,
    ):
        torch.save({"w": torch.zeros(2)}, tmp)
    assert dest.read_text() == PREVIOUS
    assert sorted(p.name for p in dest.parent.iterdir()) == ["metrics.json"]


def test_folder_not_writable_by_this_user():
    """A read-only folder (mode 0555) refused by the kernel to an unprivileged process."""
    script = (
        "import json, os, sys\n"
        "from pipeline.io import atomic_write_text\n"
        "if os.geteuid() == 0:  # root writes anywhere: become nobody\n"
        "    os.setgroups([])\n"
        "    os.setgid(65534)\n"
        "    os.setuid(65534)\n"
        "try:\n"
        "    atomic_write_text(sys.argv[1], 'new')\n"
        "except OSError as err:\n"
        "    print(json.dumps({'type': type(err).__name__, 'errno': err.errno, 'msg': str(err)}))\n"
    )
    root = Path(tempfile.mkdtemp(prefix="glide-readonly-"))  # outside root's private tmp_path
    try:
        root.chmod(0o755)
        folder = root / "out"
        folder.mkdir()
        dest = folder / "metrics.json"
        dest.write_text(PREVIOUS)
        folder.chmod(0o555)
        done = subprocess.run(
            [sys.executable, "-c", script, str(dest)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
        )
        error = json.loads(done.stdout)
        assert error["type"] == "OutputWriteError" and error["errno"] == errno.EACCES
        assert error["msg"].startswith(f"cannot write {dest}: read-only or not writable")
        assert dest.read_text() == PREVIOUS
        assert sorted(p.name for p in folder.iterdir()) == ["metrics.json"]
    finally:
        if (root / "out").exists():
            (root / "out").chmod(0o755)
        shutil.rmtree(root)


@pytest.mark.parametrize("name", ["models/base.pt", "models/base/base.pt"])
def test_a_file_where_a_folder_should_be(tmp_path, name):
    blocker = tmp_path / "models"
    blocker.write_text("not a folder")
    dest = tmp_path / name
    with pytest.raises(OutputWriteError) as caught:
        atomic_write_bytes(dest, b"weights")
    assert str(caught.value) == f"cannot write {dest}: {blocker} is a file, not a folder"
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_an_interrupted_writer_leaves_the_previous_output(tmp_path):
    dest = tmp_path / "metrics.json"
    atomic_write_text(dest, PREVIOUS)
    with pytest.raises(ValueError, match="bad value"), atomic_output_path(dest) as tmp:
        tmp.write_text("partial")
        raise ValueError("bad value")
    assert dest.read_text() == PREVIOUS
    assert leftovers(tmp_path) == []
