"""The `seg` commands as a wheel user meets them: help texts naming `seg <command>`, and `seg train` on a
classification config."""
import json
import os
import re

import pytest
import torch

from seg import commands
from seg.classification import generate_demo_imagefolder
from seg.commands import COMMANDS, load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_says_seg_command_not_a_clone_path(command, capsys):
    with pytest.raises(SystemExit) as stop:
        commands.main([command, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert out.startswith(f"usage: seg {command}")
    assert not re.search(r"python3? tools/|[\s(`]tools/\w+\.py", out), out  # a wheel has no tools/ folder
    example = re.findall(r"^\s+(seg \S+|torchrun .* -m seg\.tools\.\w+)", load_tool(COMMANDS[command][0]).__doc__,
                         re.MULTILINE)
    assert example, f"the help of `seg {command}` shows no example command line"


def test_seg_train_trains_a_classifier_from_a_classification_config(tmp_path):
    root = generate_demo_imagefolder(str(tmp_path / "data"), 4, 2, 16, seed=0)
    work = tmp_path / "work"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = commands.main(["train", "demo_cls/tinynet_partial", "--work-dir", str(work), "--opts",
                              f"data.root={root}", "data.crop_size=16", "data.resize_size=16", "train.epochs=1",
                              "train.batch_size=8"])
    finally:
        torch.set_num_threads(threads)
    assert code in (0, None)
    summary = json.loads((work / "summary.json").read_text())
    assert summary["arch"] == "tinynet" and summary["padding"] == "partial" and summary["epochs"] == 1, summary
    assert [row["val_count"] for row in summary["history"]] == [4 * 2]  # 4 classes x 2 validation images
