"""Cross-testing (the paper's Table 4, generalised): every (trained padding, evaluated padding) pair.

    python tools/cross_test.py CONFIG CKPT_A CKPT_B ... [--paddings zeros,partial,reflect,replicate]
        [--mode regular] [--out-dir DIR] [--opts data.root=...]

The data and eval sections come from CONFIG; each checkpoint's model section comes from the config
stored in it (so checkpoints of different encoders can be mixed), falling back to CONFIG's. The same
weights are switched in place to each padding with seg.nn.convert_padding and evaluated.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg.evaluation import build_eval_loader, evaluate  # noqa: E402
from seg.evaluation.runner import eval_options, load_model_for_eval, write_results  # noqa: E402

PADDINGS = ("zeros", "partial", "reflect", "replicate")


def fmt(v) -> str:
    return "-" if v is None or v != v else f"{v:.2f}"


def table(rows: list[dict], paddings: list[str]) -> str:
    """Markdown: one row per checkpoint, one column per evaluated padding, plus the loss off-diagonal."""
    header = ["checkpoint (trained padding)"] + [f"eval {p}" for p in paddings]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        own = row["mIoU"].get(row["trained_padding"])
        cells = []
        for p in paddings:
            v = row["mIoU"].get(p)
            mark = "**" if p == row["trained_padding"] else ""
            delta = f" ({v - own:+.2f})" if own is not None and v is not None and p != row["trained_padding"] else ""
            cells.append(f"{mark}{fmt(v)}{mark}{delta}")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    notes = [f"- {row['label']} with {p}: not run ({why})" for row in rows for p, why in row["not_run"].items()]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--paddings", default=",".join(PADDINGS))
    p.add_argument("--mode", choices=("regular", "tile", "overlap"))
    p.add_argument("--tile-size", type=int)
    p.add_argument("--split")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--num-workers", type=int)
    p.add_argument("--out-dir", default="work_dirs/cross_test")
    p.add_argument("--opts", nargs="*", default=[])
    args = p.parse_args(argv)
    paddings = [s.strip() for s in args.paddings.split(",") if s.strip()]
    bad = [s for s in paddings if s not in PADDINGS]
    if bad:
        raise SystemExit(f"cross_test: unknown padding(s) {bad}; expected some of {PADDINGS}")

    from seg.config import load_config
    from seg.data import build_val_dataset
    from seg.engine.checkpoint import load_checkpoint
    from seg.engine.distributed import cleanup_distributed, init_distributed
    from seg.nn import convert_padding

    cfg = load_config(args.config, args.opts)
    info = init_distributed(args.device)
    opts = eval_options(cfg["eval"])
    opts.update({k: v for k, v in (("mode", args.mode), ("tile_size", args.tile_size)) if v is not None})
    dataset = build_val_dataset(cfg["data"], args.split)
    workers = cfg["data"]["num_workers"] if args.num_workers is None else args.num_workers
    loader = build_eval_loader(dataset, num_workers=workers)
    rows, details = [], []
    for path in args.checkpoints:
        run_cfg = copy.deepcopy(cfg)
        ckpt = load_checkpoint(path)
        stored = (ckpt.get("config") or {}).get("model")
        if stored:
            run_cfg["model"].update(stored)
        model, minfo = load_model_for_eval(run_cfg, path, None, info.device, loaded=ckpt)
        del ckpt
        row = {"checkpoint": minfo["checkpoint"], "trained_padding": minfo["trained_padding"],
               "label": f"{os.path.basename(path)} ({minfo['encoder']}, {minfo['trained_padding']})", "mIoU": {},
               "not_run": {}}
        for padding in paddings:
            convert_padding(model, padding)
            try:
                result = evaluate(model, loader, run_cfg["model"]["num_classes"], info.device, **opts)
            except ValueError as err:  # e.g. reflect padding wider than a small feature map: report, go on
                row["mIoU"][padding] = None
                row["not_run"][padding] = str(err)
                print(f"{row['label']} cannot run with {padding} padding: {err}")
                continue
            row["mIoU"][padding] = result["mIoU"]
            result.update(minfo, eval_padding=padding)
            result.pop("confusion_matrix", None)
            details.append(result)
            if info.is_main:
                print(f"{row['label']} evaluated with {padding}: mIoU {result['mIoU']:.2f}")
        rows.append(row)
    summary = {"mode": opts["mode"], "paddings": paddings, "rows": rows, "runs": details}
    if info.is_main:
        os.makedirs(args.out_dir, exist_ok=True)
        text = (f"### Cross-testing: mIoU ({opts['mode']} inference), rows = trained padding, columns = padding "
                f"at test time; bold = as trained, (±) = change from it\n\n{table(rows, paddings)}\n")
        with open(os.path.join(args.out_dir, "cross_test.md"), "w") as f:
            f.write(text)
        write_results(summary, os.path.join(args.out_dir, "cross_test.json"))
        print(text)
        print(f"written to {args.out_dir}/cross_test.md and cross_test.json")
    cleanup_distributed()
    return summary


if __name__ == "__main__":
    main()
