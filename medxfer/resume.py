"""Exact resume: what a checkpoint must hold so that the rest of a run is identical to an
uninterrupted one (issue 15 item 2; see docs/reliability.md, "Resuming a run").

Four parts; the order and the augmentation are keyed only by the run's seed and the position in
training, never by history:

* :class:`ResumableSampler` -- the training order. Epoch ``e``'s order is drawn from a generator
  seeded by ``(seed, e)`` (through a wrapped sampler such as the oversampling
  ``WeightedRandomSampler``, or a plain permutation), split across DDP ranks, and every index is
  yielded with a *sample key* derived from ``(seed, e, position)``. It subclasses
  ``DistributedSampler`` so that Lightning keeps it (and calls ``set_epoch``) under DDP.
* :class:`KeyedDataset` -- puts each sample's key in force while the dataset reads it, so the
  random transforms (:class:`~medxfer.transforms.SeededTransform`) draw from a stream seeded by
  that key: augmentation depends on ``(seed, epoch, position)`` only, not on workers, persistent
  worker state or how many samples came before.
* :class:`ResumableLoader` -- a DataLoader with Lightning's ``state_dict`` / ``load_state_dict``
  (its "stateful data loader" interface): the checkpoint records the epoch and how many of its
  batches were trained on, and a resumed run starts mid-epoch at the next batch, without
  reading the skipped images.
* :class:`RandomState` -- a callback saving the global generators (Python ``random``, NumPy,
  torch CPU and CUDA) in every checkpoint and restoring them at the start of the resumed fit,
  for what draws from them in the training loop (dropout, MixUp, stochastic depth).

* :class:`SigtermCheckpoint` -- a pre-empted run (SIGTERM: a scheduler's time limit or
  pre-emption, ``kill``) writes ``last.ckpt`` where Lightning stops it (the end of the current
  training step), so ``--resume`` continues from that step rather than from the last periodic
  checkpoint; ``medxfer fit`` then exits with :data:`SIGTERM_EXIT`, not 0.

The best-model tracking lives in Lightning's ``ModelCheckpoint`` state, restored only when the
resumed run writes into the same checkpoint folder: ``medxfer fit --resume RUN_DIR`` (see
:func:`medxfer.commands.lightning.resume_arguments`) makes sure it does.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from medxfer.errors import ConfigError
from medxfer.transforms import sample_key

log = logging.getLogger(__name__)

#: The exit status of a ``medxfer`` command stopped by SIGTERM (128 + 15, what a shell reports
#: for a process SIGTERM killed): never 0, so a scheduler or ``&&`` does not read it as success.
SIGTERM_EXIT = 143

__all__ = [
    "SIGTERM_EXIT",
    "KeyedDataset",
    "RandomState",
    "ResumableLoader",
    "ResumableSampler",
    "SigtermCheckpoint",
    "mix_seed",
    "run_seed",
]


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from integers (NumPy's ``SeedSequence``: well mixed, order-sensitive).

    Example:
        >>> mix_seed(0, 1) == mix_seed(0, 1) != mix_seed(1, 0)
        True
    """
    seq = np.random.SeedSequence([int(p) % 2**63 for p in parts])
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))


def run_seed(seed: int) -> int:
    """The seed of a run's data order: the datamodule's ``seed`` mixed with the run's global
    seed (``seed_everything``, which Lightning exports as ``PL_GLOBAL_SEED``; else torch's
    initial seed), so study replicas that differ only in ``seed_everything`` differ in order."""
    glob = os.environ.get("PL_GLOBAL_SEED")
    return mix_seed(seed, int(glob) if glob not in (None, "") else torch.initial_seed())


class ResumableSampler(DistributedSampler):
    """The training order of epoch ``e`` as a function of ``(seed, e)`` alone, yielding
    ``(index, sample key)`` pairs (see the module docstring).

    Args:
        dataset: the training dataset (its length is the epoch's size without ``sampler``).
        seed: the run's data seed (:func:`run_seed`).
        sampler: a sampler to draw each epoch's order from (e.g. ``WeightedRandomSampler``);
            its ``generator`` (or torch's global one) is re-seeded by ``(seed, e)`` each epoch.
            Default: a random permutation of the dataset.
        num_replicas, rank: the DDP split (default: one process). Like ``DistributedSampler``
            with ``drop_last=False``, the order is padded with its first indices so every rank
            gets the same number of samples.
    """

    def __init__(
        self,
        dataset: Sized,
        seed: int,
        sampler: Sampler | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.inner = sampler
        total = len(sampler) if sampler is not None else len(dataset)  # type: ignore[arg-type]
        self.num_samples = -(-total // num_replicas)
        self.total_size = self.num_samples * num_replicas
        #: A mid-epoch resume: (epoch, samples of this rank's share to skip in it). Every
        #: iterator of that epoch skips them (Lightning may create more than one).
        self.resume_at: tuple[int, int] | None = None

    def order(self, epoch: int) -> list[int]:
        """Every rank's order of epoch ``epoch`` (before padding and the rank split)."""
        seed = mix_seed(self.seed, epoch)
        if self.inner is None:
            g = torch.Generator().manual_seed(seed)
            return torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        if hasattr(self.inner, "generator"):
            self.inner.generator = torch.Generator().manual_seed(seed)  # type: ignore[attr-defined]
            return [int(i) for i in self.inner]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [int(i) for i in self.inner]

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        order = self.order(self.epoch)
        order += order[: self.total_size - len(order)]
        positions = range(self.rank, self.total_size, self.num_replicas)
        start = self.resume_at[1] if self.resume_at and self.resume_at[0] == self.epoch else 0
        for pos in positions[start:]:
            yield order[pos], mix_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return self.num_samples


class KeyedDataset(Dataset):
    """``dataset`` indexed by ``(index, key)`` pairs (:class:`ResumableSampler`): the key is in
    force (:func:`medxfer.transforms.sample_key`) while ``dataset[index]`` is read, so the
    sample's random transforms draw from a stream seeded by it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int] | int) -> Any:
        if not isinstance(item, tuple):  # a plain index (e.g. Lightning's overfit_batches)
            return self.dataset[item]
        index, key = item
        with sample_key(key):
            return self.dataset[index]


class ResumableLoader(DataLoader):
    """A training DataLoader over a :class:`ResumableSampler` that Lightning saves in and
    restores from a checkpoint (its "stateful data loader" interface): the state is the epoch
    and the number of its batches trained on (``progress()``, read from the trainer when the
    checkpoint is written, so batches the loop has prefetched but not trained on are not
    counted). A resumed loader first yields the batch after them, without reading the skipped
    samples; from an epoch's end it starts the next epoch.

    Each epoch's iterator draws its worker base seed from ``generator`` re-seeded by the epoch,
    so worker seeds too are a function of the epoch (not of how many iterators came before).
    """

    #: ``() -> (batches trained on in the current epoch, whether the epoch is complete)``;
    #: set by the datamodule (it knows the trainer). None: the state is the epoch start.
    progress: Callable[[], tuple[int, bool]] | None = None

    def __iter__(self) -> Any:
        sampler = self.sampler
        if isinstance(sampler, ResumableSampler) and self.generator is not None:
            self.generator.manual_seed(mix_seed(sampler.seed, sampler.epoch, 2**32))
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches", "seed"}``: where the next batch is, for
        :meth:`load_state_dict` (empty when Lightning replaced the sampler)."""
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):  # replaced (e.g. overfit_batches)
            return {}
        batches, complete = self.progress() if self.progress is not None else (0, False)
        if complete:
            return {"epoch": sampler.epoch + 1, "batches": 0, "seed": sampler.seed}
        return {"epoch": sampler.epoch, "batches": batches, "seed": sampler.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at batch ``state["batches"]`` of epoch ``state["epoch"]``."""
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler) or not state:
            return
        if state.get("seed", sampler.seed) != sampler.seed:
            raise ConfigError(
                f"the checkpoint's data order was seeded {state['seed']}, this run's "
                f"{sampler.seed}: resume with the run's own config (seed_everything and the "
                "datamodule's seed)"
            )
        epoch = int(state["epoch"])
        sampler.set_epoch(epoch)
        sampler.resume_at = (epoch, int(state["batches"]) * int(self.batch_size or 1))


class RandomState(Callback):
    """Saves the global random generators (Python, NumPy, torch CPU and CUDA) in every
    checkpoint and restores them when a fit resumes from one, once its loop starts (after the
    sanity check and the other callbacks' ``on_train_start``), so dropout, MixUp and anything
    else drawing from them continue as in the uninterrupted run.

    ``medxfer fit`` adds it to every run; add it to a plain Lightning ``Trainer`` by hand.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "RandomState"

    def state_dict(self) -> dict[str, Any]:
        """The generators' states as tensors, ints and tuples (loadable with
        ``torch.load(weights_only=True)``)."""
        np_state = np.random.get_state(legacy=False)
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": {
                "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                "pos": int(np_state["state"]["pos"]),
                "has_gauss": int(np_state["has_gauss"]),
                "gauss": float(np_state["gauss"]),
            },
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        np_state = state["numpy"]
        np.random.set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                "has_gauss": np_state["has_gauss"],
                "gauss": np_state["gauss"],
            }
        )
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda")
        if (
            cuda is not None
            and torch.cuda.is_available()
            and len(cuda) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(cuda)


class SigtermCheckpoint(Callback):
    """Writes ``last.ckpt`` when a fit stops on SIGTERM.

    Lightning turns SIGTERM into ``SIGTERMException`` at the end of the current training step
    (or validation batch), on every rank; this callback's ``on_exception`` then saves the
    checkpoint every rank agrees on, as ``last.ckpt`` in the folder of the ``ModelCheckpoint``
    that keeps one (``save_last``; else the trainer's checkpoint callback; else
    ``<run folder>/checkpoints``), where ``medxfer fit --resume RUN_DIR`` reads it. The
    training loader's position (mid-epoch included) and the random generators go with it, so
    the resumed run is the uninterrupted one. Other exceptions (Ctrl-C can arrive in the middle
    of an optimiser step) save nothing: the last periodic checkpoint stays the one to resume.

    ``medxfer fit`` adds it to every run; the command exits with :data:`SIGTERM_EXIT`.
    """

    #: The checkpoint written, once written.
    path: str | None = None

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.trainer.states import TrainerFn
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        from medxfer import artifacts
        from medxfer.callbacks.base import run_folder

        keepers = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        keeper = next((c for c in keepers if c.save_last), trainer.checkpoint_callback)
        folder = getattr(keeper, "dirpath", None) or os.path.join(
            run_folder(trainer), artifacts.CHECKPOINTS_DIR
        )
        path = os.path.join(folder, artifacts.LAST_CKPT)
        if isinstance(keeper, ModelCheckpoint):
            keeper.last_model_path = path
        trainer.save_checkpoint(path)
        self.path = path
        if trainer.is_global_zero:
            log.warning(
                "SIGTERM: stopped at step %d; wrote %s (continue with `medxfer fit --resume %s`)",
                trainer.global_step,
                path,
                os.path.dirname(folder),
            )
