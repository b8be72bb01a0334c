"""``medxfer study plan | run | sweep FILE``: a study file's grid of runs into a study folder
(the library side is :mod:`medxfer.study`; the file's schema, :mod:`medxfer.study.spec`).

- ``plan`` lists the runs, their axis values and how many replicas are done, to resume or to
  run, without running anything (no torch: well under a second for 1,420 replicas).
- ``run`` checks every override key against the fit config schema (once per distinct set of
  config files), then runs what is left: on this machine ``--jobs N`` at a time, or as a SLURM
  job array (``--executor slurm``, submitit).
- ``sweep`` writes the W&B grid sweep whose agents run ``medxfer study run FILE --only ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medxfer.commands.common import CommandParser, check_yaml

__all__ = ["check_fit_keys", "main", "parse_fit_arguments"]

#: ``--executor``: this machine, SLURM through submitit, or submitit's local executor (one
#: process per task on this machine: the array path without a cluster).
EXECUTORS = ("local", "slurm", "submitit-local")


def _parser() -> CommandParser:
    p = CommandParser(
        prog="medxfer study",
        description="Plan, run or sweep a study file's grid of runs (docs/studies.md).",
    )
    sub = p.add_subparsers(dest="action", required=True, parser_class=CommandParser)
    helps = {
        "plan": "list the runs and how many replicas are done (runs nothing)",
        "run": "run what is left (finished replicas skipped, killed ones resumed)",
        "sweep": "write a W&B grid sweep whose agents run the study's replicas",
    }
    for action, text in helps.items():
        a = sub.add_parser(action, help=text, description=text)
        a.add_argument("file", type=Path, help="the study file (YAML)")
        a.add_argument("--out", type=Path, help="the study folder (replaces the file's out:)")
        a.add_argument(
            "--only",
            nargs="+",
            default=[],
            metavar="RUN[/seedK]",
            help="only these runs (all their seeds) or replicas",
        )
        if action == "plan":
            a.add_argument(
                "--commands", action="store_true", help="print each replica's command line"
            )
        if action == "run":
            a.add_argument(
                "--jobs",
                type=int,
                default=None,
                help="replicas at a time (local: default 1; slurm: the array's "
                "slurm_array_parallelism)",
            )
            a.add_argument("--executor", choices=EXECUTORS, default="local")
            a.add_argument(
                "--submitit",
                nargs="+",
                default=[],
                metavar="KEY=VALUE",
                help="submitit AutoExecutor parameters, e.g. timeout_min=240 "
                "slurm_partition=gpu gpus_per_node=1 slurm_array_parallelism=20",
            )
            a.add_argument(
                "--wait", action="store_true", help="submitit: wait for the jobs and report"
            )
        if action == "sweep":
            a.add_argument(
                "--to", type=Path, help="the sweep file (default: <study>/wandb_sweep.yaml)"
            )
    return p


def main(argv: Sequence[str]) -> int:
    """``medxfer study plan | run | sweep FILE [--out STUDY] [--only RUN[/seedK] ...]``."""
    if argv and argv[0] in ("-c", "--config"):  # the form before study files
        from medxfer.errors import ConfigError

        raise ConfigError(
            "medxfer study takes a study file: medxfer study plan | run | sweep FILE; the seeds "
            "of one config are the file `{out: STUDY, base: [CONFIG], seeds: [0, 1, 2]}` "
            "(docs/studies.md)"
        )
    args = _parser().parse_args(list(argv))
    from medxfer.study.spec import check_run_folders, load_study, select

    check_yaml(args.file)
    plan = load_study(args.file, args.out)
    replicas = select(plan, args.only)
    runs = list({r.run.name: r.run for r in replicas}.values())
    check_run_folders(plan, runs)
    if args.action == "plan":
        return _plan(plan, replicas, args.commands)
    if args.action == "sweep":
        return _sweep(plan, replicas, args.to)
    executor = None
    if args.executor != "local":  # its settings before the (slower) schema check
        items = list(args.submitit)
        if args.jobs and args.executor == "slurm":
            items.append(f"slurm_array_parallelism={args.jobs}")
        executor = _submitit_executor(plan.out, args.executor, items)
    check_fit_keys(plan.file, runs)
    return _run(plan, replicas, args, executor)


def _plan(plan: Any, replicas: list[Any], commands: bool) -> int:
    """Print the runs (one line each: name, axis values, replica states) and the totals."""
    from collections import Counter

    from medxfer.study.spec import replica_state

    states = {r.label: replica_state(r) for r in replicas}
    total: Counter[str] = Counter(states.values())
    by_run: dict[str, list[Any]] = {}
    for r in replicas:
        by_run.setdefault(r.run.name, []).append(r)
    width = max(len(n) for n in by_run)
    for name, reps in by_run.items():
        count = Counter(states[r.label] for r in reps)
        axes = " ".join(f"{k}={v}" for k, v in reps[0].run.axes.items())
        done = f"{count['done']}/{len(reps)} done"
        more = "".join(f", {count[s]} {s}" for s in ("resume", "rerun") if count[s])
        print(f"{name:<{width}}  {done}{more}  {axes}")
        if commands:
            from medxfer.study.executors import _command

            for r in reps:
                print("    " + " ".join(_command(r, None)[0]))
    stale = _foreign_folders(plan) if len(by_run) == len(plan.runs) else []
    if stale:
        print(
            f"[study] {len(stale)} folder(s) in {plan.out} hold replicas of no run of this file: "
            f"{', '.join(stale)} (medxfer report reads them too: move them away to leave them out)"
        )
    print(
        f"[study] {plan.file}: {len(by_run)} run(s) x {len(plan.seeds)} seed(s) = "
        f"{len(replicas)} replica(s) in {plan.out}: {total['done']} done, "
        f"{total['resume']} to resume from last.ckpt, {total['rerun'] + total['new']} to run"
    )
    return 0


def _foreign_folders(plan: Any) -> list[str]:
    """Folders of the study folder holding replicas (``seed<k>/``) that are no run of the study
    file: runs of a level since removed or renamed, or another study's."""
    from medxfer import artifacts

    if not plan.out.is_dir():
        return []
    names = {r.name for r in plan.runs}
    return sorted(
        d.name
        for d in plan.out.iterdir()
        if d.is_dir()
        and d.name not in names
        and any(artifacts.replica_seed(c.name) is not None for c in d.iterdir())
    )


def _sweep(plan: Any, replicas: list[Any], to: Path | None) -> int:
    import yaml

    from medxfer import artifacts
    from medxfer.study.executors import sweep_definition

    to = to or plan.out / "wandb_sweep.yaml"
    to.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(sweep_definition(plan, replicas), sort_keys=False)
    artifacts.write_text(to, text)
    print(
        f"[study] W&B grid sweep of {len(replicas)} replica(s) in {to}\n"
        f"next: wandb sweep {to}   (prints ENTITY/PROJECT/SWEEP_ID)\n"
        "      wandb agent --count 1 ENTITY/PROJECT/SWEEP_ID   (per job, e.g. in a SLURM array)"
    )
    return 0


def _run(plan: Any, replicas: list[Any], args: Any, executor: Any) -> int:
    from medxfer import artifacts
    from medxfer.study.executors import collect, prepare, run_local, submit

    prepare(plan, replicas)
    if args.executor == "local":
        failed = run_local(replicas, jobs=args.jobs or 1)
        if failed:
            names = ", ".join(r.label for r in failed)
            raise SystemExit(
                f"[study] {len(failed)} of {len(replicas)} replica(s) failed: {names} (their "
                f"log.txt says why); run the same command again to redo them"
            )
    else:
        jobs = submit(replicas, executor)
        print(
            f"[study] submitted {len(jobs)} array task(s) (job {jobs[0].job_id.split('_')[0]})"
            if jobs
            else "[study] nothing to submit: every replica is done",
            flush=True,
        )
        if not args.wait:
            print(f"follow: medxfer study plan {plan.file} --out {plan.out}")
            return 0
        failed = collect(jobs)
        for job, line in failed:
            print(f"[study] task {job.job_id} failed: {line}")
        if failed:
            raise SystemExit(
                f"[study] {len(failed)} of {len(jobs)} task(s) failed; the others' results are "
                "in place: submit again to redo them"
            )
    print(
        f"[study] {len(replicas)} replica(s) finished in {plan.out}\n"
        f"next: medxfer report {plan.out}   (tables and plots in "
        f"{plan.out / artifacts.REPORT_DIR})",
        flush=True,
    )
    return 0


def _submitit_executor(out: Path, kind: str, items: Sequence[str]) -> Any:
    """submitit's ``AutoExecutor`` (``slurm`` or ``local``) in ``STUDY/.submitit``, with the
    ``KEY=VALUE`` parameters (values read as YAML: ``240`` -> 240).

    Raises:
        ConfigError: an item that is not KEY=VALUE, a parameter submitit refuses, or no SLURM
            on this machine.
    """
    import submitit
    import yaml

    from medxfer.errors import ConfigError

    parameters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"medxfer study run: --submitit {item!r} is not KEY=VALUE")
        parameters[key] = yaml.safe_load(value)
    cluster = "slurm" if kind == "slurm" else "local"
    try:
        executor = submitit.AutoExecutor(folder=out / ".submitit", cluster=cluster)
    except RuntimeError as err:  # no srun / sbatch on this machine
        raise ConfigError(f"medxfer study run --executor {kind}: {err}") from None
    try:
        executor.update_parameters(**parameters)
    except (NameError, AssertionError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"medxfer study run: --submitit: {first}") from None
    return executor


def check_fit_keys(file: Path, runs: Sequence[Any]) -> None:
    """Check every override key of ``runs`` against the fit config schema, before anything
    runs: one parse (no model or data is built) per distinct set of config files, with the
    first value of each key among its runs; on a failure each key alone, to name it.

    Raises:
        StudyError: the study file, the key, a run that sets it, and jsonargparse's reason.
    """
    from medxfer.study.spec import StudyError, override_argument

    groups: dict[tuple[str, ...], dict[str, tuple[Any, str]]] = {}
    for run in runs:
        keys = groups.setdefault(run.configs, {})
        for key, value in run.overrides.items():
            keys.setdefault(key, (value, run.name))
    for configs, keys in groups.items():
        head = [a for c in configs for a in ("-c", c)]

        def parses(items: dict[str, tuple[Any, str]], head: list[str] = head) -> str | None:
            argv = [
                *head,
                "--seed_everything=false",
                *(override_argument(k, v) for k, (v, _) in items.items()),
            ]
            try:
                parse_fit_arguments(argv)
            except Exception as err:  # jsonargparse's error, or a config's own
                return _reason(err)
            return None

        if parses(keys) is None:
            continue
        reason = parses({})
        if reason is not None:
            raise StudyError(
                f"{file}: the config files {' + '.join(configs)} do not parse: {reason}"
            )
        for key, item in keys.items():
            reason = parses({key: item})
            if reason is not None:
                raise StudyError(
                    f"{file}: override {key}={item[0]!r} (run {item[1]}) is not a fit setting "
                    f"of {' + '.join(configs) or 'the defaults'}: {reason}"
                )
        raise StudyError(f"{file}: the runs on {' + '.join(configs)} do not parse: {parses(keys)}")


def parse_fit_arguments(argv: Sequence[str]) -> Any:
    """``medxfer fit``'s arguments (``-c`` files, ``--key=value``) parsed by its LightningCLI
    parser -- keys and types checked, defaults filled -- with nothing built; returns the config
    (a jsonargparse namespace)."""
    from medxfer.commands.lightning import MedxferCLI, build_cli

    class ParseOnly(MedxferCLI):
        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    return build_cli(argv, run=False, cli_class=ParseOnly).config


def _reason(err: BaseException) -> str:
    """The line of a jsonargparse error that says what is wrong (its first line names only the
    section: ``Parser key "model":``)."""
    lines = [ln.strip(" -") for ln in str(err).splitlines() if ln.strip(" -")]
    for word in ("not accepted", "unrecognized", "Unrecognized", "does not", "Expected"):
        hits = [ln for ln in lines if word in ln and "NoneType" not in ln]
        if hits:
            return hits[0]
    return lines[0] if lines else type(err).__name__
