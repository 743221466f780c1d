"""seg: semantic segmentation with partial-convolution based padding (Liu et al., 2018)."""
import os

# albumentations 2.x asks PyPI for a newer version on import (up to 2 s per process, and no network at
# run time is a promise of this toolkit); set before any submodule imports it
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
