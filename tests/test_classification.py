"""seg.classification units: top-k, run summaries, schedule, configs, transforms, models, bad input.

References are independent: hand-computed counts, numpy float64, torch's StepLR, the paper's own tables.
"""
import glob
import os

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import seg.config
from seg.classification import (
    CLASSIFIER_ARCHS,
    ImageFolderError,
    aggregate,
    build_classification_datasets,
    build_classifier,
    build_imagefolder,
    build_transforms,
    cross_test_rows,
    evaluate_classifier,
    format_comparison,
    load_classifier_config,
    load_classifier_weights,
    padding_tables,
    summarize_run,
    topk_correct,
)
from seg.classification.config import ConfigError, default_classifier_config
from seg.engine.checkpoint import export_model
from seg.engine.optim import StepEpochLR
from seg.models import build_model
from seg.nn import PADDING_MODES
from seg.nn.factory import padding_modes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # a folder's normalisation where a test does not look at it

# Four samples, six classes; class order by descending logit written next to each row.
LOGITS = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.3, 0.0],    # 3 1 4 2 0 5
                       [2.0, 1.0, 0.5, 0.4, 0.3, 0.2],    # 0 1 2 3 4 5
                       [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],    # 5 4 3 2 1 0
                       [1.0, 3.0, 2.0, 0.0, -1.0, 0.5]])  # 1 2 0 5 3 4
TARGETS = torch.tensor([3, 5, 0, 0])  # ranks of the target: 1, 6, 6, 3


def test_topk_correct_matches_hand_count():
    assert topk_correct(LOGITS, TARGETS, (1, 2, 3, 5)) == [1, 1, 2, 2]
    assert topk_correct(LOGITS, TARGETS, (1, 6, 10)) == [1, 4, 4]  # k >= C: everything counts


def test_topk_correct_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected logits"):
        topk_correct(LOGITS[0], TARGETS)


class _LookupModel(nn.Module):
    """Returns the row of a fixed logit table selected by the 'image' (an index)."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x):
        return self.table[x.long()]


def test_evaluate_classifier_percent_and_loss_against_numpy():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(11, 7))
    targets = rng.integers(0, 7, 11)
    data = [(torch.tensor(i), int(t)) for i, t in enumerate(targets)]
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    out = evaluate_classifier(_LookupModel(torch.tensor(table, dtype=torch.float32)), loader, "cpu", (1, 5),
                              progress=False)
    rank = (table > table[np.arange(11), targets][:, None]).sum(1)  # 0 = target is the top class
    logsumexp = np.log(np.exp(table).sum(1))
    ce = np.mean(logsumexp - table[np.arange(11), targets])
    assert out["count"] == 11
    assert out["top1"] == pytest.approx(100 * np.mean(rank < 1))
    assert out["top5"] == pytest.approx(100 * np.mean(rank < 5))
    assert out["loss"] == pytest.approx(ce, rel=1e-5)


def test_summarize_run_best_and_last5_against_numpy():
    rng = np.random.default_rng(1)
    top1, top5 = rng.uniform(50, 80, 12), rng.uniform(80, 95, 12)
    history = [{"epoch": e + 1, "top1": float(a), "top5": float(b)} for e, (a, b) in enumerate(zip(top1, top5))]
    s = summarize_run(history, last_k=5)
    best = int(np.argmax(top1))
    assert s["best"] == {"epoch": best + 1, "top1": top1[best], "top5": top5[best]}
    assert s["last_k"]["top1"] == pytest.approx(np.mean(top1[-5:]))
    assert s["last_k"]["top5"] == pytest.approx(np.mean(top5[-5:]))
    assert s["last_k"]["epochs"] == [8, 9, 10, 11, 12] and s["last_k"]["k"] == 5
    short = summarize_run(history[:3], last_k=5)
    assert short["last_k"]["k"] == 3 and short["last_k"]["top1"] == pytest.approx(np.mean(top1[:3]))
    with pytest.raises(ValueError, match="no validated epoch"):
        summarize_run([])


def test_aggregate_and_padding_tables_against_numpy():
    rng = np.random.default_rng(2)
    runs, values = [], {}
    for arch in ("resnet50", "vgg16_bn"):
        for padding in ("partial", "zeros"):  # given out of order: the table puts zeros first
            for seed in range(3):
                best, last = rng.uniform(70, 77, 2)
                values.setdefault((arch, padding), []).append((best, last))
                runs.append({"arch": arch, "padding": padding, "seed": seed,
                             "summary": {"best": {"top1": best}, "last_k": {"top1": last, "requested_k": 5}}})
    tables = padding_tables(runs)
    for protocol, col in (("best", 0), ("last_k", 1)):
        rows = {r["name"]: r for r in tables[protocol]}
        assert [r["name"] for r in tables[protocol]] == ["resnet50_zeros", "resnet50_partial",
                                                         "vgg16_bn_zeros", "vgg16_bn_partial"]
        for arch in ("resnet50", "vgg16_bn"):
            z = np.array([v[col] for v in values[(arch, "zeros")]])
            p = np.array([v[col] for v in values[(arch, "partial")]])
            assert rows[f"{arch}_partial"]["mean"] == pytest.approx(p.mean())
            assert rows[f"{arch}_partial"]["std"] == pytest.approx(p.std(ddof=1))
            assert rows[f"{arch}_partial"]["diff"] == pytest.approx(p.mean() - z.mean())
            assert rows[f"{arch}_zeros"]["diff"] is None
    assert aggregate([3.0])["std"] is None
    text = format_comparison(tables["best"], "best")
    assert "| resnet50_partial |" in text and "1_best | 2_best | 3_best" in text


def test_paper_table2_resnet50_average_and_diff():
    """The paper's Table 2 per-run values reproduce its 'average' and 'diff' columns."""
    zero = [76.240, 76.074, 75.988, 76.136, 76.224]
    partial = [76.606, 76.532, 76.638, 76.562, 76.716]
    runs = [{"arch": "resnet50", "padding": pad, "summary": {"best": {"top1": v}, "last_k": {"top1": v}}}
            for pad, vals in (("zeros", zero), ("partial", partial)) for v in vals]
    rows = {r["name"]: r for r in padding_tables(runs)["best"]}
    assert round(rows["resnet50_zeros"]["mean"], 3) == 76.132
    assert round(rows["resnet50_partial"]["mean"], 3) == 76.611
    assert round(rows["resnet50_partial"]["diff"], 3) == 0.478


def test_cross_test_rows_diff_to_training_padding():
    results = [{"arch": "resnet50", "trained_padding": t, "eval_padding": e, "top1": v}
               for t, e, v in [("zeros", "partial", 62.0), ("zeros", "zeros", 76.0), ("zeros", "partial", 58.0),
                               ("zeros", "zeros", 76.5), ("partial", "zeros", 75.9), ("partial", "partial", 76.6)]]
    rows = {r["name"]: r for r in cross_test_rows(results)}
    assert rows["resnet50_zeros -> resnet50_partial"]["diff"] == pytest.approx(60.0 - 76.25)
    assert rows["resnet50_partial -> resnet50_zeros"]["diff"] == pytest.approx(75.9 - 76.6)
    assert rows["resnet50_zeros -> resnet50_zeros"]["diff"] is None


def test_step_epoch_lr_matches_torch_steplr_per_epoch():
    iters_per_epoch, epochs = 3, 100
    ours_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ours = StepEpochLR(ours_opt, iters_per_epoch, step_epochs=30, gamma=0.1)
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=30, gamma=0.1)
    for _epoch in range(epochs):  # the reference scheduler steps once an epoch
        for _ in range(iters_per_epoch):
            assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
            ours_opt.step()
            ours.step()
        ref_opt.step()
        ref.step()
    assert ours_opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 ** 3)  # after 90 epochs: 1e-4


def test_step_epoch_lr_warmup_is_linear():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = StepEpochLR(opt, iters_per_epoch=4, step_epochs=30, warmup_epochs=1, warmup_factor=0.2)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_imagenet_configs_follow_the_paper_protocol():
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "imagenet", "[!_]*.yaml")))
    seen = set()
    for path in paths:
        cfg = load_classifier_config(path)
        t, m = cfg["train"], cfg["model"]
        assert os.path.basename(path) == f"{m['arch']}_{m['padding']}.yaml"
        assert (t["lr"], t["momentum"], t["weight_decay"], t["lr_step_epochs"], t["lr_gamma"], t["epochs"],
                t["batch_size"]) == (0.1, 0.9, 1e-4, 30, 0.1, 100, 256)
        assert (cfg["data"]["crop_size"], cfg["data"]["resize_size"], m["num_classes"]) == (224, 256, 1000)
        seen.add((m["arch"], m["padding"]))
    archs = ("vgg16_bn", "vgg19_bn", "resnet50", "resnet101", "resnet152")
    assert seen == {(a, p) for a in archs for p in PADDING_MODES}


def test_classifier_config_errors_name_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochz: 3}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'train\.epochz'"):
        load_classifier_config(str(bad))
    with pytest.raises(ConfigError, match="model.arch"):
        load_classifier_config(None, ["model.arch=alexnet"])
    with pytest.raises(ConfigError, match="'train.epochs' must be >= 1"):
        load_classifier_config(None, ["train.epochs=0"])
    # the segmentation schema is untouched by the classifier's
    assert "arch" not in seg.config.default_config()["model"]


def test_val_items_are_uint8_and_normalised_on_the_device_exactly(tmp_path):
    """Items are uint8 like segmentation's; the folder's normalize gives (c/255 - mean)/std (float64 formula)."""
    colour = (200, 100, 30)
    os.makedirs(tmp_path / "val" / "a")
    Image.new("RGB", (50, 40), colour).save(tmp_path / "val" / "a" / "0.png")
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    folder = build_imagefolder(str(tmp_path / "val"), build_transforms(False, 24, 28, (0.08, 1.0), 0.5), mean, std)
    image, label = folder[0]
    assert label == 0 and image.dtype == torch.uint8 and image.shape == (3, 24, 24)
    assert torch.equal(image, torch.tensor(colour, dtype=torch.uint8)[:, None, None].expand(3, 24, 24))
    out = folder.normalize(image[None])
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, mean, std)], dtype=torch.float64)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0].double(), expected[:, None, None].expand(3, 24, 24), atol=1e-6, rtol=0)
    assert build_transforms(True, 24, 28, (0.08, 1.0), 0.5)(Image.new("RGB", (50, 40), colour)).dtype == torch.uint8


def test_every_arch_has_a_builder():
    for arch in CLASSIFIER_ARCHS:
        if arch != "tinynet":
            torchvision.models.get_model_builder(arch)
    with pytest.raises(ValueError, match="unknown classifier arch"):
        build_classifier("alexnet")


@pytest.mark.parametrize("arch", ["tinynet", "resnet18"])
@pytest.mark.slow
def test_padding_modes_keep_keys_and_values(arch):
    torch.manual_seed(0)
    ref = build_classifier(arch, num_classes=5).state_dict()
    for mode in PADDING_MODES:
        torch.manual_seed(0)
        model = build_classifier(arch, num_classes=5, padding_mode=mode)
        assert set(padding_modes(model).values()) == {mode}
        state = model.state_dict()
        assert list(state) == list(ref)
        assert all(torch.equal(state[k], ref[k]) for k in ref)


def _write_png(path, size=12):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def test_empty_class_folder_is_named(tmp_path):
    _write_png(str(tmp_path / "train" / "a" / "0.png"))
    os.makedirs(tmp_path / "train" / "b" / "nested")
    (tmp_path / "train" / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(ImageFolderError, match=f"class folder {tmp_path / 'train' / 'b'} holds no image"):
        build_imagefolder(str(tmp_path / "train"), None, MEAN, STD)
    with pytest.raises(ImageFolderError, match=f"split not found: {tmp_path / 'val'}"):
        build_imagefolder(str(tmp_path / "val"), None, MEAN, STD)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_named(tmp_path, damage):
    good, bad = tmp_path / "train" / "a" / "0.png", tmp_path / "train" / "b" / "0.png"
    _write_png(str(good), size=64)
    _write_png(str(bad), size=64)
    data = bad.read_bytes()
    bad.write_bytes(b"this is not an image" if damage == "garbage" else data[: len(data) // 2])
    dataset = build_imagefolder(str(tmp_path / "train"), build_transforms(False, 8, 8, (0.08, 1.0), 0.5), MEAN, STD)
    assert dataset[0][0].shape == (3, 8, 8)
    with pytest.raises(ImageFolderError, match=f"cannot read image {bad}"):
        dataset[1]


def test_classifier_checkpoint_initialises_a_segmentation_encoder(tmp_path):
    """The paper's pipeline: ImageNet classifier weights (any padding) -> DeepLabV3+ encoder."""
    classifier = build_classifier("resnet18", num_classes=10, padding_mode="partial")
    path = str(tmp_path / "model_final.pth")
    export_model(classifier.state_dict(), {}, path)
    net = build_model({"encoder": "resnet18", "num_classes": 19, "output_stride": 8, "padding": "zeros",
                       "pretrained": path})
    src, enc = classifier.state_dict(), net.encoder.state_dict()
    assert set(enc) <= set(src) and all(torch.equal(enc[k], src[k]) for k in enc)
    assert sorted(net.pretrained_report.unexpected) == ["fc.bias", "fc.weight"]


def test_train_and_val_class_folders_must_agree(tmp_path):
    for split, classes in (("train", ("a", "b")), ("val", ("a", "c"))):
        for c in classes:
            _write_png(str(tmp_path / split / c / "0.png"))
    data_cfg = {**default_classifier_config()["data"], "root": str(tmp_path)}
    with pytest.raises(ImageFolderError, match=r"only in train \['b'\], only in val \['c'\]"):
        build_classification_datasets(data_cfg)


def test_weights_of_another_arch_are_refused_naming_the_file(tmp_path):
    path = str(tmp_path / "tiny.pth")
    export_model(build_classifier("tinynet", num_classes=4).state_dict(), {}, path)
    with pytest.raises(ValueError, match=f"weights in {path} do not fit TinyNet: 0 missing keys.*2 with another shape"):
        load_classifier_weights(build_classifier("tinynet", num_classes=7), path)
