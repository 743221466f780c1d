"""The wheel on its own: built from the clone, installed without dependencies into a throwaway virtual
environment layered on the project's, and run from outside the clone through the installed `seg` command."""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import save_demo_checkpoint
from PIL import Image

pytestmark = pytest.mark.slow  # trains or runs a tool end to end: left out of make test-fast

ROOT = Path(__file__).resolve().parent.parent
#: clone folder -> where the wheel ships it
SHIPPED = {"seg": "seg", "tools": "seg/tools", "configs": "seg/configs"}


def clone_files():
    """Every file the wheel must hold: {path in the wheel: path in the clone}."""
    files = {}
    for folder, target in SHIPPED.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".yaml"):
                files[f"{target}/{path.relative_to(ROOT / folder).as_posix()}"] = path
    return files


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"  # a copy: the build writes build/ and *.egg-info, which must not race other jobs in the clone
    for name in (*SHIPPED, "pyproject.toml", "LICENSE", "README.md"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    run = {"check": True, "capture_output": True, "text": True}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp / "dist"), str(src)], **run)
    wheel, = (tmp / "dist").glob("partialpad_seg-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], **run)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          **run).stdout.strip()
    # the dependencies (torch, ...) come from the project's venv; a path line in a .pth file appends it to
    # sys.path without running its .pth files, so the clone's editable install cannot shadow the wheel
    Path(site, "project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], **run)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {"wheel": wheel, "venv": venv, "tmp": tmp, "env": env}


def seg_command(installed, *args, timeout=120):
    """Run the installed `seg` from a folder outside the clone; returns the CompletedProcess."""
    return subprocess.run([str(installed["venv"] / "bin" / "seg"), *map(str, args)], cwd=installed["tmp"],
                          env=installed["env"], capture_output=True, text=True, timeout=timeout)


def test_wheel_holds_every_file_of_the_package_tools_and_configs(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    missing = sorted(set(clone_files()) - names)
    assert not missing, f"files of the clone missing from the wheel: {missing}"
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_installed_package_is_the_wheel_and_resolves_configs_by_name(installed):
    code = ("import seg; from seg.config import load_config; from seg.resources import resolve_config; "
            "path = resolve_config('cityscapes/deeplabv3plus_r50_partial_896'); "
            "print(seg.__file__); print(path); print(load_config(path)['model']['padding'])")
    out = subprocess.run([str(installed["venv"] / "bin" / "python"), "-c", code], cwd=installed["tmp"],
                         env=installed["env"], capture_output=True, text=True, check=True).stdout.split()
    venv = str(installed["venv"])
    assert out[0].startswith(venv) and out[1].startswith(venv), out  # not the clone's editable install
    assert out[2] == "partial"


def test_installed_commands_run_outside_the_clone(installed, tmp_path):
    top = seg_command(installed, "--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("train", "predict", "export", "cross-test"))
    train = seg_command(installed, "train", "--help")
    assert train.returncode == 0 and train.stdout.startswith("usage: seg train"), train.stderr
    ckpt = save_demo_checkpoint(installed["tmp"] / "tiny.pth")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    out = installed["tmp"] / "pred"
    result = seg_command(installed, "predict", ckpt, tmp_path / "a.png", "--out", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert Image.open(out / "a.png").size == (56, 40)
