"""seg.load: a checkpoint loaded once, segmenting in-memory images of every usual kind, against a model run by
hand (PIL read, numpy float64 normalisation) and against seg.predict on the same files."""
import glob
import os

import numpy as np
import pytest
import torch
from conftest import save_demo_checkpoint
from PIL import Image

import seg
from seg.data.io import DataError
from seg.engine import checkpoint as checkpoint_module
from seg.evaluation import predictor as predictor_module
from seg.models import build_model

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_demo_checkpoint(tmp_path_factory.mktemp("run") / "model_final.pth")


@pytest.fixture(scope="module")
def images(demo_root):
    paths = sorted(glob.glob(os.path.join(demo_root, "leftImg8bit", "val", "*", "*.png")))[:2]
    return paths, [np.array(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def hand_logits(checkpoint, images):
    """Logits (C, H, W) per image of the checkpoint's network built and fed by hand (float64 normalisation)."""
    ckpt = torch.load(checkpoint, weights_only=False)
    model = build_model(dict(ckpt["config"]["model"], pretrained=None))
    model.load_state_dict(ckpt["model"])
    xs = [(rgb.astype(np.float64) / 255 - MEAN) / STD for rgb in images[1]]
    with torch.no_grad():
        return [model.eval()(torch.from_numpy(x).permute(2, 0, 1)[None].float())[0].double() for x in xs]


def test_every_input_kind_gives_the_hand_run_classes(checkpoint, images, hand_logits, monkeypatch):
    loads = []
    real = checkpoint_module.load_checkpoint
    monkeypatch.setattr(predictor_module, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    paths, rgbs = images
    predictor = seg.load(checkpoint, device="cpu")
    expected = [logits.argmax(0).numpy() for logits in hand_logits]

    for got in (predictor(rgbs[0]), predictor(Image.fromarray(rgbs[0])), predictor(paths[0]),
                predictor(torch.from_numpy(rgbs[0]).permute(2, 0, 1)),
                predictor(torch.from_numpy(rgbs[0]).permute(2, 0, 1).float() / 255)):
        assert got.shape == rgbs[0].shape[:2]
        np.testing.assert_array_equal(got, expected[0])
    batch = predictor(np.stack(rgbs))
    assert batch.shape == (2, *rgbs[0].shape[:2])
    np.testing.assert_array_equal(batch, np.stack(expected))
    tensors = predictor(torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(tensors, np.stack(expected))
    mixed = predictor([rgbs[1], paths[0], Image.fromarray(rgbs[0])])
    assert isinstance(mixed, list) and len(mixed) == 3
    np.testing.assert_array_equal(mixed[0], expected[1])
    np.testing.assert_array_equal(mixed[1], expected[0])
    assert len(loads) == 1  # one checkpoint read for every call above

    files = seg.predict(checkpoint, paths, device="cpu", progress=False)
    for result, want in zip(files, expected):
        np.testing.assert_array_equal(result.classes, want)


def test_probabilities_are_the_softmax_of_the_logits(checkpoint, images, hand_logits):
    _, rgbs = images
    predictor = seg.load(checkpoint, device="cpu")
    classes, probs = predictor(rgbs[0], probabilities=True)
    want = hand_logits[0].softmax(0).numpy()
    assert probs.dtype == np.float32 and probs.shape == want.shape
    np.testing.assert_allclose(probs, want, atol=1e-4)
    np.testing.assert_array_equal(classes, want.argmax(0))
    batch_classes, batch_probs = predictor(np.stack(rgbs), probabilities=True)
    assert batch_probs.shape == (2, *want.shape)
    np.testing.assert_array_equal(batch_classes[0], classes)


def test_unusable_inputs_are_one_line_errors(checkpoint):
    predictor = seg.load(checkpoint, device="cpu")
    with pytest.raises(DataError, match=r"uint8 RGB \(H, W, 3\).*got float64 \(8, 8, 3\)"):
        predictor(np.zeros((8, 8, 3)))
    with pytest.raises(DataError, match=r"\(3, H, W\).*got \(4, 8, 8\)"):
        predictor(torch.zeros(4, 8, 8))
    with pytest.raises(DataError, match="cannot segment a dict"):
        predictor({})
