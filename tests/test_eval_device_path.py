"""The evaluation's device path: uint8 images normalised on the device by the same preprocessor as
prediction (bit-identical logits), and scoring that reads nothing back to the host per image."""
import contextlib

import numpy as np
import pytest
import torch
from conftest import save_demo_checkpoint
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset, Subset

import seg
import seg.evaluation.predictor as predictor_module  # seg.predict runs on its Predictor
from seg.data import DataError, build_val_dataset
from seg.evaluation import (
    InferenceSettings,
    SegmentationEvaluator,
    build_eval_loader,
    default_label_space,
    run_inference,
)
from seg.evaluation.inference import forward_logits
from seg.evaluation.runner import load_model_for_eval

# ops that wait for the device on a GPU: a scalar read, or an output whose size depends on the data
# (bincount sizes its output from the largest index, which it reads back)
SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "_unique2", "unique_dim",
               "unique_consecutive", "repeat_interleave", "equal", "is_nonzero"}
HOST_COPIES = ("cpu", "tolist", "numpy", "item")


class CountSyncs(TorchDispatchMode):
    """Counts the syncing aten ops dispatched, by name."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCING_OPS:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting_syncs(monkeypatch):
    """Counts syncing ops and host copies (Tensor.cpu / tolist / numpy / item) inside the block."""
    mode = CountSyncs()
    for method in HOST_COPIES:
        original = getattr(torch.Tensor, method)

        def counted(self, *a, _original=original, _name=method, **kw):
            mode.ops.append(_name)
            return _original(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, method, counted)
    with mode:
        yield mode
    monkeypatch.undo()


class Pairs(Dataset):
    """uint8 images and random targets (ignore included), normalised by the dataset's own preprocessor."""

    def __init__(self, n, h=12, w=20, k=4, bad=None):
        g = torch.Generator().manual_seed(n)
        self.images = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
        self.targets = torch.randint(0, k, (n, h, w), generator=g)
        self.targets[:, 0] = 255
        if bad is not None:
            self.targets[bad, 3, 4] = k + 1  # one id outside [0, k) that is not the ignore value
        self.image_paths = [f"/data/img_{i}.png" for i in range(n)]
        self.normalize = seg.data.BatchNormalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def _evaluate(n, settings):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    scores = SegmentationEvaluator(leave_out=[0, 0.5], distance_bands=[0, 3], image_stats=True)
    return run_inference(model, DataLoader(Pairs(n), batch_size=2), settings, [scores], device="cpu",
                         labels=default_label_space(4), progress=False)


@pytest.mark.parametrize("settings", [InferenceSettings(), InferenceSettings("overlap", tile_size=8, flip=True)])
def test_scoring_makes_no_host_sync_per_image(monkeypatch, settings):
    _evaluate(2, settings)  # builds and caches the region layout of the size (a few syncs, once per size)
    with counting_syncs(monkeypatch) as few:
        r2 = _evaluate(2, settings)
    with counting_syncs(monkeypatch) as many:
        r8 = _evaluate(8, settings)
    assert r2["num_images"] == 2 and r8["num_images"] == 8
    assert sorted(many.ops) == sorted(few.ops), (few.ops, many.ops)  # a constant for the whole pass
    assert few.ops  # the results are read at the end (the counter is not blind)


def test_invalid_target_is_reported_after_the_pass_naming_its_file():
    loader = DataLoader(Pairs(5, bad=3), batch_size=2)
    with pytest.raises(DataError, match=r"/data/img_3.png: target holds 1 pixels with ids outside \[0, 4\)"):
        run_inference(torch.nn.Conv2d(3, 4, 1), loader, None, [SegmentationEvaluator()], device="cpu",
                      labels=default_label_space(4), progress=False)


def test_uint8_images_need_a_normaliser():
    data = Pairs(2)
    del data.normalize
    with pytest.raises(DataError, match="yields torch.uint8 images but has no .normalize"):
        run_inference(torch.nn.Conv2d(3, 4, 1), DataLoader(data), None, [SegmentationEvaluator()], device="cpu",
                      labels=default_label_space(4), progress=False)


@pytest.mark.slow
def test_predict_and_evaluate_give_bit_identical_logits(demo_root, tmp_path, monkeypatch):
    checkpoint = save_demo_checkpoint(tmp_path / "model.pth")
    seen: dict[str, list[torch.Tensor]] = {"eval": [], "predict": []}

    class Recorder(torch.nn.Module):
        def __init__(self, model, key):
            super().__init__()
            self.model, self.key = model, key

        def forward(self, x):
            out = forward_logits(self.model, x)
            seen[self.key].append(out.clone())
            return out

    def load_recorded(*args, **kwargs):
        model, info = load_model_for_eval(*args, **kwargs)
        loaded.update(model=model, info=info)
        return Recorder(model, "predict"), info
    loaded: dict = {}
    monkeypatch.setattr(predictor_module, "load_model_for_eval", load_recorded)
    dataset = build_val_dataset({"root": demo_root})
    predictions = seg.predict(checkpoint, dataset.image_paths[:2], device="cpu", progress=False)

    # the same weights through run_inference(): the dataset's uint8 images, batch 1, normalised by its preprocessor
    run_inference(Recorder(loaded["model"], "eval"), build_eval_loader(Subset(dataset, [0, 1])), None,
                  [SegmentationEvaluator()], device="cpu", labels=default_label_space(loaded["info"]["num_classes"]),
                  normalize=dataset.normalize, progress=False)
    assert len(seen["eval"]) == len(seen["predict"]) == len(predictions) == 2
    for from_eval, from_predict, prediction in zip(seen["eval"], seen["predict"], predictions):
        assert torch.equal(from_eval, from_predict)  # same preprocessor, same bits
        assert (prediction.classes == from_eval[0].argmax(0).numpy()).all()


def naive_confusion(pred, target, k=3):
    """(k, k) counts of the pixels whose truth is a class (the ignore value and invalid ids left out)."""
    out = np.zeros((k, k), np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if 0 <= t < k:
            out[t, p] += 1
    return out


def test_accumulator_batches_count_like_naive_loops_and_checks_name_the_image():
    g = torch.Generator().manual_seed(5)
    acc = seg.evaluation.ConfusionAccumulator(3, ignore_index=7)
    pred, target = torch.randint(0, 3, (2, 4, 5), generator=g), torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0] = 7
    added = acc.update_batch(pred, target)
    assert added.shape == (2, 1, 3, 3)
    for i in range(2):
        np.testing.assert_array_equal(added[i, 0].numpy(), naive_confusion(pred[i], target[i]))
    acc.check()  # all valid so far
    bad = target.clone()
    bad[1, 2, 2], bad[1, 3, 3] = 3, -2  # ids outside [0, 3) that are not the ignore value: in no matrix
    acc.update_batch(pred, bad)
    np.testing.assert_array_equal(acc.matrices[0].numpy(), naive_confusion(pred, target) + naive_confusion(pred, bad))
    assert acc.updates == 4
    with pytest.raises(DataError, match=r"^image 3: target holds 2 pixels with ids outside \[0, 3\)"):
        acc.check()  # the 4th image counted, though the first two were checked by an earlier call
