"""Per-image statistics: naive numpy counts per image and region; their sums give the split's IoUs exactly."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from test_eval_tools import StoredPredictions  # one-hot logits of stored predictions (19 classes)

from seg.config import load_config
from seg.data import build_val_dataset
from seg.evaluation import SegmentationEvaluator, default_label_space, run_inference
from seg.evaluation.stats import load_image_stats, save_image_stats, sidecar_path
from seg.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEAVE_OUT, BANDS, K = [0.0, 0.5, 7 / 8], [0, 4, 8, 16], 19


def _naive_regions(h, w):
    """Boolean masks: whole image, the ring left by each centred leave-out (by side), each distance band."""
    rows, cols = np.mgrid[0:h, 0:w]
    masks = [np.ones((h, w), bool)]
    for p in LEAVE_OUT:
        bh, bw = int(np.floor(p * h + 0.5)), int(np.floor(p * w + 0.5))
        top, left = (h - bh) // 2, (w - bw) // 2
        inside = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
        masks.append(~inside)
    dist = np.minimum(np.minimum(rows, h - 1 - rows), np.minimum(cols, w - 1 - cols))
    for lo, hi in zip(BANDS, BANDS[1:] + [10 ** 9]):
        masks.append((dist >= lo) & (dist < hi))
    return masks


def _naive_counts(pred, truth):
    masks = _naive_regions(*truth.shape)
    out = np.zeros((3, len(masks), K), np.int64)
    valid = truth != 255
    for r, mask in enumerate(masks):
        m = mask & valid
        for c in range(K):
            out[0, r, c] = ((truth == c) & (pred == c) & m).sum()
            out[1, r, c] = ((pred == c) & m).sum()
            out[2, r, c] = ((truth == c) & m).sum()
    return out


def _iou(i, p, g):
    u = p + g - i
    return [100.0 * a / b if b > 0 else np.nan for a, b in zip(i.astype(float), u.astype(float))]


@pytest.fixture(scope="module")
def evaluated(demo_root):
    dataset = build_val_dataset({"root": demo_root})
    g = torch.Generator().manual_seed(0)
    preds = []
    for _, target in dataset:
        p = target.clone()
        noise = (torch.rand(p.shape, generator=g) < 0.4) | (p == 255)
        p[noise] = torch.randint(0, K, p.shape, generator=g)[noise]
        preds.append(p)
    preds = torch.stack(preds)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=False)  # batches of several images
    scores = SegmentationEvaluator(leave_out=LEAVE_OUT, distance_bands=BANDS, image_stats=True)
    result = run_inference(StoredPredictions(preds), loader, None, [scores], device="cpu",
                           labels=default_label_space(K), progress=False)
    truths = [t.numpy() for _, t in dataset]
    return result, preds.numpy(), truths


def test_per_image_counts_equal_naive_numpy(evaluated):
    result, preds, truths = evaluated
    stats = result.image_stats
    assert stats["regions"] == (["all"] + [f"leave_out {lab}" for lab in ("0", "1/2", "7/8")]
                                + ["band 0-4", "band 4-8", "band 8-16", "band 16+"])
    assert len(stats["images"]) == len(truths) and stats["images"][0].endswith("_leftImg8bit")
    for n, (pred, truth) in enumerate(zip(preds, truths)):
        naive = _naive_counts(pred, truth)
        for j, name in enumerate(("intersection", "prediction", "ground_truth")):
            assert (stats[name][n] == naive[j]).all(), (n, name)


def test_summed_counts_give_the_confusion_derived_ious(evaluated, tmp_path):
    result, _, _ = evaluated
    path = str(tmp_path / "eval.images.npz")
    save_image_stats(result.image_stats, path)
    stats = load_image_stats(path)
    total = {name: stats[name].sum(0) for name in ("intersection", "prediction", "ground_truth")}
    cm = np.array(result["confusion_matrix"])
    assert (total["intersection"][0] == np.diag(cm)).all()
    assert (total["prediction"][0] == cm.sum(0)).all() and (total["ground_truth"][0] == cm.sum(1)).all()
    rows = [result] + result["leave_out"]["results"] + result["distance_bands"]["results"]
    for r, row in enumerate(rows):
        iou = _iou(total["intersection"][r], total["prediction"][r], total["ground_truth"][r])
        np.testing.assert_allclose(iou, row["IoU"], rtol=0, atol=1e-9)
        assert np.nanmean(iou) == pytest.approx(row["mIoU"], abs=1e-9)


@pytest.mark.slow
def test_eval_tool_writes_the_sidecar(demo_root, tmp_path):
    config = os.path.join(ROOT, "configs", "demo", "deeplabv3plus_r18_zeros.yaml")
    cfg = load_config(config)
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pth"
    torch.save({"model": build_model(cfg["model"]).state_dict(), "config": cfg, "meta": {}}, ckpt)
    spec = importlib.util.spec_from_file_location("eval_tool", os.path.join(ROOT, "tools", "eval.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([config, str(ckpt), "--mode", "regular,tile", "--tile-size", "64", "--leave-out", "0,1/3",
               "--distance-bands", "0,8", "--out", str(tmp_path / "res_{mode}.json"), "--num-workers", "0",
               "--device", "cpu", "--opts", f"data.root={demo_root}"])
    assert json.loads((tmp_path / "res_tile.json").read_text())["settings"]["mode"] == "tile"
    out = tmp_path / "res_regular.json"
    res = json.loads(out.read_text())
    stats = load_image_stats(sidecar_path(str(out)))
    assert res["image_stats"] == os.path.basename(sidecar_path(str(out))) and res["train_seed"] == 0
    assert stats["intersection"].shape == (4, 5, K)
    assert (stats["ground_truth"].sum(0)[0] == np.array(res["confusion_matrix"]).sum(1)).all()
