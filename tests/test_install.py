"""What installing the package gives: dependency ranges (the exact pair in constraints.txt, which make uses),
the [onnx] extra, every shipped folder a listed package (no setuptools warnings), a `seg --help` that imports
no heavy package, and `python -m seg`."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the metadata checks need a TOML reader

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: clone folder -> package it ships as
SHIPPED = {"seg": "seg", "tools": "seg.tools", "configs": "seg.configs"}
HEAVY = ("torch", "torchvision", "albumentations", "cv2", "numpy")


def _requirement(name: str) -> str:
    (spec,) = [d for d in PYPROJECT["project"]["dependencies"] if re.match(rf"{name}\b", d)]
    return spec


def test_torch_and_torchvision_are_ranges_and_the_tested_pair_is_in_constraints():
    for name in ("torch", "torchvision"):
        spec = _requirement(name)
        assert "==" not in spec and ">=" in spec and "<" in spec.replace("<=", "<"), spec
        assert re.search(rf"^{name}==\d", (ROOT / "constraints.txt").read_text(), re.M), name
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_onnx_extra_brings_the_exporter_and_the_runtime():
    extra = {re.match(r"[\w-]+", d).group() for d in PYPROJECT["project"]["optional-dependencies"]["onnx"]}
    assert extra == {"onnx", "onnxscript", "onnxruntime"}


def test_every_shipped_folder_is_a_listed_package():
    """A folder of package files (.py, .yaml) not in the packages list makes setuptools warn for every file."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    for folder, package in SHIPPED.items():
        for path in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in path.parts or not any(f.suffix in (".py", ".yaml") for f in path.iterdir()):
                continue
            name = ".".join([package, *path.relative_to(ROOT / folder).parts])
            assert name in listed, f"{path} ships as {name}, which pyproject.toml does not list"


@pytest.mark.slow
def test_wheel_builds_without_setuptools_warnings(tmp_path):
    src = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info, which must not race other jobs
    for name in (*SHIPPED, "pyproject.toml", "LICENSE", "README.md"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-v", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    # PYTHONDONTWRITEBYTECODE makes setuptools say it skips byte-compiling: not a problem of the package
    warnings = [line for line in (build.stdout + build.stderr).splitlines()
                if "warn" in line.lower() and "byte-compiling is disabled" not in line]
    assert warnings == []


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_seg_help_imports_no_heavy_package():
    """`seg --help` and `seg configs` answer without torch & co. (seconds of imports otherwise)."""
    code = ("import sys; import seg.commands as c; c.main(['--help']); c.main(['configs']); "
            f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])")
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert "commands:" in result.stdout and "demo/deeplabv3plus_r18_partial" in result.stdout
    assert result.stdout.strip().endswith("HEAVY []")


def test_python_dash_m_seg_is_the_seg_command():
    result = _run("-m", "seg", "--help")
    assert result.returncode == 0 and "usage: seg <command>" in result.stdout and "export" in result.stdout
    assert _run("-m", "seg", "--version").stdout.startswith("seg ")
    assert _run("-m", "seg", "nope").returncode == 2
