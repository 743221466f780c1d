"""Where the configs and tools live: inside the package when installed from a wheel (``seg/configs``,
``seg/tools``), next to it in a clone (``configs/``, ``tools/``). Imports nothing from seg."""
from __future__ import annotations

import difflib
import os
from pathlib import Path

__all__ = ["data_root", "config_dir", "resolve_config", "packaged_configs", "config_suggestion"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_root() -> Path:
    """The folder holding ``configs/`` and ``tools/``: the package folder in a wheel install, else the clone."""
    return _PACKAGE_DIR if (_PACKAGE_DIR / "configs").is_dir() else _PACKAGE_DIR.parent


def config_dir() -> Path:
    """The folder of the shipped YAML configs."""
    return data_root() / "configs"


def resolve_config(name: str) -> str:
    """``name`` itself when it is a file; else the shipped config it names, with or without ".yaml" and an
    optional leading "configs/" (``cityscapes/deeplabv3plus_r50_partial_896``); else ``name`` unchanged,
    so that loading it reports the missing file by the name the user gave."""
    if os.path.isfile(name):
        return name
    relative = name.removeprefix("configs/")
    for candidate in (relative, relative + ".yaml"):
        path = config_dir() / candidate
        if path.is_file():
            return str(path)
    return name


def packaged_configs() -> list[str]:
    """Names of the shipped configs (``<dataset>/<name>``, bases excluded), for help texts."""
    root = config_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob("*/*.yaml")
                  if not p.parent.name.startswith("_") and not p.name.startswith("_"))


def config_suggestion(name: str) -> str:
    """" (did you mean the shipped config 'x'?)" for the shipped config closest to a config name that names
    no file, or "" when none is close. Compares names without folder prefix or ".yaml", so that
    ``cityscapes/deeplabv3plus_r50_partial_869`` and ``/abs/configs/cityscapes/deeplab...yaml`` both match."""
    stem = Path(name).with_suffix("") if name.endswith((".yaml", ".yml")) else Path(name)
    wanted = "/".join(stem.parts[-2:])
    close = difflib.get_close_matches(wanted, packaged_configs(), n=1, cutoff=0.75)
    return f" (did you mean the shipped config {close[0]!r}?)" if close else ""
