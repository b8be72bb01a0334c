"""The HDF5 image cache: pixels equal the direct path after the same resize (8-bit, 16-bit,
DICOM, colour), settings and coverage checks, resume after a hard kill, corrupt files, and reads
from several DataLoader workers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import albumentations as A
import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medxfer.data.cache import (
    READER_VERSIONS,
    READERS,
    CacheError,
    CacheSettings,
    ImageCache,
    prepare_cache,
)
from medxfer.data.images import ImageDecodeError, image_reader, read_grey_image, read_rgb_image
from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
from medxfer.datamodules.dermatology import DermatologyDataModule, write_synthetic_derm
from medxfer.datamodules.mammography import (
    MammographyDataModule,
    orient_left,
    read_dicom,
    write_dicom,
    write_synthetic_mammo,
)


def _table(paths: list[Path]) -> pd.DataFrame:
    return pd.DataFrame({"path": [str(p) for p in paths], "line": range(2, 2 + len(paths))}).assign(
        source="list.csv"
    )


def _albumentations_resize(image: np.ndarray, side: int) -> np.ndarray:
    """The transforms' own first step, as the independent reference."""
    return A.Resize(side, side, interpolation=cv2.INTER_AREA)(image=image)["image"]


@pytest.fixture(scope="module")
def grey16(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """16-bit grey PNGs with values across the whole 16-bit range."""
    root = tmp_path_factory.mktemp("grey16")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(6):
        pixels = (rng.random((70 + k, 90)) * 65535).astype(np.uint16)
        paths.append(root / f"{k}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_nih_8bit_round_trip_equals_the_direct_resize(nih_subset: Path, tmp_path: Path) -> None:
    paths = sorted((nih_subset.parent / "images").glob("*.png"))[:40]
    report = prepare_cache(
        tmp_path / "c.h5", _table(paths), CacheSettings("grey", 48), progress=False
    )
    assert (report.total, report.written) == (40, 40)
    cache = ImageCache(tmp_path / "c.h5", CacheSettings("grey", 48))
    assert cache.bits == 8
    for p in paths[::7]:
        reference = _albumentations_resize(read_grey_image(p), 48)
        cached = cache(str(p))
        assert cached.shape == (48, 48) and cached.dtype == np.uint8  # as stored, no float
        np.testing.assert_array_equal(cached, np.rint(reference * 255))  # exact quantisation
        assert np.abs(cached / 255 - reference).max() <= 0.5 / 255 + 1e-6
    assert cache.source_shape(str(paths[0])) == Image.open(paths[0]).size[::-1]


def test_16bit_sources_are_stored_as_uint16(grey16: list[Path], tmp_path: Path) -> None:
    prepare_cache(tmp_path / "c.h5", _table(grey16), CacheSettings("grey", 32), progress=False)
    cache = ImageCache(tmp_path / "c.h5", CacheSettings("grey", 32))
    assert cache.bits == 16
    for p in grey16:
        direct = np.asarray(Image.open(p), dtype=np.float32) / 65535  # independent decode
        reference = _albumentations_resize(direct, 32)
        assert np.abs(cache(str(p)) - reference).max() <= 0.5 / 65535 + 1e-6


def test_16bit_source_in_an_8bit_cache_is_refused(grey16: list[Path], tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=r"more than 8 bits.*--bits 16"):
        prepare_cache(
            tmp_path / "c.h5", _table(grey16), CacheSettings("grey", 32), bits=8, progress=False
        )


def test_dicom_round_trip_keeps_12_bits_and_orientation(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for k, side in enumerate("LRLR"):
        pixels = np.clip(rng.random((60, 50)) * 0.3 + np.linspace(0, 0.7, 50)[None], 0, 1)
        paths.append(tmp_path / f"{k}.dcm")
        write_dicom(paths[-1], pixels, side, "CC", monochrome1=k == 3, patient="p", exam="e")
    prepare_cache(tmp_path / "m.h5", _table(paths), CacheSettings("mammogram", 40), progress=False)
    cache = ImageCache(tmp_path / "m.h5", CacheSettings("mammogram", 40))
    assert cache.bits == 16  # BitsStored 12
    for p in paths:
        reference = _albumentations_resize(orient_left(read_dicom(p)), 40)
        assert np.abs(cache(str(p)) - reference).max() <= 0.5 / 65535 + 1e-6


def test_rgb_round_trip(tmp_path: Path) -> None:
    root = write_synthetic_derm(tmp_path / "derm", n_cases=5, size=64, seed=0).parent
    paths = sorted((root / "images").glob("*.jpg"))[:5]
    prepare_cache(tmp_path / "d.h5", _table(paths), CacheSettings("rgb", 24), progress=False)
    cache = ImageCache(tmp_path / "d.h5", CacheSettings("rgb", 24))
    for p in paths:
        reference = _albumentations_resize(read_rgb_image(p), 24)
        assert cache(str(p)).shape == (24, 24, 3) and cache(str(p)).dtype == np.uint8
        assert np.abs(cache(str(p)) / 255 - reference).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(CacheSettings("grey", 33), r"side: cache 32, config 33", id="resolution"),
        pytest.param(CacheSettings("rgb", 32), r"reader: cache 'grey', config 'rgb'", id="reader"),
    ],
)
def test_other_settings_are_refused(
    grey16: list[Path], tmp_path: Path, settings: CacheSettings, message: str
) -> None:
    prepare_cache(tmp_path / "c.h5", _table(grey16), CacheSettings("grey", 32), progress=False)
    with pytest.raises(CacheError, match=rf"{tmp_path / 'c.h5'}.*{message}.*medxfer prepare"):
        ImageCache(tmp_path / "c.h5", settings)
    with pytest.raises(CacheError, match=message):  # and prepare does not mix settings either
        prepare_cache(tmp_path / "c.h5", _table(grey16), settings, progress=False)


def test_a_new_reader_version_is_refused(
    grey16: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare_cache(tmp_path / "c.h5", _table(grey16), CacheSettings("grey", 32), progress=False)
    monkeypatch.setitem(READER_VERSIONS, "grey", READER_VERSIONS["grey"] + 1)
    with pytest.raises(CacheError, match=r"reader_version: cache 1, config 2"):
        ImageCache(tmp_path / "c.h5", CacheSettings("grey", 32))


def test_a_cache_of_other_images_is_refused(grey16: list[Path], tmp_path: Path) -> None:
    prepare_cache(tmp_path / "c.h5", _table(grey16[:3]), CacheSettings("grey", 32), progress=False)
    with pytest.raises(CacheError, match=r"exists for other images \(3 stored, 6 asked"):
        prepare_cache(tmp_path / "c.h5", _table(grey16), CacheSettings("grey", 32), progress=False)
    cache = ImageCache(tmp_path / "c.h5", CacheSettings("grey", 32))
    with pytest.raises(CacheError, match=rf"{grey16[4]} \(row 9\) is not in the image cache"):
        cache(str(grey16[4]), "row 9")


def test_missing_truncated_and_corrupt_files(grey16: list[Path], tmp_path: Path) -> None:
    settings = CacheSettings("grey", 32)
    with pytest.raises(CacheError, match=r"does not exist; build it with `medxfer prepare"):
        ImageCache(tmp_path / "none.h5", settings)
    path = tmp_path / "c.h5"
    prepare_cache(path, _table(grey16), settings, progress=False)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match=r"cut.h5 is truncated or corrupt"):
        ImageCache(tmp_path / "cut.h5", settings)
    with h5py.File(path) as f:  # flip bytes inside one image's chunk
        offset = f["pixels"].id.get_chunk_info(2).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 100)
        fh.write(b"\xff\x00\xff\x00")
    cache = ImageCache(path, settings)
    cache(str(grey16[1]))  # other images still read
    with pytest.raises(CacheError, match=rf"checksum mismatch for {grey16[2]}.*corrupt"):
        cache(str(grey16[2]))


def test_a_cache_being_written_elsewhere_is_reported_as_locked(
    grey16: list[Path], tmp_path: Path
) -> None:
    prepare_cache(tmp_path / "c.h5", _table(grey16), CacheSettings("grey", 32), progress=False)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import h5py, time; f = h5py.File({str(tmp_path / 'c.h5')!r}, 'r+'); "
            "print('open', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(CacheError, match=r"locked by another process.*medxfer prepare"):
            ImageCache(tmp_path / "c.h5", CacheSettings("grey", 32))
    finally:
        holder.kill()
        holder.wait()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import pandas as pd
    from medxfer.data import cache

    calls = [0]
    original = cache.image_reader("grey")

    def reader(path, context=""):
        calls[0] += 1
        if calls[0] > int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # a hard kill, mid-batch
        return original(path, context)

    cache.READERS["grey"] = reader
    table = pd.read_csv(sys.argv[2])
    cache.prepare_cache(sys.argv[1], table, cache.CacheSettings("grey", 24), batch_size=8,
                        progress=False)
    """
)


def test_prepare_resumes_after_a_hard_kill(
    nih_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _table(sorted((nih_subset.parent / "images").glob("*.png"))[:60])
    table.to_csv(tmp_path / "images.csv", index=False)
    (tmp_path / "killer.py").write_text(KILLER)
    run = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "killer.py"),
            str(tmp_path / "c.h5"),
            str(tmp_path / "images.csv"),
            "29",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -9, run.stderr  # killed while decoding the 30th image
    with h5py.File(tmp_path / "c.h5") as f:
        assert int((f["status"][:] == 1).sum()) == 24  # three flushed batches of 8
    with pytest.raises(CacheError, match=r"incomplete: 24 of 60 images prepared.*resumes"):
        ImageCache(tmp_path / "c.h5", CacheSettings("grey", 24))

    decoded: list[str] = []
    original = image_reader("grey")
    monkeypatch.setitem(READERS, "grey", lambda p, c="": decoded.append(p) or original(p, c))
    report = prepare_cache(tmp_path / "c.h5", table, CacheSettings("grey", 24), progress=False)
    assert (report.already_done, report.written, len(decoded)) == (24, 36, 36)
    assert set(decoded) == set(table["path"][24:])
    monkeypatch.setitem(READERS, "grey", original)
    prepare_cache(tmp_path / "fresh.h5", table, CacheSettings("grey", 24), progress=False)
    with h5py.File(tmp_path / "c.h5") as a, h5py.File(tmp_path / "fresh.h5") as b:
        np.testing.assert_array_equal(a["pixels"][:], b["pixels"][:])


def test_a_bad_image_stops_prepare_and_the_rerun_continues(
    grey16: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [*grey16[:4], broken, *grey16[4:]]
    with pytest.raises(
        ImageDecodeError, match=rf"{broken} \(line 6 of list.csv\).*run `medxfer prepare` again"
    ):
        prepare_cache(
            tmp_path / "c.h5",
            _table(paths),
            CacheSettings("grey", 32),
            batch_size=2,
            progress=False,
        )
    Image.open(grey16[0]).save(broken)  # fixed
    report = prepare_cache(
        tmp_path / "c.h5", _table(paths), CacheSettings("grey", 32), progress=False
    )
    assert (report.already_done, report.written) == (4, 3)


def test_skip_bad_records_and_the_datamodule_counts(
    synthetic_cxr: dict[str, Path], tmp_path: Path
) -> None:
    csv = synthetic_cxr["chexpert"]
    table = pd.read_csv(csv)
    bad_rel = table["Path"][table["Frontal/Lateral"] == "Frontal"].iloc[3]
    root = tmp_path / "copy"
    import shutil

    shutil.copytree(csv.parents[1], root)
    (root / bad_rel).write_bytes(b"broken")
    train = CXRTable(csv=str(root / csv.relative_to(csv.parents[1])))

    def dm(skip: bool) -> ChestXrayDataModule:
        return ChestXrayDataModule(
            train, image_size=32, num_workers=0, skip_bad_images=skip, cache=str(tmp_path / "c.h5")
        )

    with pytest.raises(ImageDecodeError, match=rf"{bad_rel}"):
        dm(False).build_cache(tmp_path / "c.h5", progress=False)
    report = dm(True).build_cache(tmp_path / "c.h5", progress=False)  # skip_bad_images: recorded
    assert len(report.bad) == 1 and bad_rel in report.bad[0]
    with pytest.raises(ImageDecodeError, match=rf"{bad_rel}.*when the cache was prepared"):
        dm(False).setup("fit")
    skipping = dm(True)
    skipping.setup("fit")
    direct = ChestXrayDataModule(train, image_size=32, num_workers=0, skip_bad_images=True)
    direct.setup("fit")
    for a, b in [(skipping.train_set, direct.train_set), (skipping.val_set, direct.val_set)]:
        assert a.ids == b.ids  # the same row dropped as without the cache


def _first_batches(dm, n: int = 2) -> list[dict]:
    dm.setup("fit")
    return [b for b, _ in zip(dm.val_dataloader(), range(n), strict=False)]


def test_cxr_datamodule_reads_the_cache_with_workers(
    synthetic_cxr: dict[str, Path], tmp_path: Path
) -> None:
    train = CXRTable(csv=str(synthetic_cxr["chexpert"]))
    shifted = {"nih": CXRTable(csv=str(synthetic_cxr["nih"]), format="nih")}
    kw = dict(train=train, shifted=shifted, image_size=32, batch_size=8, num_workers=0)
    dm = ChestXrayDataModule(**kw)
    tables = dm.all_tables()
    assert set(tables["table"]) == {"train", "shifted/nih"}
    dm.build_cache(tmp_path / "c.h5", workers=2, progress=False)
    direct = _first_batches(ChestXrayDataModule(**kw))
    for workers in (0, 2):
        cached = _first_batches(
            ChestXrayDataModule(**{**kw, "num_workers": workers}, cache=str(tmp_path / "c.h5"))
        )
        for a, b in zip(cached, direct, strict=True):
            assert a["id"] == b["id"]
            torch.testing.assert_close(a["target"], b["target"], equal_nan=True)
            # the transforms quantise the decoded image as the cache does: the same 8 bits
            assert a["image"].dtype == b["image"].dtype == torch.uint8
            assert torch.equal(a["image"], b["image"])
    # a handle opened in the main process is closed before workers fork, each opens its own
    in_main = ChestXrayDataModule(**{**kw, "num_workers": 2}, cache=str(tmp_path / "c.h5"))
    in_main.setup("fit")
    in_main.val_set[0]
    assert in_main.images._file is not None
    batches = [b for b, _ in zip(in_main.val_dataloader(), range(2), strict=False)]
    assert in_main.images._file is None  # closed at the fork
    for a, b in zip(batches, direct, strict=True):
        assert torch.equal(a["image"], b["image"])
    nih = ChestXrayDataModule(**kw, cache=str(tmp_path / "c.h5"))
    nih.setup("test")
    # BiT-HyperRule's resolution needs the source size: from the cache, without the files
    from medxfer.hyperrule import hyperrule_of

    first = nih.train_set.paths[0]
    assert hyperrule_of(nih).image_size == Image.open(first).size[::-1]
    os.rename(first, first + ".away")
    try:
        assert hyperrule_of(nih).image_size == Image.open(first + ".away").size[::-1]
    finally:
        os.rename(first + ".away", first)
    assert len(nih.test_sets["nih"]) == len(pd.read_csv(synthetic_cxr["nih"]))


def test_mammo_and_derm_datamodules_read_the_cache(tmp_path: Path) -> None:
    exams = write_synthetic_mammo(tmp_path / "mammo", n_exams=20, size=48, seed=0)
    mkw = dict(train=str(exams), image_size=32, batch_size=4, num_workers=0)
    MammographyDataModule(**mkw).build_cache(tmp_path / "m.h5", progress=False)
    for a, b in zip(
        _first_batches(MammographyDataModule(**mkw, cache=str(tmp_path / "m.h5"))),
        _first_batches(MammographyDataModule(**mkw)),
        strict=True,
    ):
        assert a["id"] == b["id"] and torch.equal(a["mask"], b["mask"])
        # more than 8 bits: float16 in [0, 1], one float16 step (2**-11 below 1) apart at most
        assert a["image"].dtype == b["image"].dtype == torch.float16
        assert (a["image"].float() - b["image"].float()).abs().max() <= 2**-11
    cases = write_synthetic_derm(tmp_path / "derm", n_cases=30, size=48, seed=0)
    dkw = dict(train=str(cases), image_size=24, batch_size=4, num_workers=0, n_conditions=4)
    DermatologyDataModule(**dkw).build_cache(tmp_path / "d.h5", progress=False)
    for a, b in zip(
        _first_batches(DermatologyDataModule(**dkw, cache=str(tmp_path / "d.h5"))),
        _first_batches(DermatologyDataModule(**dkw)),
        strict=True,
    ):
        assert a["id"] == b["id"] and torch.equal(a["mask"], b["mask"])
        assert a["image"].dtype == torch.uint8 and torch.equal(a["image"], b["image"])


def test_medxfer_prepare_command(
    synthetic_cxr: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medxfer.commands import main

    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            trainer: {{max_steps: 1}}
            model: {{class_path: MultiLabelClassifier, init_args: {{backbone: timm/test_resnet}}}}
            data:
              class_path: ChestXrayDataModule
              init_args:
                train: {{csv: {synthetic_cxr["chexpert"]}}}
                image_size: 32
                num_workers: 0
            """
        )
    )
    out = tmp_path / "cache" / "c.h5"
    command = ["prepare", "-c", str(config), str(out), "--no-progress"]
    assert main([*command, "--data.init_args.image_size=28"]) == 0
    with h5py.File(out) as f:
        assert int(f.attrs["side"]) == 32  # 28 * 8 / 7
        stored = pd.read_csv(io.StringIO(f["table"].asstr()[()]))
        assert {"patient_id", "sex", "path"} <= set(stored.columns)
    assert main([*command, "--data.init_args.image_size=28"]) == 0  # done: nothing to do
    assert main(command) == 2
    assert "side: cache 32, config 37" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cpus", "env", "expected"),
    [
        pytest.param(16, {}, 8, id="capped-at-8"),
        pytest.param(16, {"LOCAL_WORLD_SIZE": "4"}, 3, id="torchrun-4-per-node"),
        pytest.param(16, {"SLURM_NTASKS_PER_NODE": "8"}, 1, id="slurm-8-per-node"),
        pytest.param(2, {}, 1, id="two-cpus"),
        pytest.param(1, {}, 0, id="one-cpu"),
    ],
)
def test_default_workers_share_the_cpus_of_the_node(
    monkeypatch: pytest.MonkeyPatch, cpus: int, env: dict[str, str], expected: int
) -> None:
    from medxfer.data.loaders import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_workers() == expected


def test_loader_settings_reach_the_dataloaders(synthetic_cxr: dict[str, Path]) -> None:
    dm = ChestXrayDataModule(
        CXRTable(csv=str(synthetic_cxr["chexpert"])),
        image_size=32,
        num_workers=1,
        persistent_workers=False,
        prefetch_factor=3,
        pin_memory=False,
    )
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (
            1,
            False,
            3,
        )
    dm = ChestXrayDataModule(
        CXRTable(csv=str(synthetic_cxr["chexpert"])), image_size=32, num_workers=0
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert (loader.persistent_workers, loader.prefetch_factor) == (False, None)
