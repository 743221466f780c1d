"""End-to-end evaluation on the demo val set: cityscapesscripts parity, tools/eval.py, bad input."""
import glob
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from conftest import save_demo_checkpoint

from seg.cli import run_tool
from seg.data import build_val_dataset
from seg.engine.checkpoint import CheckpointError
from seg.errors import ResultFileError
from seg.evaluation import SegmentationEvaluator, build_eval_loader, run_inference
from seg.evaluation.evaluators import OutputFolderError, output_folder, prepare_output_folder
from seg.evaluation.official import PredictionWriter, official_scores
from seg.evaluation.runner import ArchitectureMismatch
from seg.evaluation.visualize import colorize, error_map

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "deeplabv3plus_r18_zeros.yaml")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StoredPredictions(torch.nn.Module):
    """Returns one-hot logits of stored predictions, in loader order."""

    def __init__(self, preds):
        super().__init__()
        self.preds, self.i = preds, 0

    def forward(self, x):
        p = self.preds[self.i:self.i + x.shape[0]]
        self.i += x.shape[0]
        return torch.nn.functional.one_hot(p, 19).permute(0, 3, 1, 2).float()


def test_miou_equals_cityscapesscripts_on_demo_val(demo_root, tmp_path):
    dataset = build_val_dataset({"root": demo_root})
    g = torch.Generator().manual_seed(0)
    preds = []
    for _, target in dataset:  # ground truth with 30% of pixels replaced by random classes
        p = target.clone()
        noise = torch.rand(p.shape, generator=g) < 0.3
        p[noise | (p == 255)] = torch.randint(0, 19, p.shape, generator=g)[noise | (p == 255)]
        preds.append(p)
    result = run_inference(StoredPredictions(torch.stack(preds)), build_eval_loader(dataset), None,
                           [SegmentationEvaluator(), PredictionWriter(str(tmp_path))], device="cpu", progress=False)
    gts = [gt for _, gt in result.predictions]
    assert all(gt.endswith("_gtFine_labelIds.png") and gt.startswith(demo_root) for gt in gts)  # the real files
    official = official_scores(result.predictions)
    assert 5 < result["mIoU"] < 100
    assert abs(result["mIoU"] - official["mIoU"]) / 100 < 1e-6
    for name, ours in zip(result["class_names"], result["IoU"]):
        theirs = official["IoU"][name]
        assert (np.isnan(ours) and np.isnan(theirs)) or abs(ours - theirs) / 100 < 1e-6


@pytest.fixture(scope="module")
def r18_checkpoint(tmp_path_factory):
    return save_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "r18_zeros.pth")


@pytest.mark.slow
def test_eval_tool_end_to_end(demo_root, r18_checkpoint, tmp_path):
    out = tmp_path / "res.json"
    load_tool("eval").main([CONFIG, r18_checkpoint, "--mode", "tile", "--tile-size", "64", "--official",
                            "--padding", "partial", "--leave-out", "0,1/2,7/8", "--leave-out-by", "area",
                            "--show-dir", str(tmp_path / "show"), "--out", str(out), "--num-workers", "0",
                            "--device", "cpu", "--opts", f"data.root={demo_root}"])
    res = json.loads(out.read_text())
    assert res["settings"]["mode"] == "tile" and res["num_images"] == 4
    assert res["trained_padding"] == "zeros" and res["eval_padding"] == "partial"
    assert res["official"]["abs_diff_mIoU"] < 1e-4
    assert [r["label"] for r in res["leave_out"]["results"]] == ["0", "1/2", "7/8"]
    assert "area" in res["leave_out"]["meaning"] and "floor" in res["leave_out"]["rounding"]
    assert res["leave_out"]["results"][0]["scored_pixels"] == res["pixels"]
    assert len(os.listdir(tmp_path / "show")) == 4


@pytest.mark.slow
def test_eval_tool_bad_inputs(demo_root, r18_checkpoint, tmp_path):
    tool = load_tool("eval")
    common = ["--num-workers", "0", "--device", "cpu", "--out", str(tmp_path / "r.json")]
    data = ["--opts", f"data.root={demo_root}"]
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="nope.pth"):
        tool.main([CONFIG, missing] + common + data)
    with pytest.raises(ArchitectureMismatch, match="r18_zeros.pth"):
        tool.main([CONFIG, r18_checkpoint] + common + data + ["model.encoder=resnet34"])
    with pytest.raises(ArchitectureMismatch, match="r18_zeros.pth"):
        tool.main([CONFIG, r18_checkpoint] + common + data + ["model.num_classes=7"])
    with pytest.raises(ValueError, match="tile size 96 is larger than the image"):
        tool.main([CONFIG, r18_checkpoint, "--mode", "tile", "--tile-size", "96"] + common + data)
    with pytest.raises(SystemExit):
        tool.main([CONFIG, r18_checkpoint, "--mode", "sliding"] + common + data)


def test_output_folders_per_mode_and_moved_aside(tmp_path):
    assert output_folder("out/{mode}/pred", "tile", several=True) == "out/tile/pred"
    assert output_folder("out", "tile", several=True) == os.path.join("out", "tile")
    assert output_folder("out", "tile", several=False) == "out"
    folder = tmp_path / "pred"
    assert prepare_output_folder(str(folder)) is None  # absent: nothing to do
    folder.mkdir()
    assert prepare_output_folder(str(folder)) is None  # empty: nothing to lose
    (folder / "a.png").write_bytes(b"x")
    with pytest.raises(OutputFolderError, match=f"{folder}: output folder already holds files; pass --overwrite"):
        prepare_output_folder(str(folder))
    for n, aside in enumerate((f"{folder}.old", f"{folder}.old-1")):
        assert prepare_output_folder(str(folder), overwrite=True) == aside
        assert not folder.exists() and (tmp_path / os.path.basename(aside) / "a.png").read_bytes() == b"x"
        if n == 0:
            folder.mkdir()
            (folder / "a.png").write_bytes(b"x")


@pytest.mark.slow
def test_eval_tool_keeps_the_files_of_every_mode(demo_root, r18_checkpoint, tmp_path, capsys):
    """--save-pred / --show-dir with several modes: one folder per mode, none overwritten silently."""
    pred, show = tmp_path / "pred", tmp_path / "show"
    argv = [r18_checkpoint, "--mode", "regular,tile", "--tile-size", "64", "--save-pred", str(pred),
            "--show-dir", f"{show}_{{mode}}", "--out", str(tmp_path / "r_{mode}.json"), "--num-workers", "0",
            "--device", "cpu", "--opts", f"data.root={demo_root}"]
    tool = load_tool("eval")
    tool.main(argv)
    for mode in ("regular", "tile"):
        assert len(glob.glob(str(pred / mode / "*_pred_labelIds.png"))) == 4
        assert len(glob.glob(f"{show}_{mode}/*_show.png")) == 4
    assert sorted(os.listdir(pred)) == ["regular", "tile"]
    assert run_tool(tool.main, argv) == 1  # a second run would overwrite the first one's files: refused
    err = capsys.readouterr().err
    assert f"error: {pred / 'regular'}: output folder already holds files; pass --overwrite" in err
    assert "Traceback" not in err
    tool.main(argv + ["--overwrite"])  # the earlier files are moved aside, not deleted
    for mode in ("regular", "tile"):
        assert len(os.listdir(pred / f"{mode}.old")) == len(os.listdir(pred / mode)) == 5  # 4 PNGs and gt/
        assert len(os.listdir(f"{show}_{mode}.old")) == 4


def fake_result(encoder, padding, mode, miou, leave, bands):
    return {"mIoU": miou, "encoder": encoder, "trained_padding": padding, "eval_padding": padding,
            "settings": {"mode": mode},
            "leave_out": {"by": "side", "meaning": "m", "results": [
                {"proportion": p, "label": lab, "mIoU": v} for (p, lab), v in zip([(0.0, "0"), (0.5, "1/2")], leave)]},
            "distance_bands": {"meaning": "d", "results": [
                {"label": lab, "mIoU": v} for lab, v in zip(["0-16", "16+"], bands)]}}


def test_compare_tables_and_plots(tmp_path):
    files = []
    for name, pad, mode, miou, leave, bands in [("a", "zeros", "regular", 70.0, [70.0, 60.0], [50.0, 75.0]),
                                                ("b", "partial", "regular", 71.5, [71.5, 62.25], [53.0, 75.5]),
                                                ("c", "zeros", "tile", 69.0, [69.0, 59.0], [49.0, 74.0])]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(fake_result("resnet50", pad, mode, miou, leave, bands)))
        files.append(str(path))
    tool = load_tool("compare")
    with pytest.raises(ResultFileError, match=f"{files[0]} has no per-image statistics"):
        tool.main(files + ["--out-dir", str(tmp_path / "cmp")])  # nothing shows that they share a test set
    text = tool.main(files + ["--out-dir", str(tmp_path / "cmp"), "--allow-different-images"])
    assert "| resnet50 zeros | 70.00 (1) | 69.00 (1) |" in text  # mean over one run each
    assert "| resnet50 partial | 71.50 (1) | - |" in text
    # no per-image statistics, so no proof of one test set: each arm's numbers, no difference
    assert "resnet50 partial − resnet50 zeros, regular inference**: not compared" in text
    assert "| all pixels | 70.00 (1) | 71.50 (1) | - | - | - |" in text
    assert "| 1/2 | 60.00 (1) | 62.25 (1) | - | - | - |" in text  # leave-out row
    assert "| 0-16 | 50.00 (1) | 53.00 (1) | - | - | - |" in text  # distance-band row
    assert (tmp_path / "cmp" / "leave_out.png").stat().st_size > 0
    assert (tmp_path / "cmp" / "distance_profile.png").stat().st_size > 0


def naive_macc_fwiou(cm):
    cm = np.asarray(cm, dtype=np.float64)
    truth = cm.sum(1)
    accs = [cm[c, c] / truth[c] for c in range(len(cm)) if truth[c] > 0]
    fw = sum(truth[c] / cm.sum() * cm[c, c] / (truth[c] + cm[:, c].sum() - cm[c, c])
             for c in range(len(cm)) if truth[c] > 0)
    return 100 * np.mean(accs), 100 * fw


@pytest.mark.slow
def test_cross_test_matches_eval_tool(demo_root, r18_checkpoint, tmp_path):
    common = ["--num-workers", "0", "--device", "cpu", "--opts", f"data.root={demo_root}"]
    summary = load_tool("cross_test").main([CONFIG, r18_checkpoint, "--paddings", "zeros,partial",
                                            "--out-dir", str(tmp_path / "ct")] + common)
    # no CONFIG: the config stored in the checkpoint
    single = load_tool("eval").main([r18_checkpoint, "--padding", "partial", "--out", str(tmp_path / "p.json")]
                                    + common)
    row = summary["rows"][0]
    assert row["trained_padding"] == "zeros" and row["mIoU"]["partial"] == single["mIoU"]
    table = (tmp_path / "ct" / "cross_test.md").read_text()
    assert "**" in table and row["run"] == os.path.basename(os.path.dirname(r18_checkpoint)) in table
    res = json.loads((tmp_path / "p.json").read_text())
    macc, fwiou = naive_macc_fwiou(res["confusion_matrix"])
    assert res["mAcc"] == pytest.approx(macc, abs=1e-9) and res["fwIoU"] == pytest.approx(fwiou, abs=1e-9)
    assert res["class_names"][:2] == ["road", "sidewalk"]
    from PIL import Image
    assert Image.open(tmp_path / "p_confusion.png").size[0] > 200


def test_palette_and_error_map():
    label = np.array([[0, 10], [13, 255]])
    np.testing.assert_array_equal(colorize(label), [[[128, 64, 128], [70, 130, 180]], [[0, 0, 142], [0, 0, 0]]])
    err = error_map(np.array([[0, 1], [13, 5]]), label)
    assert err[0, 0, 1] > 0 and err[0, 0, 0] == 0  # correct: green
    assert err[0, 1, 0] > 0 and err[0, 1, 1] < err[0, 1, 0]  # wrong: red
    assert (err[1, 1] == 0).all()  # ignored: black
