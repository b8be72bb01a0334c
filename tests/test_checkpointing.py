"""medxfer's checkpoint writer: the same content as Lightning's, atomic, installed by ``fit``."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from medxfer.checkpointing import LocalCheckpointIO, use_local_checkpoint_io


def _state() -> dict:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {"state_dict": layer.state_dict(), "optimizer_states": [opt.state_dict()], "epoch": 2}


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_saves_what_lightning_saves_and_leaves_no_temporary(tmp_path: Path) -> None:
    state = _state()
    LocalCheckpointIO().save_checkpoint(state, tmp_path / "sub" / "ours.ckpt")
    TorchCheckpointIO().save_checkpoint(state, tmp_path / "lightning.ckpt")
    ours = torch.load(tmp_path / "sub" / "ours.ckpt", weights_only=True)
    _assert_same(ours, torch.load(tmp_path / "lightning.ckpt", weights_only=True))
    _assert_same(ours, state)  # and what was given
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["ours.ckpt"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    LocalCheckpointIO().save_checkpoint(_state(), target)
    before = target.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 -- whatever pickling raises
        LocalCheckpointIO().save_checkpoint({"bad": lambda: None}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_storage_options_are_refused_as_by_lightning(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="storage_options"):
        LocalCheckpointIO().save_checkpoint(_state(), tmp_path / "x.ckpt", storage_options={})


def test_installed_only_in_place_of_lightnings_default(tmp_path: Path) -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    use_local_checkpoint_io(trainer)
    assert type(trainer.strategy.checkpoint_io) is LocalCheckpointIO
    chosen = AsyncCheckpointIO()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, default_root_dir=tmp_path, plugins=[chosen]
    )
    use_local_checkpoint_io(trainer)
    assert trainer.strategy.checkpoint_io is chosen


def test_the_cli_trainer_uses_it(synthetic_cxr: dict[str, Path], tmp_path: Path) -> None:
    from medxfer.commands.lightning import build_cli

    cli = build_cli(
        [
            "--model=MultiLabelClassifier",
            "--data=ChestXrayDataModule",
            f"--data.init_args.train.csv={synthetic_cxr['chexpert']}",
            "--data.init_args.num_workers=0",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.accelerator=cpu",
        ],
        run=False,
    )
    assert type(cli.trainer.strategy.checkpoint_io) is LocalCheckpointIO


def test_full_disk_is_one_line_naming_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """A write that fails with ENOSPC (simulated: ``torch.save`` raising it, as the kernel
    would on a full disk) is a RunFileError naming the checkpoint; the old one is kept."""
    import errno

    import medxfer.checkpointing as checkpointing
    from medxfer.commands.common import error_line
    from medxfer.errors import RunFileError

    target = tmp_path / "checkpoints" / "last.ckpt"
    LocalCheckpointIO().save_checkpoint(_state(), target)
    before = target.read_bytes()

    def full(obj: object, path: object) -> None:
        Path(str(path)).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", full)
    with pytest.raises(RunFileError) as info:
        LocalCheckpointIO().save_checkpoint(_state(), target)
    line = error_line(info.value)
    assert line is not None and "\n" not in line
    assert str(target) in line and "No space left on device" in line
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no partial left


def test_run_folder_lock_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    """A second lock on a held folder is refused naming the folder and the holder's PID; a
    holder killed with SIGKILL (no clean-up) leaves the folder free: the OS drops ``flock``."""
    import signal
    import subprocess
    import sys

    from medxfer.checkpointing import RUN_LOCK, RunFolderLock
    from medxfer.errors import RunFileError

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from medxfer.checkpointing import RunFolderLock; "
            f"lock = RunFolderLock({str(tmp_path)!r}).acquire(); print('held', flush=True); "
            "time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFileError, match=rf"{tmp_path}.*PID {holder.pid}"):
            RunFolderLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with RunFolderLock(tmp_path) as lock:  # free again, without waiting
            assert lock.path.name == f".{tmp_path.name}{RUN_LOCK}"
            assert lock.path.read_text().strip() == str(os.getpid())
    finally:
        holder.kill()
