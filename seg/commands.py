"""``seg <command> [args]``: one console command for the tools (installed by the package as ``seg``).

Each command runs a tool's ``main(argv)``, exactly as ``python tools/<tool>.py [args]`` does in a clone.
The tool module and the tools' shell (``seg.cli``) are imported only when a command runs: importing them
(torch, torchvision, albumentations) would make ``seg --help`` take seconds, and the tools sit above every
other layer of the package. This module imports only modules that import no third-party package.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

from seg import __version__
from seg.errors import SegError
from seg.resources import data_root, packaged_configs

#: command -> (tool module, one-line summary)
COMMANDS = {
    "train": ("train", "train a segmentation network (or a classifier, from a classification config)"),
    "train-classifier": ("train_classifier", "train, cross-test or summarise ImageNet-style classifiers"),
    "eval": ("eval", "evaluate a checkpoint (mIoU and friends, several inference modes)"),
    "predict": ("predict", "segment unlabelled images with a checkpoint"),
    "compare": ("compare", "comparison tables and plots from eval result files, with uncertainty"),
    "cross-test": ("cross_test", "every (trained padding, evaluated padding) pair"),
    "reproduce": ("reproduce", "the paper's protocol table by table, beside the paper's figures"),
    "prepare-cityscapes": ("prepare_cityscapes", "create the labelTrainIds PNGs of a Cityscapes root and check it"),
    "make-demo-data": ("make_demo_data", "generate the synthetic demo data set"),
    "export": ("export", "export a checkpoint to ONNX or a weights-only state dict"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: seg <command> [args]   (seg {__version__}; seg <command> --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines.append(f"  {'configs':<{width}}  list the shipped configs (usable by name: seg train <name>)")
    return "\n".join(lines)


def load_tool(module: str):
    """The tool module: ``seg.tools.<module>`` when installed, else ``tools/<module>.py`` of the clone."""
    try:
        return importlib.import_module(f"seg.tools.{module}")
    except ModuleNotFoundError as err:
        if err.name not in ("seg.tools", f"seg.tools.{module}"):
            raise  # a dependency of the tool is missing: say so, do not mask it
    path = data_root() / "tools" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"seg_tool_{module}", path)
    if spec is None or spec.loader is None:
        raise SegError(f"cannot load the {module} tool from {path}")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"seg {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name == "configs":
        print("\n".join(packaged_configs()))
        return 0
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; expected one of {list(COMMANDS)}", file=sys.stderr)
        return 2
    tool = load_tool(COMMANDS[name][0])
    sys.argv[0] = f"seg {name}"  # argparse names the program after it in usage and errors
    return importlib.import_module("seg.cli").run_tool(tool.main, rest)


if __name__ == "__main__":
    sys.exit(main())
