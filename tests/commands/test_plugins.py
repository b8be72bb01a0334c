"""Third-party plug-ins: a package installed beside medxfer that declares a task, a datamodule
and an image reader in the ``medxfer.tasks`` / ``medxfer.datamodules`` /
``medxfer.image_readers`` entry-point groups -- as medxfer declares its own -- is listed by
``medxfer list`` (without being imported) and usable in a config by its short (class) name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PLUGIN = '''"""A medxfer plug-in: one task and one datamodule."""

import sys

from medxfer.datamodules.chest_xray import ChestXrayDataModule
from medxfer.tasks import MultiLabelClassifier

print("PLUGIN IMPORTED", file=sys.stderr)


class PluginClassifier(MultiLabelClassifier):
    """A task from a plug-in."""


class PluginChestXray(ChestXrayDataModule):
    """A datamodule from a plug-in."""


def read_inverted(path, context=""):
    """A grey image, inverted."""
    from medxfer.data.images import read_grey_image

    return 1.0 - read_grey_image(path, context)
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding an installed-looking plug-in: its module and its ``.dist-info``."""
    root = tmp_path_factory.mktemp("site")
    (root / "medxfer_plugin_demo").mkdir()
    (root / "medxfer_plugin_demo" / "__init__.py").write_text(PLUGIN)
    info = root / "medxfer_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: medxfer-plugin-demo\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[medxfer.tasks]\nPluginClassifier = medxfer_plugin_demo:PluginClassifier\n"
        "plugin-alias = medxfer_plugin_demo:PluginClassifier\n\n"
        "[medxfer.datamodules]\nPluginChestXray = medxfer_plugin_demo:PluginChestXray\n\n"
        "[medxfer.image_readers]\ninverted = medxfer_plugin_demo:read_inverted\n"
    )
    return root


def _medxfer(args: list[str], plugin_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(plugin_path), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "medxfer", *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_shows_plugin(plugin_path: Path, tmp_path: Path) -> None:
    out = _medxfer(["list", "tasks"], plugin_path, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    listed = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()}
    assert listed["PluginClassifier"] == [
        "medxfer_plugin_demo:PluginClassifier",
        "[medxfer-plugin-demo]",
    ]
    assert listed["MultiLabelClassifier"] == ["medxfer.tasks.single_image:MultiLabelClassifier"]
    assert "PLUGIN IMPORTED" not in out.stderr  # listed from its metadata alone
    out = _medxfer(["list", "readers"], plugin_path, tmp_path)
    listed = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()}
    assert listed["inverted"] == ["medxfer_plugin_demo:read_inverted", "[medxfer-plugin-demo]"]


def test_config_resolves_plugin_short_names(
    plugin_path: Path, synthetic_cxr: dict[str, Path], tmp_path: Path
) -> None:
    config = {
        "model": {"class_path": "PluginClassifier", "init_args": {"backbone": "timm/resnet18"}},
        "data": {
            "class_path": "PluginChestXray",
            "init_args": {"train": {"csv": str(synthetic_cxr["chexpert"])}, "num_workers": 0},
        },
        "trainer": {"accelerator": "cpu", "logger": False},
    }
    cfg = tmp_path / "plugin.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = _medxfer(["fit", "-c", str(cfg), "--print_config"], plugin_path, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = yaml.safe_load(out.stdout)
    assert printed["model"]["class_path"] == "medxfer_plugin_demo.PluginClassifier"
    assert printed["data"]["class_path"] == "medxfer_plugin_demo.PluginChestXray"
    assert "plugin-alias" in out.stderr  # a declared name that configs cannot resolve warns
