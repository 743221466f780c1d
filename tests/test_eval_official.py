"""Our mIoU against cityscapesscripts' pixel-level evaluator (the official reference), to 1e-6."""
import math
import os

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from seg.data.labels import CITYSCAPES, LabelSpace, default_palette
from seg.evaluation import Batch, PassContext, SegmentationEvaluator, build_eval_loader, run_inference
from seg.evaluation.official import PredictionWriter, cityscapes_gt_path, official_scores
from seg.evaluation.visualize import PanelWriter


def write_one(writer, path, labels, image, pred, target):
    """`writer` through a pass of one image (file `path`): reset, then process the batch of it."""
    writer.reset(PassContext(torch.device("cpu"), 0, 1, labels, "regular", [path], [0], str))
    if image is None:
        image = torch.zeros((1, 3) + tuple(pred.shape[1:]), dtype=torch.uint8)
    writer.process(Batch(image, pred[:, None].float(), pred, target, 0, [0]))


class RandomPairs(Dataset):
    """Random trainId targets (with ignore) and a fixed random prediction per image, Cityscapes-like names."""

    def __init__(self, n, h, w, seed, absent=()):
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(0, 19, (n, h, w), generator=g)
        self.targets[torch.rand(n, h, w, generator=g) < 0.15] = 255
        self.preds = torch.randint(0, 19, (n, h, w), generator=g)
        for c in absent:
            self.targets[self.targets == c] = 255
            self.preds[self.preds == c] = (c + 1) % 19
        self.image_paths = [f"/nowhere/leftImg8bit/val/city/city_{i:06d}_000019_leftImg8bit.png" for i in range(n)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.full((3,) + self.targets.shape[1:], float(i)), self.targets[i]


class Lookup(torch.nn.Module):
    """Returns one-hot logits of the stored prediction of the image whose pixels all equal its index."""

    def __init__(self, preds):
        super().__init__()
        self.preds = preds

    def forward(self, x):
        p = self.preds[x[:, 0, 0, 0].long()]
        return torch.nn.functional.one_hot(p, 19).permute(0, 3, 1, 2).float()




@pytest.mark.parametrize("absent", [(), (3, 17)])
def test_miou_equals_cityscapesscripts_on_random_predictions(tmp_path, absent):
    data = RandomPairs(3, 48, 96, seed=len(absent), absent=absent)
    writer = PredictionWriter(str(tmp_path))
    result = run_inference(Lookup(data.preds), build_eval_loader(data), None, [SegmentationEvaluator(), writer],
                           device="cpu", progress=False)
    official = official_scores(result.predictions)
    assert abs(result["mIoU"] - official["mIoU"]) / 100 < 1e-6
    names = result["class_names"]
    for name, ours in zip(names, result["IoU"]):
        theirs = official["IoU"][name]
        assert (math.isnan(ours) and math.isnan(theirs)) or abs(ours - theirs) / 100 < 1e-6
    assert sum(math.isnan(v) for v in result["IoU"]) == len(absent)
    # the confusion matrix also agrees entry by entry with the official one, mapped to trainIds
    from cityscapesscripts.helpers.labels import trainId2label
    raw = np.array(official["raw"]["confMatrix"])
    ids = [trainId2label[t].id for t in range(19)]
    np.testing.assert_array_equal(np.array(result["confusion_matrix"]), raw[np.ix_(ids, ids)])


def test_official_png_roundtrip_uses_label_ids(tmp_path):
    import cv2
    pred = torch.tensor([[0, 1, 18], [255, 7, 13]])
    writer = PredictionWriter(str(tmp_path))
    write_one(writer, "/x/leftImg8bit/val/c/c_0_0_leftImg8bit.png", CITYSCAPES, None, pred[None].clamp(max=18),
              pred[None])
    pred_png, gt_png = writer.pairs[0]
    assert os.path.basename(pred_png) == "c_0_0_pred_labelIds.png"
    np.testing.assert_array_equal(cv2.imread(pred_png, cv2.IMREAD_UNCHANGED), [[7, 8, 33], [33, 20, 26]])
    np.testing.assert_array_equal(cv2.imread(gt_png, cv2.IMREAD_UNCHANGED), [[7, 8, 33], [0, 20, 26]])
    gt = "/r/gtFine/val/c/c_0_0_gtFine_labelIds.png"
    assert cityscapes_gt_path("/r/leftImg8bit/val/c/c_0_0_leftImg8bit.png") == gt


def test_official_scores_reports_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing file"):
        official_scores([(str(tmp_path / "a.png"), str(tmp_path / "b.png"))])


def test_prediction_files_hold_class_indices_outside_cityscapes(tmp_path):
    import cv2

    labels = LabelSpace(("a", "b", "c"), default_palette(3))
    pred = torch.tensor([[[0, 1], [2, 1]]])
    target = torch.tensor([[[0, 255], [2, 2]]])
    writer = PredictionWriter(str(tmp_path))
    write_one(writer, "/x/images/street_7.jpg", labels, None, pred, target)
    pred_png, gt_png = writer.pairs[0]
    assert os.path.basename(pred_png) == "street_7_pred.png"  # no labelIds outside Cityscapes
    np.testing.assert_array_equal(cv2.imread(pred_png, cv2.IMREAD_UNCHANGED), [[0, 1], [2, 1]])
    np.testing.assert_array_equal(cv2.imread(gt_png, cv2.IMREAD_UNCHANGED), [[0, 255], [2, 2]])


def test_show_panel_has_titles_and_a_legend_in_the_label_spaces_colours(tmp_path):
    from PIL import Image

    palette = np.array([[250, 0, 0], [0, 0, 250], [0, 250, 0]], dtype=np.uint8)
    labels = LabelSpace(("red", "blue", "green"), palette)
    writer = PanelWriter(str(tmp_path))
    target = torch.tensor([[[0, 0, 1, 1]] * 4])
    image = torch.tensor([10, 200, 30], dtype=torch.uint8)[None, :, None, None].repeat(1, 1, 4, 120)
    write_one(writer, "/x/a.png", labels, image, torch.zeros(1, 4, 120, dtype=torch.long), target.repeat(1, 1, 30))
    panel = np.asarray(Image.open(tmp_path / "a_show.png").convert("RGB"))
    assert panel.shape[1] == 240 and panel.shape[0] > 2 * 4 + 2 * 10  # two titled rows and a legend strip
    assert (panel[20:24, :120] == [10, 200, 30]).all()  # the loader's uint8 image as it is, under its title
    with pytest.raises(ValueError, match="uint8"):  # a normalised float image cannot be drawn
        write_one(writer, "/x/a.png", labels, image.float(), torch.zeros(1, 4, 120, dtype=torch.long),
                  target.repeat(1, 1, 30))
    legend = panel[2 * (4 + 20):].reshape(-1, 3)
    for colour in ([250, 0, 0], [0, 0, 250]):  # classes present get a swatch, the absent one none
        assert (legend == colour).all(1).any()
    assert not (legend == [0, 250, 0]).all(1).any()
