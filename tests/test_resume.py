"""Exact resume (issue 15): the training order, augmentation and global generators are
functions of the seed and the position in training, a checkpoint holds the loader's position,
``medxfer fit --resume`` continues a SIGKILLed run into the same folder with the same result
as an uninterrupted one, and ``medxfer study`` redoes a half-written replica and never leaves
one orphaned."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import TensorDataset, WeightedRandomSampler

from medxfer import artifacts, study
from medxfer.checkpointing import RunFolderLock
from medxfer.commands.lightning import expand_resume, resume_arguments
from medxfer.resume import (
    KeyedDataset,
    RandomState,
    ResumableLoader,
    ResumableSampler,
    mix_seed,
)
from medxfer.study.executors import run_local
from medxfer.study.spec import Replica, Run
from medxfer.transforms import ImageTransform, sample_key

TESTS = Path(__file__).resolve().parent


# Training order ---------------------------------------------------------------------------------
def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch() -> None:
    data = range(50)
    a, b = ResumableSampler(data, seed=3), ResumableSampler(data, seed=3)
    for epoch in (0, 4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        first = [i for i, _ in a]
        assert sorted(first) == list(range(50))  # every sample once
        assert first == [i for i, _ in b]  # a function of (seed, epoch), not of history
        expected = torch.randperm(50, generator=torch.Generator().manual_seed(mix_seed(3, epoch)))
        assert first == expected.tolist()
    a.set_epoch(1)
    b.set_epoch(2)
    assert [i for i, _ in a] != [i for i, _ in b]
    assert [i for i, _ in ResumableSampler(data, seed=4)] != [i for i, _ in a]


def test_oversampling_sampler_is_reseeded_per_epoch() -> None:
    weights = torch.tensor([1.0] * 8 + [9.0] * 2)
    inner = WeightedRandomSampler(weights, 10, replacement=True)
    sampler = ResumableSampler(range(10), seed=1, sampler=inner)
    sampler.set_epoch(2)
    got = [i for i, _ in sampler]
    reference = WeightedRandomSampler(
        weights, 10, replacement=True, generator=torch.Generator().manual_seed(mix_seed(1, 2))
    )
    assert got == list(reference)


def test_ranks_split_the_padded_order_evenly() -> None:
    ranks = [ResumableSampler(range(7), seed=0, num_replicas=3, rank=r) for r in range(3)]
    shares = [[i for i, _ in s] for s in ranks]
    assert [len(s) for s in shares] == [3, 3, 3] == [len(s) for s in ranks]
    order = ranks[0].order(0)
    padded = order + order[:2]
    assert [padded[p] for p in range(9) if p % 3 == 1] == shares[1]


def _batches(loader: ResumableLoader) -> list[list[int]]:
    return [batch[0].tolist() for batch in loader]


def test_loader_resumes_at_the_batch_after_the_saved_position() -> None:
    data = TensorDataset(torch.arange(20))

    def make() -> ResumableLoader:
        return ResumableLoader(
            KeyedDataset(data), batch_size=3, sampler=ResumableSampler(data, seed=5)
        )

    full = make()
    full.sampler.set_epoch(1)
    epoch1 = _batches(full)
    full.progress = lambda: (4, False)  # 4 batches of epoch 1 trained on
    state = full.state_dict()
    assert state == {"epoch": 1, "batches": 4, "seed": full.sampler.seed}
    resumed = make()
    resumed.load_state_dict(state)
    assert _batches(resumed) == epoch1[4:]
    assert _batches(resumed) == epoch1[4:]  # every iterator of that epoch starts there
    # an epoch saved at its end resumes at the start of the next
    full.progress = lambda: (7, True)
    after = make()
    after.load_state_dict(full.state_dict())
    full.sampler.set_epoch(2)
    assert _batches(after) == _batches(full)
    with pytest.raises(ValueError, match="seeded"):
        make().load_state_dict({**state, "seed": 1})


def test_augmentation_depends_on_the_sample_key_only() -> None:
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    t = ImageTransform(32, train=True, rotate=20, seed=2)
    with sample_key(11):
        first = t(image)
    with sample_key(12):
        t(image)
        t(image)
    with sample_key(11):
        again = t(image)
    with sample_key(13):
        other = t(image)
    fresh = ImageTransform(32, train=True, rotate=20, seed=2)
    with sample_key(11):
        new = fresh(image)
    assert torch.equal(first, again) and torch.equal(first, new)
    assert not torch.equal(first, other)


def test_random_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = tmp_path / "state.pt"
    torch.save(RandomState().state_dict(), path)
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    callback = RandomState()
    callback.load_state_dict(torch.load(path, weights_only=True))
    callback.on_train_start(None, None)  # type: ignore[arg-type]
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


# --resume -------------------------------------------------------------------------------------
def test_resume_needs_a_last_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("trainer: {}\n")
    with pytest.raises(FileNotFoundError, match=r"checkpoints/last\.ckpt"):
        expand_resume(["fit", "--resume", str(tmp_path)])
    with pytest.raises(ValueError, match="option of `medxfer fit` only"):
        expand_resume(["test", "--resume", str(tmp_path)])


def test_resume_points_the_logger_at_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "lightning_logs" / "version_3"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"callbacks": {}}, run / "checkpoints" / "last.ckpt")
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "x"}}
    (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"logger": logger}}))
    args = resume_arguments(run)
    assert args[:3] == ["-c", str(run / "config.yaml"), f"--ckpt_path={run}/checkpoints/last.ckpt"]
    value = json.loads(next(a for a in args if a.startswith("--trainer.logger=")).split("=", 1)[1])
    assert value["init_args"] == {"save_dir": str(run), "name": "", "version": ""}
    wandb = {"class_path": "medxfer.loggers.WandbLogger", "init_args": {}}
    (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"logger": wandb}}))
    with pytest.raises(ValueError, match="WandbLogger"):
        resume_arguments(run)


CONFIG = """
seed_everything: 7
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 2
  limit_val_batches: 2
  limit_test_batches: 2
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {save_dir: runs}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/auroc_mean, mode: max, filename: "best-{epoch}"}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 4, save_top_k: 0, save_last: true}
    - class_path: kill_at_step.KillAtStep
    - class_path: kill_at_step.SaveFinalWeights
model:
  class_path: MultiLabelClassifier
  init_args: {backbone: timm/test_resnet, optimizer: sgd, lr: 0.05, warmup_steps: 2, mixup: 0.2}
data:
  class_path: ChestXrayDataModule
  init_args:
    train: {csv: TRAIN_CSV}
    image_size: 32
    batch_size: 8
"""
#: Killed at the start of this step: 21 batches per epoch, the last checkpoint at step 28 (epoch
#: 1, batch 7), so the resumed run starts mid-epoch and re-does steps 29 and 30.
KILL_AT = 30


def _fit(
    args: list[str],
    cwd: Path,
    kill: bool = False,
    at: int = KILL_AT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    )
    env.pop("MEDXFER_TEST_KILL_AT_STEP", None)
    if kill:
        env["MEDXFER_TEST_KILL_AT_STEP"] = str(at)
    return subprocess.run(
        [sys.executable, "-m", "medxfer", "fit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers", [pytest.param(0, id="workers0"), pytest.param(2, id="workers2")]
)
def test_kill_and_resume_equals_the_uninterrupted_run(
    workers: int, synthetic_cxr: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "fit.yaml"
    config.write_text(CONFIG.replace("TRAIN_CSV", str(synthetic_cxr["chexpert"])))
    overrides = ["-c", str(config), f"--data.init_args.num_workers={workers}"]
    runs = {}
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
        out = _fit(overrides, tmp_path / name, kill=name == "killed")
        expected_rc = -signal.SIGKILL if name == "killed" else 0
        assert out.returncode == expected_rc, out.stderr[-3000:]
        runs[name] = tmp_path / name / "runs" / "lightning_logs" / "version_0"
    killed = runs["killed"]
    assert not (killed / "results.json").exists()
    last = torch.load(killed / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    progress = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert last["global_step"] == 28 and 0 < progress["completed"] < 21  # mid-epoch

    out = _fit(["--resume", "runs/lightning_logs/version_0"], tmp_path / "killed")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "continuing runs/lightning_logs/version_0" in out.stdout
    # the same folder: no second version, the results beside the first part's files (the
    # run folder's lock file, .version_0.medxfer.lock, sits beside it)
    logs = tmp_path / "killed/runs/lightning_logs"
    assert sorted(p.name for p in logs.iterdir() if p.is_dir()) == ["version_0"]
    whole_results = json.loads((runs["whole"] / "results.json").read_text())
    assert json.loads((killed / "results.json").read_text()) == whole_results
    final = {k: torch.load(r / "final_weights.pt", weights_only=True) for k, r in runs.items()}
    assert final["whole"].keys() == final["killed"].keys()
    for key, value in final["whole"].items():
        assert torch.equal(value, final["killed"][key]), key
    # "best" chosen among all epochs: the same checkpoint, with the same score
    best = {}
    for name, run in runs.items():
        ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
        (state,) = [v for k, v in ckpt["callbacks"].items() if "val/auroc_mean" in k]
        best[name] = (Path(state["best_model_path"]).name, float(state["best_model_score"]))
    assert best["whole"] == best["killed"]


SIGTERM_CONFIG = """
seed_everything: 3
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 6
  limit_val_batches: 1
  limit_test_batches: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {save_dir: runs}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true}
    - class_path: kill_at_step.KillAtStep
    - class_path: kill_at_step.SaveFinalWeights
model:
  class_path: MultiLabelClassifier
  init_args: {backbone: timm/test_resnet, optimizer: sgd, lr: 0.05, mixup: 0.2}
data:
  class_path: ChestXrayDataModule
  init_args:
    train: {csv: TRAIN_CSV}
    image_size: 32
    batch_size: 4
"""


def test_sigterm_saves_last_checkpoint_and_exits_143(
    synthetic_cxr: dict[str, Path], tmp_path: Path
) -> None:
    """A fit sent SIGTERM at the start of step 2 (before any periodic checkpoint: the only
    ``ModelCheckpoint`` writes at an epoch's end) finishes that step, writes ``last.ckpt`` at
    step 3, exits 143, not 0, and without results; ``--resume`` from it ends with the weights
    of the uninterrupted run (mid-epoch: 6 steps of a longer epoch)."""
    config = tmp_path / "fit.yaml"
    config.write_text(SIGTERM_CONFIG.replace("TRAIN_CSV", str(synthetic_cxr["chexpert"])))
    runs = {}
    for name in ("whole", "termed"):
        (tmp_path / name).mkdir()
        env = {"MEDXFER_TEST_KILL_SIGNAL": "SIGTERM"} if name == "termed" else {}
        out = _fit(["-c", str(config)], tmp_path / name, kill=name == "termed", at=2, env=env)
        assert out.returncode == (143 if name == "termed" else 0), out.stderr[-3000:]
        runs[name] = tmp_path / name / "runs" / "lightning_logs" / "version_0"
    termed = runs["termed"]
    assert not (termed / "results.json").exists()
    assert "stopped by SIGTERM (exit status 143)" in out.stderr
    assert "medxfer fit --resume" in out.stderr
    last = torch.load(termed / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3  # step 2 (0-based) finished, then stopped
    assert RunFolderLock(termed).path.is_file()  # the fit locked its folder; its exit freed it

    out = _fit(["--resume", "runs/lightning_logs/version_0"], tmp_path / "termed")
    assert out.returncode == 0, out.stderr[-3000:]
    final = {k: torch.load(r / "final_weights.pt", weights_only=True) for k, r in runs.items()}
    for key, value in final["whole"].items():
        assert torch.equal(value, final["termed"][key]), key
    whole = json.loads((runs["whole"] / "results.json").read_text())
    assert json.loads((termed / "results.json").read_text()) == whole


# medxfer study ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, finished",
    [
        pytest.param(None, False, id="missing"),
        pytest.param("", False, id="zero-byte"),
        pytest.param('{"test/a/auroc": 0.', False, id="truncated"),
        pytest.param('{"test/a/auroc": 0.5}', True, id="complete"),
    ],
)
def test_only_a_complete_results_file_counts_as_done(
    content: str | None, finished: bool, tmp_path: Path
) -> None:
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    assert study.is_finished(tmp_path) is finished


def _fake_replica(script: str):
    """A ``replica_command`` that runs ``script`` (given the run folder as argv[1])."""

    def command(config, run_dir, seed, extra):
        return [sys.executable, "-c", script, str(run_dir)]

    return command


def test_a_half_written_replica_is_run_again(tmp_path: Path, monkeypatch) -> None:
    done, half = tmp_path / "cfg" / "seed0", tmp_path / "cfg" / "seed1"
    for run in (done, half):
        run.mkdir(parents=True)
    (done / "results.json").write_text('{"test/a/auroc": 0.25}')
    (half / "results.json").write_text("")  # a replica killed while writing
    script = (
        "import sys, pathlib; from medxfer import artifacts; "
        "artifacts.write_json(pathlib.Path(sys.argv[1]) / 'results.json', {'test/a/auroc': 0.75})"
    )
    monkeypatch.setattr(study, "replica_command", _fake_replica(script))
    run = Run("cfg", {}, ("unused.yaml",), {})
    assert run_local([Replica(tmp_path, run, 0), Replica(tmp_path, run, 1)]) == []
    assert json.loads((done / "results.json").read_text()) == {"test/a/auroc": 0.25}  # skipped
    assert json.loads((half / "results.json").read_text()) == {"test/a/auroc": 0.75}  # redone


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    artifacts.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), artifacts.atomic_path(path) as tmp:
        tmp.write_text('{"a": ')
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("jobs", [1, 2], ids=["one-at-a-time", "two-at-a-time"])
def test_killing_the_study_driver_takes_its_replica(sig: int, jobs: int, tmp_path: Path) -> None:
    pid_file = tmp_path / "replica.pid"
    replica = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    )
    driver = (
        "import sys; from pathlib import Path; from medxfer import study; "
        "from medxfer.study.spec import Replica, Run; from medxfer.study.executors import run_local; "
        f"study.replica_command = lambda *a: [sys.executable, '-c', {replica!r}]; "
        f"run_local([Replica(Path({str(tmp_path)!r}), Run('cfg', {{}}, ('unused.yaml',), {{}}), 0)], "
        f"jobs={jobs})"
    )
    proc = subprocess.Popen([sys.executable, "-c", driver])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the replica did not start"
            assert proc.poll() is None, "the driver exited early"
            time.sleep(0.05)
        replica_pid = int(pid_file.read_text())
        assert _alive(replica_pid)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) != 0
        deadline = time.monotonic() + 10
        while _alive(replica_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(replica_pid), "the replica outlived its driver"
    finally:
        proc.kill()
        if pid_file.is_file() and pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
