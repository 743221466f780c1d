"""Export a trained checkpoint as ONNX (any input height and width) or as a weights-only state dict.

    seg export CHECKPOINT --format onnx --out model.onnx [--padding partial] [--size 128x256]
    seg export CHECKPOINT --format weights --out weights.pth

The model (encoder, classes, output stride, padding) is rebuilt from the config stored in the checkpoint, as
`seg eval` does; ``--padding`` runs the weights under another padding mode. Afterwards the export is
checked against the eager model on random images and the max abs difference is printed: ONNX with
onnxruntime when it is installed, else with onnx's reference evaluator (slow: small images only; skipped
with a message when onnx is missing or for images over REFERENCE_MAX_PIXELS); weights by reloading them into
a freshly built model. ONNX input: ``image`` (batch, 3, height, width) float32, normalised as in training
(``(rgb / 255 - mean) / std``); output: ``logits`` (batch, num_classes, height, width); the dynamic axes are
named ``batch``, ``height`` and ``width``. The file's metadata (``metadata_props``) carries what a runtime needs
beside it, as JSON strings: ``class_names``, ``palette`` (RGB per class), ``mean`` and ``std`` (of
``rgb / 255``), ``input`` (that formula), ``padding`` and ``seg_version``. ONNX export needs onnx and onnxscript
(``pip install 'partialpad-seg[onnx]'``, which brings onnxruntime for the check too). ``--debug`` shows
tracebacks.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from typing import cast

import numpy as np
import torch

from seg import __version__
from seg.atomic import atomic_open
from seg.cli import run_tool, tool_parser
from seg.engine.checkpoint import load_checkpoint
from seg.errors import SegError
from seg.evaluation.runner import labels_for, load_model_for_eval, run_config
from seg.nn import PADDING_MODES

FORMATS = ("onnx", "weights")
#: onnx's reference evaluator runs numpy loops: beyond this many pixels per check image it takes minutes
REFERENCE_MAX_PIXELS = 128 * 128
#: what torch's ONNX exporter imports; missing ones are named with the extra that installs them
ONNX_EXPORT_MODULES = ("onnx", "onnxscript")
INSTALL_HINT = "pip install 'partialpad-seg[onnx]' (onnx, onnxscript, onnxruntime)"
#: names of the dynamic axes of the input and output, by dimension
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


class ExportError(SegError, RuntimeError):
    """An export that could not be written or does not reproduce the eager model."""


def parse_size(text: str) -> tuple[int, int]:
    """"HxW" -> (H, W)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size: expected HxW such as 128x256, got {text!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"--size: both sides must be positive, got {text!r}")
    return height, width


def check_sizes(size: tuple[int, int]) -> list[tuple[int, int]]:
    """The traced size and one other, so that a graph fixed to the traced size fails the check."""
    return [size, (size[0] + 8, size[1] + 24)]


def onnx_metadata(cfg: dict, class_names: tuple[str, ...], palette: np.ndarray, padding: str) -> dict[str, str]:
    """The ONNX file's metadata_props: JSON strings a runtime needs to feed the graph and show its output."""
    return {"class_names": json.dumps(list(class_names)), "palette": json.dumps(palette.tolist()),
            "mean": json.dumps(list(cfg["data"]["mean"])), "std": json.dumps(list(cfg["data"]["std"])),
            "input": "float32 (batch, 3, height, width) RGB: (rgb / 255 - mean) / std", "padding": padding,
            "seg_version": __version__}


def export_onnx(model: torch.nn.Module, size: tuple[int, int], path: str,
                metadata: dict[str, str] | None = None) -> None:
    """Write ``model`` (eval mode, CPU) as ONNX with dynamic batch, height and width (named by DYNAMIC_AXES),
    traced at ``size``, with ``metadata`` as its metadata_props. ExportError with the install hint when the
    exporter's packages are missing."""
    missing = [name for name in ONNX_EXPORT_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"{path}: ONNX export needs {' and '.join(missing)}, not installed: {INSTALL_HINT}")
    from torch.export import Dim  # torch.export is heavy and only needed here

    sample = torch.randn(1, 3, *size)
    dims = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress chatter, not problems of the model
        try:
            program = torch.onnx.export(model, (sample,), dynamo=True, verbose=False, input_names=["image"],
                                        output_names=["logits"], dynamic_shapes=(dims,))
        except Exception as err:  # the exporter raises many types; one line naming the file is what helps
            raise ExportError(f"{path}: ONNX export failed: {' '.join(str(err).split())[:400]}") from err
    if program is None:  # only torch's older TorchScript exporter returns nothing
        raise ExportError(f"{path}: the ONNX exporter returned no program")
    proto = program.model_proto
    _name_dynamic_axes(proto)
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    with atomic_open(path, "wb") as f:
        f.write(proto.SerializeToString())


def _name_dynamic_axes(proto) -> None:
    """Rename the exporter's symbolic dims (``s0``, ...) of the input's DYNAMIC_AXES to their names, wherever
    they appear (inputs, outputs, intermediate shapes), so that the file says ``batch``/``height``/``width``."""
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    rename = {dims[i].dim_param: name for i, name in DYNAMIC_AXES.items() if dims[i].dim_param}
    for info in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


def onnx_runner(path: str, size: tuple[int, int]):
    """``(run(images) -> logits, name)`` for the ONNX file, or ``(None, why)`` when it cannot be run here."""
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime  # optional dependency

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return (lambda images: session.run(None, {"image": images})[0]), "onnxruntime"
    if importlib.util.find_spec("onnx") is None:
        return None, "neither onnxruntime nor onnx is installed"
    if max(h * w for h, w in check_sizes(size)) > REFERENCE_MAX_PIXELS:
        return None, (f"onnxruntime is not installed and onnx's reference evaluator is too slow for {size[0]}x"
                      f"{size[1]} images (pip install onnxruntime, or --size 64x96)")
    from onnx.reference import ReferenceEvaluator  # optional dependency

    evaluator = ReferenceEvaluator(path)
    # typed as returning a dict in onnx's annotations; it returns the list of outputs
    return (lambda images: cast(list, evaluator.run(None, {"image": images}))[0]), "onnx reference evaluator"


def max_abs_diff(run, model: torch.nn.Module, size: tuple[int, int]) -> tuple[float, float]:
    """(largest |run(x) - model(x)|, largest |model(x)|) over random images of the check sizes (batch 2: the
    batch is dynamic too); the second puts the first in scale (float32 rounding grows with the logits)."""
    generator = torch.Generator().manual_seed(0)
    worst = scale = 0.0
    for height, width in check_sizes(size):
        images = torch.randn(2, 3, height, width, generator=generator)
        with torch.no_grad():
            want = model(images).numpy()
            got = np.asarray(run(images.numpy()))
        if got.shape != want.shape:
            raise ExportError(f"export gives shape {got.shape} for {tuple(images.shape)}, eager {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
        scale = max(scale, float(np.abs(want).max()))
    return worst, scale


def main(argv=None) -> dict:
    p = tool_parser(__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--padding", choices=PADDING_MODES, help="padding to export with (default: as trained)")
    p.add_argument("--size", type=parse_size, default=(64, 96), help="HxW the ONNX graph is traced at and checked "
                   "at (with one other size); any size runs afterwards (default 64x96)")
    args = p.parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = run_config(args.checkpoint, None, (), loaded=ckpt)
    model, info = load_model_for_eval(cfg, args.checkpoint, args.padding, "cpu", loaded=ckpt)
    result = {"out": args.out, "format": args.format, "padding": info["eval_padding"], "max_abs_diff": None,
              "max_abs_logit": None}
    if args.format == "weights":
        with atomic_open(args.out, "wb") as f:
            torch.save(model.state_dict(), f)
        reloaded, _ = load_model_for_eval(cfg, args.checkpoint, args.padding, "cpu", loaded=ckpt)
        del ckpt
        reloaded.load_state_dict(torch.load(args.out, map_location="cpu", weights_only=True))
        result["checked_with"] = "a fresh model loading the file"
        result["max_abs_diff"], result["max_abs_logit"] = max_abs_diff(
            lambda images: reloaded(torch.from_numpy(images)).numpy(), model, args.size)
    else:
        del ckpt
        labels = labels_for(cfg["data"], info["num_classes"], args.checkpoint)
        metadata = onnx_metadata(cfg, labels.class_names, labels.palette, info["eval_padding"])
        export_onnx(model, args.size, args.out, metadata)
        run, result["checked_with"] = onnx_runner(args.out, args.size)
        if run is not None:
            result["max_abs_diff"], result["max_abs_logit"] = max_abs_diff(run, model, args.size)
    print(f"wrote {args.out} ({args.format}, {info['encoder']}, {result['padding']} padding)")
    if result["max_abs_diff"] is None:
        print(f"parity check skipped: {result['checked_with']}")
    else:
        print(f"parity with the eager model ({result['checked_with']}): max abs diff {result['max_abs_diff']:.3g} "
              f"(largest |logit| {result['max_abs_logit']:.3g})")
    return result


if __name__ == "__main__":
    sys.exit(run_tool(main))
