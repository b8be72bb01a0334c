"""``make demo``: synthetic CheXpert- and NIH-format data (written when absent), a short CPU
fine-tune, then in-domain and shifted-domain results side by side
(``python -m medxfer.commands.demo``).

``make demo-pretrain`` (``python -m medxfer.commands.demo pretrain``): the pre-training chain
on CPU -- pre-train on merged synthetic CheXpert-, NIH-, MIMIC- and PadChest-layout data
(``configs/pretrain_demo.yaml``), export the backbone, fine-tune on a synthetic tuberculosis
set from random init and from the export, 2 replicas each (``studies/pretrain_demo.yaml``),
and report random vs continual initialisation.

The console shows each step: the data written, one progress line per epoch, the results
table, and at the end where the run folder is and the commands to try next.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from medxfer import artifacts
from medxfer.commands import main as cli_main

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[2]
DATA = Path("data/synthetic")
#: Where the demo config writes its runs (its ``default_root_dir`` / logger ``save_dir``).
RUNS = Path("runs/chexpert_demo")


def main(argv: list[str] | None = None) -> int:
    """Run the demo from the current folder; extra arguments go to ``medxfer fit``
    (``pretrain`` as the first argument runs the pre-training demo instead)."""
    argv = list(argv if argv is not None else sys.argv[1:])
    if argv[:1] == ["pretrain"]:
        return pretrain(argv[1:])
    start = time.perf_counter()
    if (
        not (DATA / "chexpert" / "CheXpert-v1.0-synthetic" / "train.csv").is_file()
        or not (DATA / "nih" / "Data_Entry_2017_v2020.csv").is_file()
    ):
        print(f"[demo] writing synthetic CheXpert- and NIH-format data to {DATA}", flush=True)
        rc = cli_main(["synthesize", "cxr", str(DATA)])
        if rc:
            return rc  # the error is printed: `make demo` fails with it
    config = _repo_file("configs/chexpert_demo.yaml")
    before = set(RUNS.glob(f"**/{artifacts.RESULTS_JSON}"))
    print(f"[demo] medxfer fit -c {config} (a ResNet-18 from random init, on CPU)", flush=True)
    rc = cli_main(["fit", "-c", str(config), *argv])
    if rc:
        return rc
    print(f"[demo] finished in {time.perf_counter() - start:.0f} s", flush=True)
    new = sorted(set(RUNS.glob(f"**/{artifacts.RESULTS_JSON}")) - before)
    if new:
        run = new[-1].parent
        best = sorted((run / artifacts.CHECKPOINTS_DIR).glob("best-*.ckpt"))
        ckpt = best[-1] if best else run / artifacts.CHECKPOINTS_DIR / artifacts.LAST_CKPT
        print(
            f"[demo] run folder: {run} ({artifacts.RESULTS_MD}, {artifacts.ANALYSIS_DIR}/, "
            f"{artifacts.CHECKPOINTS_DIR}/)\n"
            f"next: medxfer predict -c {config} --ckpt_path {ckpt}   (per-case probabilities)\n"
            "      medxfer study run studies/demo.yaml   (this demo at 2 training fractions x "
            "3 seeds; `medxfer study plan` lists them)",
            flush=True,
        )
    return 0


#: The pre-training demo's data: ``medxfer synthesize <kind>`` and a file it writes.
PRETRAIN_DATA = {
    "cxr": DATA / "nih" / "Data_Entry_2017_v2020.csv",
    "mimic": DATA / "mimic" / "mimic-cxr-2.0.0-metadata.csv.gz",
    "padchest": DATA / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
    "tb": DATA / "shenzhen_tb" / "CXR_png",
}
PRETRAIN_RUN = Path("runs/pretrain_demo")  # configs/pretrain_demo.yaml's run folder
EXPORT = Path("cxr_demo.safetensors")  # what studies/pretrain_demo.yaml fine-tunes from


def _repo_file(relative: str) -> Path:
    """A shipped file: from the repository of this module, else from the current folder."""
    path = REPO / relative
    return path if path.is_file() else Path(relative)


def _study_file() -> Path:
    """``studies/pretrain_demo.yaml`` as shipped when run from the repository (its config paths
    are relative to it); from elsewhere, a copy beside the runs whose config paths point into
    the repository."""
    shipped = _repo_file("studies/pretrain_demo.yaml")
    if Path.cwd().resolve() == REPO.resolve():
        return shipped
    study = yaml.safe_load(shipped.read_text())
    study["base"] = [str(_repo_file(c)) for c in study["base"]]
    copy = PRETRAIN_RUN.parent / "pretrain_demo_study.yaml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(yaml.safe_dump(study, sort_keys=False))
    return copy


def pretrain(fit_args: list[str]) -> int:
    """The pre-training chain from the current folder: data (written when absent), pre-training
    (skipped when its ``results.json`` is there; ``fit_args`` go to that ``medxfer fit``),
    export, the random-vs-continual study (finished replicas skipped) and its report."""
    start = time.perf_counter()
    for kind, marker in PRETRAIN_DATA.items():
        if not marker.exists():
            print(f"[demo] medxfer synthesize {kind} {DATA}", flush=True)
            if rc := cli_main(["synthesize", kind, str(DATA)]):
                return rc
    config = _repo_file("configs/pretrain_demo.yaml")
    if (PRETRAIN_RUN / artifacts.RESULTS_JSON).is_file():
        print(f"[demo] pre-training done, skipped ({PRETRAIN_RUN})", flush=True)
    else:
        print(f"[demo] medxfer fit -c {config} (pre-training on 4 merged sources)", flush=True)
        if rc := cli_main(["fit", "-c", str(config), *fit_args]):
            return rc
    print(f"[demo] medxfer export {PRETRAIN_RUN} {EXPORT}", flush=True)
    if rc := cli_main(["export", str(PRETRAIN_RUN), str(EXPORT), "--force"]):
        return rc
    study = _study_file()
    print(f"[demo] medxfer study run {study} (tuberculosis: random vs continual)", flush=True)
    if rc := cli_main(["study", "run", str(study)]):
        return rc
    if rc := cli_main(["report", "studies/pretrain_demo"]):
        return rc
    print(
        f"[demo] finished in {time.perf_counter() - start:.0f} s: random vs continual in "
        "studies/pretrain_demo/report/report.md (report.html)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
