"""Segment images that have no labels: class-index PNGs and colour overlays with a class legend.

    seg predict CHECKPOINT IMAGE_OR_FOLDER_OR_GLOB ... --out DIR
        [--mode regular|tile|overlap --tile-size 1024 --overlap 1/3] [--scales 0.75,1.0,1.25] [--flip]
        [--padding partial] [--device cuda] [--no-overlay] [--config CFG] [--opts key=value ...]

Per image, DIR gets ``<name>.png`` (uint8: Cityscapes labelIds for a Cityscapes model, the class index
otherwise) and ``<name>_overlay.png``; <name> keeps the image's path below the inputs' common folder, and
its extension too where names would collide (``scene.png`` and ``scene.jpg`` -> ``scene.png.png`` and
``scene.jpg.png``). Nothing inside DIR is read as an input: a second run does not segment the first one's output.
The model, normalisation, classes and inference defaults come from the config stored in the checkpoint.
Runs on the GPU when there is one. ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import sys

from seg.cli import add_device_args, fraction_arg, positive_int, run_tool, scales_arg, tool_parser
from seg.evaluation.inference import MODES
from seg.evaluation.predict import predict
from seg.nn import PADDING_MODES
from seg.resources import resolve_config


def main(argv=None) -> list:
    p = tool_parser(__doc__)
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--mode", choices=MODES, help="default: the config's eval.mode")
    p.add_argument("--tile-size", type=positive_int)
    p.add_argument("--overlap", type=fraction_arg, help="e.g. 1/3")
    p.add_argument("--scales", type=scales_arg, help="e.g. 0.75,1.0,1.25")
    p.add_argument("--flip", action="store_true", default=None)
    p.add_argument("--padding", choices=PADDING_MODES, help="run the weights under this padding (default: as trained)")
    add_device_args(p, indexed=True, workers=False)
    p.add_argument("--no-overlay", action="store_true", help="write the class-index PNGs only")
    p.add_argument("--config", type=resolve_config,
                   help="YAML config or a shipped config by name, instead of the checkpoint's own")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (values are YAML)")
    args = p.parse_args(argv)
    results = predict(args.checkpoint, args.inputs, args.out, mode=args.mode, tile_size=args.tile_size,
                      overlap=args.overlap, scales=args.scales, flip=args.flip, padding_mode=args.padding,
                      device=args.device, config=args.config, opts=args.opts, overlays=not args.no_overlay)
    print(f"{len(results)} image(s) segmented, written to {args.out}")
    return results


if __name__ == "__main__":
    sys.exit(run_tool(main))
