"""tools/export.py: ONNX with any input size (checked against the naive partial-conv formula) and weights-only
files (checked tensor by tensor against the checkpoint)."""
import json
import sys

import pytest
import torch
from cityscapesscripts.helpers.labels import labels as cityscapes_labels
from conftest import save_demo_checkpoint
from torch import nn

from seg.commands import load_tool
from seg.commands import main as seg_main
from seg.models import build_model
from seg.nn import create_conv2d
from seg.nn.reference import naive_partial_conv

pytestmark = pytest.mark.slow  # trains or runs a tool end to end: left out of make test-fast

export = load_tool("export")


def test_onnx_export_takes_any_size_and_matches_the_reference(tmp_path):
    onnx_reference = pytest.importorskip("onnx.reference")
    torch.manual_seed(0)
    model = nn.Sequential(create_conv2d(3, 8, 5, padding_mode="partial"), nn.ReLU(),
                          create_conv2d(8, 4, 3, stride=2, padding_mode="partial")).eval()
    path = str(tmp_path / "tiny.onnx")
    export.export_onnx(model, (19, 23), path)
    session = onnx_reference.ReferenceEvaluator(path)
    conv1, conv2 = model[0], model[2]
    for shape in [(1, 3, 19, 23), (2, 3, 30, 11)]:  # the traced size and another: the graph is not fixed to one
        x = torch.randn(*shape)
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        hidden = naive_partial_conv(x, conv1.weight, conv1.bias, (1, 1), (2, 2), (1, 1), 1)[0].relu()
        want = naive_partial_conv(hidden, conv2.weight, conv2.bias, (2, 2), (1, 1), (1, 1), 1)[0]
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_weights_export_is_the_checkpoint_model(tmp_path, capsys):
    ckpt = save_demo_checkpoint(tmp_path / "model.pth", ["model.padding=partial"])
    out = tmp_path / "weights.pth"
    assert seg_main(["export", ckpt, "--format", "weights", "--out", str(out), "--size", "32x48"]) == 0
    assert "max abs diff 0 " in capsys.readouterr().out
    weights = torch.load(out, weights_only=True)
    stored = torch.load(ckpt, weights_only=True)["model"]
    assert list(weights) == list(stored)
    assert all(torch.equal(weights[k], stored[k]) for k in stored)


def test_export_errors_are_one_line(tmp_path, capsys):
    assert seg_main(["export", str(tmp_path / "missing.pth"), "--format", "weights", "--out", "x.pth"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.pth" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    """(checkpoint, ONNX file) of the demo network, exported by `seg export` at 32x48."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    folder = tmp_path_factory.mktemp("onnx")
    ckpt = save_demo_checkpoint(folder / "model.pth")
    path = folder / "model.onnx"
    assert seg_main(["export", ckpt, "--format", "onnx", "--out", str(path), "--size", "32x48"]) == 0
    return ckpt, path


def _cityscapes_train_classes():
    """(names, colours) of the 19 Cityscapes training classes in trainId order, from cityscapesscripts."""
    train = sorted((label for label in cityscapes_labels if 0 <= label.trainId < 255), key=lambda label: label.trainId)
    return [label.name for label in train], [list(label.color) for label in train]


def test_onnx_file_carries_classes_palette_normalisation_and_named_axes(onnx_export):
    onnx = pytest.importorskip("onnx")

    ckpt, path = onnx_export
    proto = onnx.load(str(path))
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    names, colours = _cityscapes_train_classes()
    assert json.loads(meta["class_names"]) == names and json.loads(meta["palette"]) == colours
    data = torch.load(ckpt, weights_only=False)["config"]["data"]
    assert json.loads(meta["mean"]) == list(data["mean"]) and json.loads(meta["std"]) == list(data["std"])
    assert meta["padding"] == "zeros"

    def dims(info):
        return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]

    assert dims(proto.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(proto.graph.output[0]) == ["batch", 19, "height", "width"]


def test_onnxruntime_reads_the_metadata_and_runs_any_size(onnx_export):
    onnxruntime = pytest.importorskip("onnxruntime")
    ckpt, path = onnx_export
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["class_names"].startswith('["road"')
    x = torch.randn(2, 3, 40, 56)
    (got,) = session.run(["logits"], {"image": x.numpy()})
    stored = torch.load(ckpt, weights_only=False)
    model = build_model(dict(stored["config"]["model"], pretrained=None))
    model.load_state_dict(stored["model"])
    with torch.no_grad():
        want = model.eval()(x)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)


def test_onnx_export_without_onnxscript_names_the_extra(tmp_path, capsys, monkeypatch):
    ckpt = save_demo_checkpoint(tmp_path / "model.pth")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # what importlib finds for a package not installed
    assert seg_main(["export", ckpt, "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs onnxscript, not installed: pip install 'partialpad-seg[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()
