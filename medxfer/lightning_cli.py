"""The LightningCLI of ``medxfer fit | validate | test | predict -c cfg.yaml``.

Models and datamodules are chosen in subclass mode (``class_path: MultiLabelClassifier`` --
short names resolve because :func:`build_cli` imports every registered task and datamodule,
medxfer's own and plug-ins', before parsing). The datamodule's number of outputs, label names
and channels are linked into the task, so sizes are written once. After ``fit`` the best
checkpoint is tested on every test set (the in-distribution split and each shifted set) and the
table is written to the run folder as ``results.json`` and ``results.md``. ``medxfer fit --resume
RUN_DIR`` continues a run from its ``last.ckpt`` into the same folder (:func:`resume_arguments`);
every fit carries :class:`~medxfer.resume.RandomState`, so the continuation is exact.

This module imports Lightning; :mod:`medxfer.cli` (the ``medxfer`` command) imports it only for
these four subcommands, so ``medxfer --help`` and ``medxfer list`` answer at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from medxfer.catalog import DATAMODULES, TASKS
from medxfer.checkpointing import use_local_checkpoint_io
from medxfer.cli import format_results
from medxfer.datamodules import MedxferDataModule
from medxfer.errors import ConfigError
from medxfer.tasks import TransferTask

__all__ = ["MedxferCLI", "build_cli", "expand_resume", "resume_arguments"]

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
            type=bool,
            default=False,
            help="fit only: set the resolution, SGD, lr, schedule, steps and MixUp by "
            "BiT-HyperRule, scaled to the global batch (see medxfer.hyperrule)",
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
        normalisation into the run's saved config."""
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

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self.after_instantiate()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with :class:`~medxfer.resume.RandomState` added (once), so every
        checkpoint holds the global random generators and a resumed fit continues exactly, and
        writing checkpoints without Lightning's in-memory copy
        (:func:`medxfer.checkpointing.use_local_checkpoint_io`; the same bytes, faster)."""
        from medxfer.resume import RandomState

        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(cb, RandomState) for cb in trainer.callbacks):
            trainer.callbacks.append(RandomState())
        use_local_checkpoint_io(trainer)
        return trainer

    #: The BiT-HyperRule resolved from the data section before the classes are built.
    hyperrule: Any = None

    def before_instantiate_classes(self) -> None:
        """``fit --hyperrule true``: resolve BiT-HyperRule from the ``data`` section alone and
        write what it sets before anything is built (as ``medxfer prepare --hyperrule true``
        does): the resolution into ``data.init_args``, ``trainer.max_epochs=-1`` (the rule's
        step count decides). The learning rate and steps wait for the global batch
        (:meth:`before_fit`)."""
        config = self.config.get(self.subcommand) if self.subcommand else None
        if self.subcommand != "fit" or not config or not config.get("hyperrule"):
            return
        from medxfer.hyperrule import resolve_data

        self.hyperrule = resolve_data(config["data"])
        config["trainer"]["max_epochs"] = -1

    def before_fit(self) -> None:
        """``--hyperrule true``: the rule at the run's global batch (per-process batch x
        processes x accumulated batches) sets the task's optimiser, lr, schedule and MixUp and
        the trainer's steps; the saved config holds the values."""
        config = self.config[self.subcommand]
        if not config.get("hyperrule", False):
            return
        from medxfer.hyperrule import apply_hyperrule, describe_run

        run = apply_hyperrule(self.model, self.datamodule, self.trainer, rule=self.hyperrule)
        for key, value in run.task_settings().items():
            config["model"]["init_args"][key] = value
        config["trainer"]["max_steps"], config["trainer"]["max_epochs"] = run.total_steps, -1
        if self.trainer.is_global_zero:
            print(describe_run(run, self.datamodule, self.trainer))

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
        ``results.md`` in the run folder, and print them."""
        from medxfer import artifacts
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


def build_cli(argv: Sequence[str], run: bool = True) -> MedxferCLI:
    """The ``medxfer`` LightningCLI on ``argv`` (``run=False``: parse and instantiate only).

    ``fit --resume RUN_DIR`` continues a run (:func:`expand_resume`). Task and datamodule
    plug-ins (entry points) are imported first, so a config names their
    classes by short name (``class_path: PluginTask``) as it does medxfer's own. The short name
    is the class name; an entry registered under another name warns, as configs cannot use it.
    """
    import warnings

    argv = expand_resume(argv)
    for registry in (TASKS, DATAMODULES):
        registry.load_plugins()
        for entry in registry:
            class_name = getattr(entry.obj, "__name__", entry.name)
            if entry.name != class_name:
                warnings.warn(
                    f"{registry.kind} {entry.name!r} is registered under another name than its "
                    f"class; a config names it `class_path: {class_name}` "
                    f"(or {entry.obj.__module__}.{class_name})",
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
        return MedxferCLI(
            TransferTask,
            MedxferDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=list(argv),
            run=run,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={**no_exit, **{c: dict(no_exit) for c in MedxferCLI.subcommands()}},
        )
