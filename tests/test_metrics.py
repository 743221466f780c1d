"""Confusion matrix, IoU, leave-out masks and distance bands against naive float64 references."""
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from seg.config import ConfigError
from seg.evaluation import (
    ConfusionAccumulator,
    InferenceSettings,
    SegmentationEvaluator,
    border_distance,
    centre_leave_out_mask,
    confusion_matrix,
    default_label_space,
    distance_band_index,
    run_inference,
    scores_from_confusion,
)


def naive_confusion(pred, target, k, ignore=255):
    cm = np.zeros((k, k), dtype=np.int64)
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
        if t != ignore:
            cm[t, p] += 1
    return cm


def naive_miou(cm):
    ious = []
    for c in range(cm.shape[0]):
        tp = float(cm[c, c])
        denom = cm[c, :].sum() + cm[:, c].sum() - tp
        if denom > 0:
            ious.append(tp / denom)
    return 100.0 * sum(ious) / len(ious), 100.0 * np.trace(cm) / cm.sum()


def naive_macc_fwiou(cm):
    """Mean per-class accuracy over classes in the truth, and IoU weighted by truth frequency (FCN paper)."""
    accs, fw = [], 0.0
    total = cm.sum()
    for c in range(cm.shape[0]):
        truth = cm[c, :].sum()
        if truth > 0:
            accs.append(cm[c, c] / truth)
            fw += truth / total * cm[c, c] / (truth + cm[:, c].sum() - cm[c, c])
    return 100.0 * sum(accs) / len(accs), 100.0 * fw


def random_pair(shape, k, seed, ignore_frac=0.1):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignore_frac] = 255
    pred = torch.randint(0, k, shape, generator=g)
    return pred, target


def test_confusion_matrix_matches_naive_loop():
    pred, target = random_pair((2, 13, 17), 6, seed=1)
    cm = confusion_matrix(pred, target, 6)
    np.testing.assert_array_equal(cm.numpy(), naive_confusion(pred.numpy(), target.numpy(), 6))


def test_region_confusion_matrices_split_the_total():
    pred, target = random_pair((9, 11), 4, seed=2)
    region = torch.randint(0, 3, (9, 11), generator=torch.Generator().manual_seed(3))
    cms = confusion_matrix(pred, target, 4, region=region, num_regions=3)
    for r in range(3):
        t = target.clone()
        t[region != r] = 255
        np.testing.assert_array_equal(cms[r].numpy(), naive_confusion(pred.numpy(), t.numpy(), 4))


def test_scores_match_naive_formula_and_skip_absent_classes():
    pred, target = random_pair((40, 50), 7, seed=4)
    pred[pred == 6] = 0
    target[target == 6] = 1  # class 6 absent from truth and prediction: undefined, not averaged
    s = scores_from_confusion(confusion_matrix(pred, target, 7))
    miou, acc = naive_miou(naive_confusion(pred.numpy(), target.numpy(), 7))
    assert math.isnan(s["IoU"][6])
    assert s["mIoU"] == pytest.approx(miou, abs=1e-9)
    assert s["pixel_acc"] == pytest.approx(acc, abs=1e-9)


def test_out_of_range_target_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.zeros(3, 3, dtype=torch.long), torch.full((3, 3), 20), 19)  # between K and 255
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.zeros(3, 3, dtype=torch.long), torch.full((3, 3), -1), 19)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.zeros(3, 3, dtype=torch.long), torch.full((3, 3), 256), 19)
    with pytest.raises(ValueError, match="prediction holds"):
        confusion_matrix(torch.full((3, 3), 19), torch.zeros(3, 3, dtype=torch.long), 19)


@pytest.mark.parametrize("h,w", [(64, 128), (37, 53), (10, 7), (1024, 2048)])
@pytest.mark.parametrize("p", [0.0, 1 / 3, 0.5, 2 / 3, 0.75, 7 / 8, 1.0])
@pytest.mark.parametrize("by", ["side", "area"])
def test_leave_out_scored_pixels_follow_formula(h, w, p, by):
    f = p if by == "side" else math.sqrt(p)
    bh, bw = math.floor(f * h + 0.5), math.floor(f * w + 0.5)  # documented rule: round half up
    mask = centre_leave_out_mask(h, w, p, by)
    assert int(mask.sum()) == h * w - bh * bw
    if bh and bw:  # the blanked block is centred: top = (H - h) // 2, left = (W - w) // 2
        rows = torch.nonzero(~mask.any(1) | ~mask.all(1)).flatten()
        cols = torch.nonzero(~mask.all(0)).flatten()
        assert int(rows.min()) == (h - bh) // 2 and int(rows.max()) == (h - bh) // 2 + bh - 1
        assert int(cols.min()) == (w - bw) // 2 and int(cols.max()) == (w - bw) // 2 + bw - 1


def test_leave_out_rounding_half_up_on_small_image():
    # 10 x 7, p = 1/2 by side: 5 x 3.5 -> 5 x 4 blanked at rows 2..6, cols 1..4
    expected = np.ones((10, 7), dtype=bool)
    expected[2:7, 1:5] = False
    np.testing.assert_array_equal(centre_leave_out_mask(10, 7, 0.5, "side").numpy(), expected)
    with pytest.raises(ValueError, match="side' or 'area"):
        centre_leave_out_mask(10, 7, 0.5, "diagonal")


def test_border_distance_and_bands_exact_on_small_image():
    expected_d = np.array([[0, 0, 0, 0, 0, 0],
                           [0, 1, 1, 1, 1, 0],
                           [0, 1, 2, 2, 1, 0],
                           [0, 1, 1, 1, 1, 0],
                           [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(border_distance(5, 6).numpy(), expected_d)
    np.testing.assert_array_equal(distance_band_index(5, 6, [0, 1, 2]).numpy(), expected_d)
    np.testing.assert_array_equal(distance_band_index(5, 6, [0, 2]).numpy(), (expected_d >= 2).astype(int))
    bands = distance_band_index(40, 50, [0, 4, 8, 16]).numpy()
    for i in range(40):
        for j in range(50):
            d = min(i, j, 39 - i, 49 - j)
            assert bands[i, j] == (0 if d < 4 else 1 if d < 8 else 2 if d < 16 else 3)
    with pytest.raises(ValueError, match="distance_bands"):
        distance_band_index(5, 6, [1, 4])


def evaluate(model, loader, k, settings=None, **analysis):
    """One pass of `model` over `loader` scored by a SegmentationEvaluator with `analysis`, k classes."""
    return run_inference(model, loader, settings, [SegmentationEvaluator(**analysis)], device="cpu",
                         labels=default_label_space(k), progress=False)


class FixedPredictions(torch.nn.Module):
    """Returns one-hot logits of the prediction stored for each call, so evaluate() scores known labels."""

    def __init__(self, preds, k):
        super().__init__()
        self.preds, self.k, self.i = preds, k, 0

    def forward(self, x):
        p = self.preds[self.i:self.i + x.shape[0]]
        self.i += x.shape[0]
        return torch.nn.functional.one_hot(p, self.k).permute(0, 3, 1, 2).float()


def test_evaluate_leave_out_and_bands_equal_masked_references():
    k, n, h, w = 5, 3, 24, 40
    pred, target = random_pair((n, h, w), k, seed=7)
    leave_out, bands = [0.0, 1 / 3, 0.5, 7 / 8], [0, 3, 6, 10]
    loader = DataLoader(TensorDataset(torch.zeros(n, 3, h, w), target), batch_size=2)
    r = evaluate(FixedPredictions(pred, k), loader, k, leave_out=leave_out, leave_out_by="area",
                 distance_bands=bands)
    miou, acc = naive_miou(naive_confusion(pred.numpy(), target.numpy(), k))
    assert r["mIoU"] == pytest.approx(miou, abs=1e-9) and r["pixel_acc"] == pytest.approx(acc, abs=1e-9)
    macc, fwiou = naive_macc_fwiou(naive_confusion(pred.numpy(), target.numpy(), k))
    assert r["mAcc"] == pytest.approx(macc, abs=1e-9) and r["fwIoU"] == pytest.approx(fwiou, abs=1e-9)
    assert r["num_images"] == n and r["leave_out"]["by"] == "area" and "sqrt" in r["leave_out"]["meaning"]
    for p, row in zip(leave_out, r["leave_out"]["results"]):
        t = target.clone()
        t[:, ~centre_leave_out_mask(h, w, p, "area")] = 255
        ref = naive_confusion(pred.numpy(), t.numpy(), k)
        assert row["scored_pixels"] == ref.sum()
        assert row["mIoU"] == pytest.approx(naive_miou(ref)[0], abs=1e-9)
    d = np.minimum(np.minimum(np.arange(h)[:, None], np.arange(w)[None]),
                   np.minimum(h - 1 - np.arange(h)[:, None], w - 1 - np.arange(w)[None]))
    edges = bands + [10 ** 9]
    for i, row in enumerate(r["distance_bands"]["results"]):
        t = target.clone()
        t[:, torch.from_numpy(~((d >= edges[i]) & (d < edges[i + 1])))] = 255
        ref = naive_confusion(pred.numpy(), t.numpy(), k)
        assert row["pixels"] == ref.sum()
        assert row["mIoU"] == pytest.approx(naive_miou(ref)[0], abs=1e-9)


def test_leave_out_by_both_scores_each_reading_from_one_pass_as_separate_passes_do():
    """One pass under "both" gives the side and the area readings: each equals its own pass and the masked
    float64 reference, and the per-image counts name both readings' regions."""
    k, n, h, w = 4, 3, 20, 36
    pred, target = random_pair((n, h, w), k, seed=11)
    leave_out = [0.0, 0.5, 7 / 8]
    loader = DataLoader(TensorDataset(torch.zeros(n, 3, h, w), target), batch_size=2)
    model = FixedPredictions(pred, k)
    both = evaluate(model, loader, k, leave_out=leave_out, leave_out_by="both", image_stats=True)
    for key, by in (("leave_out", "side"), ("leave_out_area", "area")):
        model.i = 0
        alone = evaluate(model, loader, k, leave_out=leave_out, leave_out_by=by)["leave_out"]
        assert both[key] == alone
        for p, row in zip(leave_out, both[key]["results"]):
            t = target.clone()
            t[:, ~centre_leave_out_mask(h, w, p, by)] = 255
            ref = naive_confusion(pred.numpy(), t.numpy(), k)
            assert row["scored_pixels"] == ref.sum() and row["mIoU"] == pytest.approx(naive_miou(ref)[0], abs=1e-9)
    # at 7/8 the side reading scores 1 - (7/8)^2 of the pixels (up to rounding), the area reading 1/8
    side, area = (both[key]["results"][2]["scored_pixels"] for key in ("leave_out", "leave_out_area"))
    assert side > area
    assert both.image_stats["regions"] == ["all", "leave_out 0", "leave_out 1/2", "leave_out 7/8",
                                           "leave_out_area 0", "leave_out_area 1/2", "leave_out_area 7/8"]
    assert both.image_stats["intersection"].shape[1] == 7


def test_evaluate_restores_training_mode_and_rejects_unknown_mode():
    model = torch.nn.Conv2d(3, 4, 1).train()
    loader = DataLoader(TensorDataset(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)))
    evaluate(model, loader, 4)
    assert model.training
    with pytest.raises(ConfigError, match="unknown inference mode 'sliding'"):
        evaluate(model, loader, 4, InferenceSettings(mode="sliding"))
    with pytest.raises(ConfigError, match="unknown inference mode 'tile_overlap'"):  # no alias: one spelling
        InferenceSettings.from_config({"mode": "tile_overlap"})
    with pytest.raises(ValueError, match="leave_out_by"):
        evaluate(model, loader, 4, leave_out=[0.5], leave_out_by="diagonal")
    with pytest.raises(ValueError, match="at most 16"):
        evaluate(model, loader, 4, leave_out=[i / 20 for i in range(17)])
    with pytest.raises(ValueError, match="at most 16"):  # both readings: two regions per proportion
        evaluate(model, loader, 4, leave_out=[i / 20 for i in range(9)], leave_out_by="both")


def test_accumulator_and_scores_match_naive_numpy():
    k = 6
    acc = ConfusionAccumulator(k)
    preds, targets = [], []
    for seed in range(3):  # absent class 5 in the truth: Acc NaN, left out of mAcc
        pred, target = random_pair((9, 11), k, seed=seed)
        target[target == 5] = 255
        acc.update(pred, target)
        preds.append(pred.numpy())
        targets.append(target.numpy())
    ref = naive_confusion(np.stack(preds), np.stack(targets), k)
    np.testing.assert_array_equal(acc.matrices[0].numpy(), ref)
    assert acc.updates == 3
    acc.all_reduce()  # no process group: unchanged
    r = acc.result()
    miou, pixel_acc = naive_miou(ref)
    macc, fwiou = naive_macc_fwiou(ref)
    assert r["mIoU"] == pytest.approx(miou, abs=1e-9) and r["pixel_acc"] == pytest.approx(pixel_acc, abs=1e-9)
    assert r["mAcc"] == pytest.approx(macc, abs=1e-9) and r["fwIoU"] == pytest.approx(fwiou, abs=1e-9)
    assert math.isnan(r["Acc"][5]) and r["Acc"][0] == pytest.approx(100.0 * ref[0, 0] / ref[0].sum())
