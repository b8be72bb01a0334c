"""The LightningCLI of ``medxfer fit | validate | test | predict -c cfg.yaml``.

Models and datamodules are chosen in subclass mode (``class_path: MultiLabelClassifier`` --
short names resolve because :func:`build_cli` imports every task and datamodule declared as an
entry point, medxfer's own and plug-ins', before parsing). The datamodule's number of outputs, label names
and channels are linked into the task, so sizes are written once. After ``fit`` the best
checkpoint is tested on every test set (the in-distribution split and each shifted set) and the
table is written to the run folder as ``results.json`` and ``results.md``. ``medxfer fit --resume
RUN_DIR`` continues a run from its ``last.ckpt`` into the same folder (:func:`resume_arguments`);
every fit carries :class:`~medxfer.resume.RandomState`, so the continuation is exact.

This module imports Lightning; :mod:`medxfer.commands` imports it only for these four
subcommands, so ``medxfer --help`` and ``medxfer list`` answer at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from medxfer.checkpointing import use_local_checkpoint_io
from medxfer.datamodules import MedxferDataModule
from medxfer.errors import ConfigError
from medxfer.plugins import load_all
from medxfer.results import format_results
from medxfer.tasks import TransferTask

__all__ = [
    "MedxferCLI",
    "add_console_callbacks",
    "build_cli",
    "console_settings",
    "expand_resume",
    "quiet_console",
    "require_checkpoint",
    "resume_arguments",
]

#: Loggers whose folder is ``save_dir/name/version``: ``--resume`` points them at the run folder.
_FOLDER_LOGGERS = ("CSVLogger", "TensorBoardLogger")


class MedxferCLI(LightningCLI):
    """LightningCLI with medxfer's links and a test of the best checkpoint after ``fit``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )
        parser.link_arguments(
            "data.label_names", "model.init_args.label_names", apply_on="instantiate"
        )
        parser.link_arguments("data.channels", "model.init_args.in_chans", apply_on="instantiate")
        parser.add_argument(
            "--hyperrule",
            type=bool | Literal["reduced"],
            default=False,
            help="fit only: set the resolution, SGD, lr, schedule, steps and MixUp by "
            "BiT-HyperRule, scaled to the global batch (true), or by the scale study's reduced "
            "variant: the rule's steps at the run's batch, lr 0.001 (reduced; see "
            "medxfer.hyperrule)",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after fit, test the best checkpoint on every test set (fit only)",
        )

    def after_instantiate(self) -> None:
        """Refuse a task whose output type contradicts the datamodule's (multi-class data in a
        multi-label task trains, but scores the wrong thing), and write the resolved input
        normalisation and the datamodule's own defaults of the shared settings it was left to
        choose (``name``, ``split``, ``batch_size``) into the run's saved config."""
        data_type = getattr(self.datamodule, "output_type", None)
        model_type = getattr(self.model, "output_type", None)
        if data_type and model_type and data_type != model_type:
            hint = "CaseClassifier" if data_type == "multiclass" else "MultiLabelClassifier"
            raise ConfigError(
                f"the data are {data_type} but {type(self.model).__name__} is {model_type}: "
                f"use a {data_type} task (e.g. class_path: {hint})"
            )
        norm = getattr(self.model, "input_norm", None)
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if norm is not None and config is not None and "model" in config:
            config["model"]["init_args"]["input_norm"] = norm
        data = config.get("data") if config is not None else None
        if isinstance(self.datamodule, MedxferDataModule) and data is not None:
            resolved = {
                "name": self.datamodule.name,
                "split": list(self.datamodule.split),
                "batch_size": self.datamodule.batch_size,
            }
            for key, value in resolved.items():
                if data["init_args"].get(key) is None:
                    data["init_args"][key] = value

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self.after_instantiate()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with :class:`~medxfer.resume.RandomState` added (once), so every
        checkpoint holds the global random generators and a resumed fit continues exactly, and
        writing checkpoints without Lightning's in-memory copy
        (:func:`medxfer.checkpointing.use_local_checkpoint_io`; the same bytes, faster), and
        :class:`~medxfer.resume.SigtermCheckpoint` (a pre-empted fit writes ``last.ckpt``)."""
        from medxfer.resume import RandomState, SigtermCheckpoint

        kwargs = {**console_settings(self._get(self.config_init, "trainer", default={})), **kwargs}
        trainer = super().instantiate_trainer(**kwargs)
        for kind in (RandomState, SigtermCheckpoint):
            if not any(isinstance(cb, kind) for cb in trainer.callbacks):
                trainer.callbacks.append(kind())
        use_local_checkpoint_io(trainer)
        add_console_callbacks(trainer, self.subcommand)
        return trainer

    #: The global batch BiT-HyperRule was set for (``--hyperrule true``), checked on the trainer.
    hyperrule_batch: int | None = None

    def before_instantiate_classes(self) -> None:
        """``fit --hyperrule true``: BiT-HyperRule from the ``data`` section's tables and the
        global batch the trainer config gives (per-process batch x devices x nodes x
        accumulated batches), written into the config before anything is built: the
        resolution, the task's optimiser, lr, schedule and MixUp, the trainer's steps
        (:func:`medxfer.hyperrule.hyperrule_overrides`). The saved config holds the values."""
        config = self.config.get(self.subcommand) if self.subcommand else None
        require_checkpoint(self.subcommand, config)
        if self.subcommand != "fit" or not config or not config.get("hyperrule"):
            return
        from medxfer.commands.prepare import rule_of_section
        from medxfer.hyperrule import describe_run, global_batch, hyperrule_overrides

        rule, resolution, batch_size = rule_of_section(config["data"])
        trainer = config["trainer"]
        processes = _config_processes(trainer)
        accumulate = int(trainer.get("accumulate_grad_batches") or 1)
        batch = global_batch(batch_size, processes, accumulate)
        reduced = config["hyperrule"] == "reduced"
        if reduced:  # the steps do not depend on the batch: nothing to check at fit
            run = rule.reduced(batch)
        else:
            self.hyperrule_batch = batch
            run = rule.for_batch(batch)
        for key, value in hyperrule_overrides(resolution, run).items():
            config[key] = value
        from lightning.pytorch.utilities import rank_zero_only

        if rank_zero_only.rank == 0:
            print(describe_run(run, batch_size, processes, accumulate, reduced), flush=True)

    def before_fit(self) -> None:
        """``--hyperrule true``: the trainer must run the global batch the rule was set for (a
        device count the config leaves to ``auto`` is resolved the way Lightning does; this
        catches a launcher that starts another number of processes). Before that, the run
        folder is locked (:meth:`lock_run_folder`) and ``--ckpt_path`` checked
        (:meth:`check_ckpt_path`)."""
        self.lock_run_folder()
        self.check_ckpt_path()
        if self.hyperrule_batch is None:
            return
        from medxfer.hyperrule import global_batch

        trainer = self.trainer
        actual = global_batch(
            self.datamodule.batch_size, trainer.world_size, trainer.accumulate_grad_batches
        )
        if actual != self.hyperrule_batch:
            raise ConfigError(
                f"--hyperrule true set the schedule for a global batch of {self.hyperrule_batch} "
                f"(from the trainer config), but the run has {actual} "
                f"({trainer.world_size} process(es)); set trainer.devices and num_nodes explicitly"
            )

    #: The run folder's lock while ``fit`` runs (:meth:`lock_run_folder`).
    _run_lock: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """LightningCLI's constructor (it parses, builds and runs); the run folder's lock, if
        taken, is released when it returns or raises."""
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._run_lock is not None:
                self._run_lock.release()

    def lock_run_folder(self) -> None:
        """``fit`` only, on global rank zero: lock the run folder
        (:class:`~medxfer.checkpointing.RunFolderLock`), so a second fit into it -- started on
        the same folder, or ``--resume`` of a run still going -- stops with a one-line error
        instead of interleaving checkpoints and results."""
        from lightning.pytorch.utilities import rank_zero_only

        from medxfer.callbacks.base import run_folder
        from medxfer.checkpointing import RunFolderLock

        if rank_zero_only.rank != 0 or self._run_lock is not None:
            return
        # before any logger writes: a CSV logger empties the folder's metrics.csv when it starts
        self._run_lock = RunFolderLock(run_folder(self.trainer)).acquire()

    def ckpt_file(self) -> str | None:
        """The subcommand's ``--ckpt_path`` when it names a local file: None for none, for
        Lightning's names (``best``, ``last``, ``hpc``, ``registry``) and for remote URLs."""
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        ckpt = config.get("ckpt_path") if config else None
        if ckpt is None or "://" in str(ckpt) or str(ckpt) in ("best", "last", "hpc"):
            return None
        return None if str(ckpt).startswith("registry") else str(ckpt)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads the hyper-parameters of ``--ckpt_path`` while parsing, with a
        bare ``torch.load``: the file is read here first, so one that is not a checkpoint is
        named (:func:`~medxfer.checkpointing.read_checkpoint`) instead of a traceback."""
        from medxfer.checkpointing import read_checkpoint

        ckpt = self.ckpt_file()
        if ckpt is not None:
            read_checkpoint(ckpt)
        super()._parse_ckpt_path()

    def check_ckpt_path(self) -> None:
        """A ``--ckpt_path`` file must be a checkpoint of this model
        (:func:`~medxfer.checkpointing.check_checkpoint`: another task's or backbone's is
        named before Lightning fails inside ``load_state_dict``)."""
        from medxfer.checkpointing import check_checkpoint

        ckpt = self.ckpt_file()
        if ckpt is not None:
            check_checkpoint(ckpt, self.model)

    def before_validate(self) -> None:
        self.check_ckpt_path()

    def before_test(self) -> None:
        self.check_ckpt_path()

    def before_predict(self) -> None:
        self.check_ckpt_path()

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        trainer = self.trainer
        if trainer.interrupted or not getattr(self.datamodule, "eval_names", None):
            return
        ckpt = (
            "best"
            if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
            else None
        )
        results = trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False
        )
        self.write_results(results)

    def after_test(self) -> None:
        self.write_results(self.trainer.logged_metrics)

    def write_results(self, results: Sequence[dict[str, Any]] | dict[str, Any]) -> None:
        """Write test metrics to ``results.json`` (strict JSON: NaN as ``null``) and
        ``results.md`` in the run folder, and print them; ``results.json`` also keeps a
        :class:`~medxfer.callbacks.ConvergenceCallback`'s summary (epochs to converge)."""
        from medxfer import artifacts
        from medxfer.callbacks import ConvergenceCallback
        from medxfer.callbacks.base import run_folder

        if not self.trainer.is_global_zero:
            return
        out = run_folder(self.trainer)
        flat: dict[str, float] = {}
        for part in [results] if isinstance(results, dict) else results:
            flat.update({k: float(v) for k, v in part.items() if artifacts.is_result_key(str(k))})
        if not flat:
            return
        out.mkdir(parents=True, exist_ok=True)
        table = format_results(flat, _subgroup_reports(out, flat))
        artifacts.write_text(out / artifacts.RESULTS_MD, table + "\n")
        for cb in getattr(self.trainer, "callbacks", ()):  # a stub trainer may have none
            if isinstance(cb, ConvergenceCallback):
                flat.update(cb.results())
        # results.json last: its presence marks a finished run (medxfer study)
        artifacts.write_json(out / artifacts.RESULTS_JSON, flat, sort_keys=True)
        print(f"\n{table}\n\nwritten to {out / artifacts.RESULTS_MD}")


def _subgroup_reports(out: Path, flat: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The subgroup files of the test sets whose subgroup metrics this run logged, by set:
    their per-group sizes and values go to ``results.md`` (``results.json`` keeps its keys).
    ``out / analysis`` is the callbacks' :func:`~medxfer.callbacks.base.analysis_dir` (both
    in :func:`~medxfer.callbacks.base.run_folder`). A set without
    logged subgroup metrics is left out, so a file left by an earlier run is never shown."""
    import json

    from medxfer import artifacts
    from medxfer.naming import SUBGROUP, eval_prefix

    reports: dict[str, dict[str, Any]] = {}
    for key in flat:
        _, name, metric = key.split("/", 2)
        path = out / artifacts.ANALYSIS_DIR / artifacts.subgroups_json(eval_prefix("test", name))
        if metric.startswith(f"{SUBGROUP}/") and name not in reports and path.is_file():
            reports[name] = json.loads(path.read_text())
    return reports


def resume_arguments(run_dir: str | Path) -> list[str]:
    """The ``medxfer fit`` arguments that continue the run in ``run_dir``: its saved
    ``config.yaml``, its ``checkpoints/last.ckpt``, and the logger (CSV / TensorBoard, the
    first of a list) or ``default_root_dir`` pointed at ``run_dir`` itself, so checkpoints,
    ``metrics.csv`` and ``results.json`` go on in the same folder and ``ModelCheckpoint``
    keeps choosing "best" among all epochs (it restores its state only in the folder it wrote).

    Raises:
        FileNotFoundError: ``run_dir`` lacks ``config.yaml`` or ``checkpoints/last.ckpt``.
        ValueError: the run's first logger keeps its files elsewhere (e.g. W&B alone).
    """
    import json
    import os

    import torch
    import yaml

    from medxfer import artifacts

    run = Path(run_dir)
    config = run / artifacts.CONFIG_YAML
    ckpt = run / artifacts.CHECKPOINTS_DIR / artifacts.LAST_CKPT
    for path, what in ((config, "its saved config"), (ckpt, "a last checkpoint")):
        if not path.is_file():
            raise FileNotFoundError(
                f"--resume {run}: {path} not found ({what}); a run folder holds config.yaml "
                f"and checkpoints/{artifacts.LAST_CKPT} (ModelCheckpoint with save_last: true)"
            )
    # the folder string the checkpoint's ModelCheckpoint wrote to, when it is this folder:
    # ModelCheckpoint compares folders as strings before restoring its best-model tracking
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    folder = str(run)
    for key, value in state.get("callbacks", {}).items():
        dirpath = value.get("dirpath") if key.startswith("ModelCheckpoint") else None
        if dirpath and os.path.realpath(os.path.dirname(dirpath)) == os.path.realpath(run):
            folder = os.path.dirname(dirpath)
            break
    del state
    trainer = (yaml.safe_load(config.read_text()) or {}).get("trainer") or {}
    logger = trainer.get("logger")
    args = ["-c", str(config), f"--ckpt_path={ckpt}"]
    if logger in (None, False):
        return [*args, f"--trainer.default_root_dir={folder}"]
    loggers = logger if isinstance(logger, list) else [logger]
    first = loggers[0] if isinstance(loggers[0], dict) else {}
    if not str(first.get("class_path", "")).endswith(_FOLDER_LOGGERS):
        raise ConfigError(
            f"--resume {run}: the run's first logger ({first.get('class_path', loggers[0])}) "
            f"does not keep its files in the run folder; resume with "
            f"`medxfer fit -c {config} --ckpt_path {ckpt}` and that logger's own resume options"
        )
    first = {**first, "init_args": {**first.get("init_args", {}), "save_dir": folder}}
    first["init_args"].update(name="", version="")
    loggers = [first, *loggers[1:]]
    value = loggers if isinstance(logger, list) else first
    return [*args, f"--trainer.logger={json.dumps(value)}", f"--trainer.default_root_dir={folder}"]


def expand_resume(argv: Sequence[str]) -> list[str]:
    """``fit --resume RUN_DIR [overrides]`` -> ``fit`` + :func:`resume_arguments` + overrides
    (later arguments win, so an override such as ``--trainer.max_steps`` extends the run)."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--resume" or arg.startswith("--resume="):
            if not argv or argv[0] != "fit":
                raise ConfigError("--resume RUN_DIR is an option of `medxfer fit` only")
            value = arg.split("=", 1)[1] if "=" in arg else None
            if value is None:
                if i + 1 >= len(argv):
                    raise ConfigError("--resume needs a run folder: medxfer fit --resume RUN_DIR")
                value = argv[i + 1]
                rest = argv[1:i] + argv[i + 2 :]
            else:
                rest = argv[1:i] + argv[i + 1 :]
            args = resume_arguments(value)
            print(
                f"[resume] continuing {value} from its last checkpoint, at the batch after it "
                "(mid-epoch included; see docs/reliability.md)"
            )
            return ["fit", *args, *rest]
    return argv


def build_cli(
    argv: Sequence[str], run: bool = True, cli_class: type[MedxferCLI] | None = None
) -> MedxferCLI:
    """The ``medxfer`` LightningCLI on ``argv`` (``run=False``: parse and instantiate only;
    ``cli_class``: a subclass, e.g. one that parses only, as ``medxfer study run`` checks keys).

    ``fit --resume RUN_DIR`` continues a run (:func:`expand_resume`). Every task and datamodule
    declared as an entry point (medxfer's own and plug-ins') is imported first, so a config
    names their classes by short name (``class_path: PluginTask``). The short name is the class
    name; an entry point declared under another name warns, as configs cannot use it.
    """
    import warnings

    argv = expand_resume(argv)
    quiet_console()
    for kind in ("tasks", "datamodules"):
        for name, obj in load_all(kind).items():
            class_name = getattr(obj, "__name__", name)
            if name != class_name:
                warnings.warn(
                    f"{kind[:-1]} {name!r} is declared under another name than its class; a "
                    f"config names it `class_path: {class_name}` "
                    f"(or {obj.__module__}.{class_name})",
                    stacklevel=2,
                )
    # Parse errors raise (the command prints them in one line, exit status 2) instead of
    # printing jsonargparse's usage block; every subcommand's parser gets the setting.
    no_exit = {"exit_on_error": False}
    # `args` is the command line. sys.argv stays as the process was started: Lightning's DDP
    # launcher starts the other ranks by running it again (`medxfer fit ...`), so emptying it
    # would start them with no command. LightningCLI's warning about both is for Python callers.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return (cli_class or MedxferCLI)(
            TransferTask,
            MedxferDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=list(argv),
            run=run,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={**no_exit, **{c: dict(no_exit) for c in MedxferCLI.subcommands()}},
        )


def _config_processes(trainer: dict[str, Any]) -> int:
    """The processes a trainer config asks for: ``devices`` (an int, a list or ``"0,1"`` of
    device ids; ``"auto"`` / ``-1``: every visible GPU with a GPU accelerator, else 1) x
    ``num_nodes``. Checked against the built trainer in :meth:`MedxferCLI.before_fit`."""
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list | tuple):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    elif str(devices).strip().lstrip("-").isdigit() and int(devices) > 0:
        count = int(devices)
    else:
        import torch

        accelerator = str(trainer.get("accelerator") or "auto")
        gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
        count = max(1, gpus)
    return count * int(trainer.get("num_nodes") or 1)


# The console ------------------------------------------------------------------------------------
#: Lightning's advertisements, logged at INFO by its rank-zero logger: dropped by message.
_LIGHTNING_TIPS = ("💡 Tip:",)
#: Warnings known to be harmless in medxfer's runs, by message (a regular expression matched at
#: the start): torch's deprecation of the ``LeafSpec`` Lightning 2.6 still uses; the logging
#: interval longer than a short demo epoch (the step is still logged at the epoch's end).
HARMLESS_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)
#: On CPU the loader's worker count is the user's choice for a machine whose cores also train:
#: Lightning's "may be a bottleneck" advice is for accelerators.
HARMLESS_ON_CPU = (r"The '\w+' does not have many workers which may be a bottleneck",)


class _DropTips:
    """A ``logging`` filter that drops Lightning's tips (:data:`_LIGHTNING_TIPS`)."""

    def filter(self, record: Any) -> bool:
        return not str(record.getMessage()).startswith(_LIGHTNING_TIPS)


def quiet_console() -> None:
    """Filter Lightning's tips and the :data:`HARMLESS_WARNINGS` -- narrowly, by message: any
    other warning, Lightning's included, is still shown. Idempotent."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def console_settings(trainer_config: dict[str, Any]) -> dict[str, Any]:
    """Trainer arguments for the console the command runs on: no progress bar unless the config
    asks for one or stdout and stderr are terminals (a bar redrawn into a CI or SLURM log is
    noise; :class:`~medxfer.callbacks.EpochProgress` prints one line per epoch instead)."""
    from medxfer.callbacks.progress import console_is_terminal

    if trainer_config.get("enable_progress_bar") is None and not console_is_terminal():
        return {"enable_progress_bar": False}
    return {}


def add_console_callbacks(trainer: Trainer, subcommand: str | None) -> None:
    """What a command adds to a config's callbacks when they lack it: ``fit`` a progress line
    per epoch (:class:`~medxfer.callbacks.EpochProgress`), ``predict`` the per-case CSV of
    probabilities (:class:`~medxfer.callbacks.PredictionWriter`); and, on a CPU, the filter of
    :data:`HARMLESS_ON_CPU`."""
    import warnings

    from lightning.pytorch.accelerators import CPUAccelerator

    from medxfer.callbacks import EpochProgress, PredictionWriter

    wanted = {"fit": EpochProgress, "predict": PredictionWriter}.get(subcommand or "")
    if wanted is not None and not any(isinstance(cb, wanted) for cb in trainer.callbacks):
        trainer.callbacks.append(wanted())
    if isinstance(trainer.accelerator, CPUAccelerator):
        for message in HARMLESS_ON_CPU:
            warnings.filterwarnings("ignore", message=message)


def require_checkpoint(subcommand: str | None, config: Any) -> None:
    """``medxfer predict`` needs ``--ckpt_path``: without a checkpoint the task's head is freshly
    initialised, and its per-case probabilities would be written as if they meant something."""
    if subcommand == "predict" and config is not None and not config.get("ckpt_path"):
        raise ConfigError(
            "medxfer predict needs --ckpt_path (a checkpoint of medxfer fit, e.g. "
            "<run folder>/checkpoints/best-*.ckpt): without one the head is untrained"
        )
