"""tools/export.py: ONNX with any input size (checked against the naive partial-conv formula) and weights-only
files (checked tensor by tensor against the checkpoint)."""
import pytest
import torch
from conftest import save_demo_checkpoint
from torch import nn

from seg.commands import load_tool
from seg.commands import main as seg_main
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
