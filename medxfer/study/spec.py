"""Study files: named axes and seeds, expanded into runs with stable, readable names.

A study file (YAML) is the one source of truth of a study's grid::

    out: studies/benchmark            # the study folder (``--out`` replaces it)
    base: [configs/a.yaml]            # -c files of every run
    overrides: {trainer.max_epochs: 100}   # --key=value of every run
    axes:                             # in order: the run name joins one part per axis
      init:                           # named levels: name -> overrides (and config files)
        moco-v2: {model.init_args.backbone: resnet50, model.init_args.pretrained: moco-v2}
        random: {model.init_args.backbone: resnet50}
      task:
        chexpert: {config: configs/task_chexpert.yaml}
      shots:                          # one key over values: levels "1", "5", ... (name: shots1)
        data.init_args.shots_per_class: [1, 5, 10]
    seeds: 10                         # 0..9, or a list [0, 1, 2]
    name: "{init}_{task}_shots{shots}"   # optional; default joins the parts with "_"
    # a string override may name axes: pretrained: "cxr-{model}" takes the run's model value
    exclude: [{init: random, shots: [1, 5]}]   # optional rules on axis values
    only: [...]                       # optional: keep the runs matching any rule

Each run is ``medxfer fit -c <base> -c <its levels' config files> --<key>=<value>...`` into
``<out>/<run name>/seed<k>/`` (:func:`medxfer.study.replica_command`). Its axis values go to
``<run>/axes.json`` (the report's columns) and its expanded spec -- config paths and overrides --
with their hash to ``<run>/run_spec.json``: a run folder made from another version of the study
file (another spec under the same name) is refused, never mixed in. Config *contents* are not
hashed (each replica saves its resolved ``config.yaml``).

This module reads YAML and stats files only (no torch), so ``medxfer study plan`` of a
1,420-replica study takes well under a second; the override keys are checked against the fit
config schema by ``medxfer study run`` (:mod:`medxfer.commands.study`), once per distinct
set of config files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medxfer import artifacts
from medxfer.errors import ConfigError

__all__ = [
    "Replica",
    "Run",
    "Study",
    "StudyError",
    "check_run_folders",
    "load_study",
    "override_argument",
    "replica_state",
    "select",
]

#: The keys a study file may hold.
_TOP_KEYS = ("out", "base", "overrides", "axes", "seeds", "name", "exclude", "only")
#: A level's key that adds config files (``-c``) instead of an override.
_CONFIG = "config"
#: What a run name may be made of: one folder name, readable in a shell.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


class StudyError(ConfigError):
    """A study file that cannot be expanded, or a study folder it cannot use; the message
    names the file and the key, run or folder."""


@dataclass(frozen=True)
class Run:
    """One named configuration of a study: its config files and overrides, run once per seed.

    Attributes:
        name: the run's folder name in the study (``<out>/<name>/seed<k>/``).
        axes: axis -> the run's value on it, as a string (``axes.json``).
        configs: the ``-c`` files, base first.
        overrides: dotted fit key -> value, in the order the study file gives them.
    """

    name: str
    axes: dict[str, str]
    configs: tuple[str, ...]
    overrides: dict[str, Any]

    def arguments(self) -> list[str]:
        """The overrides as ``medxfer fit`` arguments (``--key=value``)."""
        return [override_argument(k, v) for k, v in self.overrides.items()]

    def spec(self) -> dict[str, Any]:
        """What defines the run's results: its config files and overrides, and their hash."""
        body = {"configs": list(self.configs), "overrides": self.overrides}
        text = json.dumps(body, sort_keys=True, default=str)
        return {**body, "hash": hashlib.sha256(text.encode()).hexdigest()[:16]}


@dataclass(frozen=True)
class Replica:
    """One seed of a run: one ``medxfer fit`` into ``<study>/<run>/seed<k>/``."""

    study: Path
    run: Run
    seed: int

    @property
    def run_dir(self) -> Path:
        """The replica's run folder."""
        return self.study / self.run.name / artifacts.replica_dir(self.seed)

    @property
    def label(self) -> str:
        """``<run>/seed<k>``: what ``--only`` and the W&B sweep name it by."""
        return f"{self.run.name}/{artifacts.replica_dir(self.seed)}"


@dataclass
class Study:
    """An expanded study file.

    Attributes:
        file: the study file.
        out: the study folder.
        runs: the runs, in the order the axes expand (first axis slowest).
        seeds: the seeds every run is replicated with.
        text: the study file's text (copied to ``<out>/study.yaml``).
    """

    file: Path
    out: Path
    runs: list[Run]
    seeds: list[int]
    text: str = field(repr=False, default="")

    def replicas(self, runs: Iterable[Run] | None = None) -> list[Replica]:
        """Every (run, seed) pair, run by run."""
        return [
            Replica(self.out, r, s)
            for r in (self.runs if runs is None else runs)
            for s in self.seeds
        ]


def override_argument(key: str, value: Any) -> str:
    """``--key=value`` as LightningCLI parses it back: strings as written, everything else as
    JSON (``true``, ``null``, ``[1, 2]``, ``{"a": 1}``), which jsonargparse reads as YAML.

    >>> override_argument("data.init_args.shots_per_class", 10)
    '--data.init_args.shots_per_class=10'
    >>> override_argument("model.init_args.pretrained", None)
    '--model.init_args.pretrained=null'
    """
    text = value if isinstance(value, str) else json.dumps(value)
    return f"--{key}={text}"


def _where(file: Path, key: str) -> str:
    return f"{file}: {key}"


def _strings(file: Path, key: str, value: Any) -> list[str]:
    """A file name or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise StudyError(f"{_where(file, key)} must be a config file or a list of them")
    return items


def _overrides(file: Path, key: str, value: Any) -> tuple[list[str], dict[str, Any]]:
    """A level's (or the study's) settings: ``config`` files and dotted-key overrides."""
    if value is None:
        return [], {}
    if not isinstance(value, Mapping):
        raise StudyError(
            f"{_where(file, key)} must map fit keys to values "
            f"(e.g. {{model.init_args.backbone: resnet50}}), not {value!r}"
        )
    configs: list[str] = []
    overrides: dict[str, Any] = {}
    for k, v in value.items():
        if k == _CONFIG:
            configs += _strings(file, f"{key}.{k}", v)
        elif not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][\w.]*", k):
            raise StudyError(f"{_where(file, key)}: {k!r} is not a fit config key (a.b.c)")
        else:
            overrides[k] = v
    return configs, overrides


@dataclass(frozen=True)
class _Level:
    axis: str
    value: str  # axes.json's string
    part: str  # the default name's part
    configs: tuple[str, ...]
    overrides: dict[str, Any]


def _levels(file: Path, axis: str, spec: Any) -> list[_Level]:
    """One axis: ``{key: [values]}`` (levels named by value) or ``{name: settings}``."""
    where = f"axes.{axis}"
    if not isinstance(spec, Mapping) or not spec:
        raise StudyError(
            f"{_where(file, where)} must be {{fit.key: [values]}} or {{level name: settings}}"
        )
    if len(spec) == 1 and isinstance(next(iter(spec.values())), list):
        key, values = next(iter(spec.items()))
        _overrides(file, where, {key: None})  # the key's spelling
        if not values:
            raise StudyError(f"{_where(file, f'{where}.{key}')} lists no values")
        out = []
        for v in values:
            text = v if isinstance(v, str) else json.dumps(v)
            out.append(_Level(axis, text, f"{axis}{text}", (), {key: v}))
        return out
    out = []
    for name, settings in spec.items():
        configs, overrides = _overrides(file, f"{where}.{name}", settings)
        out.append(_Level(axis, str(name), str(name), tuple(configs), overrides))
    return out


def _seeds(file: Path, value: Any) -> list[int]:
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and value > 0:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) for s in value):
        if len(set(value)) != len(value):
            raise StudyError(f"{_where(file, 'seeds')} repeats a seed: {value}")
        return list(value)
    raise StudyError(f"{_where(file, 'seeds')} must be a count (10: seeds 0..9) or a list of ints")


def _rules(file: Path, key: str, value: Any, axes: Mapping[str, list[_Level]]) -> list[dict]:
    """``exclude`` / ``only``: a list of {axis: value or [values]}, every axis known."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, Mapping) and r for r in value):
        raise StudyError(f"{_where(file, key)} must be a list of {{axis: value or [values]}}")
    rules = []
    for i, rule in enumerate(value):
        parsed = {}
        for axis, want in rule.items():
            if axis not in axes:
                raise StudyError(
                    f"{_where(file, f'{key}[{i}]')}: unknown axis {axis!r} "
                    f"(the axes: {', '.join(axes)})"
                )
            wants = want if isinstance(want, list) else [want]
            texts = {w if isinstance(w, str) else json.dumps(w) for w in wants}
            known = {lv.value for lv in axes[axis]}
            if texts - known:
                raise StudyError(
                    f"{_where(file, f'{key}[{i}].{axis}')}: unknown value(s) "
                    f"{', '.join(sorted(texts - known))} (the values: {', '.join(sorted(known))})"
                )
            parsed[axis] = texts
        rules.append(parsed)
    return rules


def _matches(axes: Mapping[str, str], rules: list[dict]) -> bool:
    return any(all(axes[a] in v for a, v in rule.items()) for rule in rules)


def _fill(value: Any, axes: Mapping[str, str]) -> Any:
    """A string override with ``{axis}`` in it, the run's value put in (only axis names are
    replaced: ``best-{epoch}`` stays as written).

    >>> _fill("cxr-{model}", {"model": "bit-r50x1"})
    'cxr-bit-r50x1'
    """
    if not isinstance(value, str) or "{" not in value:
        return value
    return re.sub(r"\{([^{}]+)\}", lambda m: axes.get(m.group(1), m.group(0)), value)


def load_study(file: str | Path, out: str | Path | None = None) -> Study:
    """Read and expand a study file (no run folder is touched; config files must exist).

    Args:
        file: the study file.
        out: the study folder, replacing the file's ``out``.

    Raises:
        StudyError: a key, axis, level, rule or seed list it cannot use, a config file that is
            not there, a run name that is not a plain folder name, two runs of one name.
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"study file {file} not found")
    text = file.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise StudyError(f"{file}{at}: not YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, Mapping):
        raise StudyError(f"{file}: a study file is a mapping ({', '.join(_TOP_KEYS)})")
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise StudyError(
            f"{_where(file, str(unknown[0]))}: unknown key (a study file has {', '.join(_TOP_KEYS)})"
        )
    folder = out if out is not None else data.get("out")
    if not folder:
        raise StudyError(f"{_where(file, 'out')}: no study folder (set out: or pass --out)")
    base = _strings(file, "base", data.get("base") or [])
    common_configs, common = _overrides(file, "overrides", data.get("overrides"))
    axes_spec = data.get("axes") or {}
    if not isinstance(axes_spec, Mapping):
        raise StudyError(f"{_where(file, 'axes')} must map axis names to their levels")
    axes = {}
    for axis, spec in axes_spec.items():
        if not isinstance(axis, str) or not _NAME.fullmatch(axis):
            raise StudyError(f"{_where(file, 'axes')}: {axis!r} is not an axis name")
        axes[axis] = _levels(file, axis, spec)
    seeds = _seeds(file, data.get("seeds", 1))
    exclude = _rules(file, "exclude", data.get("exclude"), axes)
    only = _rules(file, "only", data.get("only"), axes)
    template = data.get("name")
    if template is not None:
        fields = {f for _, f, _, _ in string.Formatter().parse(str(template)) if f}
        if fields - set(axes):
            raise StudyError(
                f"{_where(file, 'name')}: unknown axis {sorted(fields - set(axes))[0]!r} in "
                f"{template!r} (the axes: {', '.join(axes) or 'none'})"
            )
    for config in dict.fromkeys(
        [*base, *common_configs, *(c for lv in axes.values() for x in lv for c in x.configs)]
    ):
        if not Path(config).is_file():
            raise StudyError(f"{file}: config file {config} not found")

    runs: list[Run] = []
    seen: dict[str, dict[str, str]] = {}
    for combo in itertools.product(*axes.values()):
        values = {lv.axis: lv.value for lv in combo}
        if (exclude and _matches(values, exclude)) or (only and not _matches(values, only)):
            continue
        if template is not None:
            name = str(template).format(**values)
        else:
            name = "_".join(lv.part for lv in combo) or file.stem
        if not _NAME.fullmatch(name):
            raise StudyError(
                f"{file}: run name {name!r} ({values}) is not a plain folder name "
                "(letters, digits, . _ + = -)"
            )
        if name in seen:
            raise StudyError(
                f"{file}: two runs are named {name!r}: {seen[name]} and {values} "
                "(give the name template every axis that varies)"
            )
        seen[name] = values
        overrides = dict(common)
        for lv in combo:
            overrides.update(lv.overrides)
        overrides = {k: _fill(v, values) for k, v in overrides.items()}
        configs = (*base, *common_configs, *(c for lv in combo for c in lv.configs))
        runs.append(Run(name, values, configs, overrides))
    if not runs:
        raise StudyError(f"{file}: no runs (every combination excluded)")
    return Study(file, Path(folder), runs, seeds, text)


def select(study: Study, only: Sequence[str]) -> list[Replica]:
    """The replicas ``--only`` names (``<run>`` for all its seeds, or ``<run>/seed<k>``); all
    of them when ``only`` is empty.

    Raises:
        StudyError: a name that is no run or replica of the study.
    """
    if not only:
        return study.replicas()
    by_name = {r.name: r for r in study.runs}
    picked: dict[str, Replica] = {}
    for item in only:
        run, _, seed = item.partition("/")
        if run not in by_name:
            raise StudyError(f"{study.file}: --only {item}: no run {run!r} in the study")
        replicas = study.replicas([by_name[run]])
        if seed:
            replicas = [r for r in replicas if r.label == item]
            if not replicas:
                raise StudyError(
                    f"{study.file}: --only {item}: no such replica (seeds: "
                    f"{', '.join(artifacts.replica_dir(s) for s in study.seeds)})"
                )
        picked.update((r.label, r) for r in replicas)
    return list(picked.values())


def check_run_folders(study: Study, runs: Iterable[Run] | None = None) -> None:
    """Refuse run folders made from another version of the study file: a ``run_spec.json``
    of another hash, or replica folders and no ``run_spec.json``.

    Raises:
        StudyError: naming the folder and what differs.
    """
    for run in study.runs if runs is None else runs:
        folder = study.out / run.name
        if not folder.is_dir():
            continue
        spec_file = folder / artifacts.RUN_SPEC_JSON
        if spec_file.is_file():
            try:
                old = json.loads(spec_file.read_text())
            except ValueError:
                old = {}
            if old.get("hash") == run.spec()["hash"]:
                continue
            changed = [k for k in ("configs", "overrides") if old.get(k) != run.spec()[k]]
            what = f"its {' and '.join(changed)} differ" if changed else "its spec differs"
            raise StudyError(
                f"{folder}: made from another version of {study.file} ({what}; see "
                f"{spec_file}): move it away or give the run another name"
            )
        if any(artifacts.replica_seed(p.name) is not None for p in folder.iterdir()):
            raise StudyError(
                f"{folder}: holds replicas but no {artifacts.RUN_SPEC_JSON}, so not made from "
                f"{study.file}: move it away or give the run another name"
            )


def replica_state(replica: Replica) -> str:
    """``done`` (a complete ``results.json``), ``resume`` (a ``last.ckpt`` to continue from),
    ``rerun`` (started, nothing to continue) or ``new``."""
    from medxfer.study import is_finished

    run_dir = replica.run_dir
    if not run_dir.is_dir():
        return "new"
    if is_finished(run_dir):
        return "done"
    if (run_dir / artifacts.CONFIG_YAML).is_file() and (
        run_dir / artifacts.CHECKPOINTS_DIR / artifacts.LAST_CKPT
    ).is_file():
        return "resume"
    return "rerun"
