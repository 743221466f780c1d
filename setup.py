"""Installable `seg` package: partial-convolution padding for semantic segmentation."""
from setuptools import find_packages, setup

setup(
    name="seg",
    version="0.1.0",
    description="Semantic segmentation toolkit built around partial-convolution based padding",
    packages=find_packages(include=["seg", "seg.*"]),
    python_requires=">=3.10",
    install_requires=[
        # torch and torchvision must be a matching pair (torchvision's C extension is built against one torch)
        "torch==2.14.1",
        "torchvision==0.29.1",
        "opencv-python-headless>=4.8",
        "albumentations>=2.0",
        "cityscapesscripts>=2.2",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "matplotlib>=3.7",
        "numpy>=1.24",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "pytest-timeout>=2.1", "onnx>=1.15", "onnxscript", "scipy>=1.11"],
    },
)
