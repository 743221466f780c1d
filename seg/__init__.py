"""seg: semantic segmentation with partial-convolution based padding (Liu et al., 2018)."""
import importlib
import os

# albumentations 2.x asks PyPI for a newer version on import (up to 2 s per process, and no network at
# run time is a promise of this toolkit); set before any submodule imports it
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

# attributes loaded on first use, so that `import seg` stays light (no torch, no models)
_LAZY = {"predict": "seg.evaluation.predict", "load": "seg.evaluation.predictor",
         "Predictor": "seg.evaluation.predictor", "compare": "seg.evaluation.compare"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'seg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
