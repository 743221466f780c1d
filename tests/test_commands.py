"""The `seg` commands as a wheel user meets them: help texts naming `seg <command>`, and `seg train` on a
classification config."""
import json
import os
import re

import pytest
import torch
from conftest import DEMO_CONFIG, save_demo_checkpoint
from torch.distributed.run import get_args_parser

from seg import commands
from seg.classification import generate_demo_imagefolder
from seg.commands import COMMANDS, load_tool
from seg.data import DataError, build_val_dataset
from seg.engine.logger import RunLogger

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


def test_seg_train_trains_a_classifier_from_a_classification_config(tmp_path, monkeypatch):
    generate_demo_imagefolder(str(tmp_path / "data"), 4, 2, 16, seed=0)
    monkeypatch.chdir(tmp_path)
    root = "data"  # relative: the run records it absolute
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
    assert torch.load(work / "model_final.pth", weights_only=True)["config"]["data"]["root"] == str(tmp_path / "data")


@pytest.mark.parametrize("fmt", ["cityscapes", "folder"])
def test_missing_data_root_error_says_how_to_point_at_the_data(fmt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        build_val_dataset({"format": fmt, "root": "datasets/elsewhere"})
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.root: dataset folder not found: datasets/elsewhere")
    assert f"(relative to {tmp_path})" in message and "--opts data.root=" in message


def test_eval_of_a_checkpoint_with_a_relative_root_from_another_folder_names_the_fix(tmp_path, monkeypatch, capsys):
    ckpt = save_demo_checkpoint(tmp_path / "tiny.pth", ["data.root=datasets/demo"])
    monkeypatch.chdir(tmp_path)
    assert commands.main(["eval", ckpt, "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "--opts data.root=" in err, err
    assert f"datasets/demo (relative to {tmp_path})" in err, err


@pytest.mark.slow
def test_training_records_its_data_root_absolute_so_eval_works_from_any_folder(demo_root, tmp_path, monkeypatch,
                                                                                 capsys):
    """Also the log of a run whose output is no terminal (pytest captures it): plain lines, the same epoch number
    in the training and validation lines, and a last line naming the final model file."""
    parent, name = os.path.split(demo_root)
    monkeypatch.chdir(parent)
    work = tmp_path / "run"
    opts = [f"data.root={name}", "data.crop_size=32", "data.num_workers=0", "data.val_split=val",
            "train.batch_size=2", "train.iterations=4", "train.log_interval=4", "train.warmup_iters=0",
            "train.device=cpu"]
    assert commands.main(["train", DEMO_CONFIG, "--work-dir", str(work), "--opts", *opts]) in (0, None)
    final = torch.load(work / "model_final.pth", weights_only=True)
    assert final["config"]["data"]["root"] == demo_root
    out, err = capsys.readouterr()
    assert "\r" not in out + err and "\x1b" not in out + err, (out + err)[-2000:]
    lines = out.strip().splitlines()
    assert lines[-1] == f"final model: {work / 'model_final.pth'}", lines[-3:]
    # 6 training images, 2 a step: iteration 4 is the first of the second epoch
    train_line = next(line for line in lines if line.startswith("train 4/4 "))
    val_line = next(line for line in lines if line.startswith("iter 4 (epoch 2): val "))
    assert " epoch=2 " in train_line and val_line.endswith("(first validation)"), lines
    records = [json.loads(line) for line in open(work / "metrics.jsonl")]
    assert [r["epoch"] for r in records if r["tag"] == "train"] == [2]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "eval.json"
    assert commands.main(["eval", str(work / "model_final.pth"), "--device", "cpu", "--num-workers", "0",
                          "--split", "val", "--out", str(out)]) in (0, None)
    assert json.loads(out.read_text())


def _readme_srun_command() -> list[str]:
    """The torchrun command line of the README's SLURM example, with the job's variables filled in."""
    text = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"^\s*srun (torchrun [^\n#]*)", text.replace("\\\n", " "), re.MULTILINE)
    assert block, "README has no `srun torchrun ...` example"
    line = block.group(1)
    for var, value in {'"$SLURM_NNODES"': "2", '"$SLURM_JOB_ID"': "42", '"$head:29500"': "node1:29500"}.items():
        line = line.replace(var, value)
    return line.split()


def test_readme_slurm_example_is_a_valid_torchrun_command_of_an_existing_tool():
    command = _readme_srun_command()
    args = get_args_parser().parse_args(command[1:])
    assert args.module and args.training_script == "seg.tools.train", command
    assert (args.nnodes, args.nproc_per_node, args.rdzv_backend) == ("2", "8", "c10d")
    tool = load_tool("train")
    config = tool.build_parser().parse_known_args(args.training_script_args)[0].config
    assert os.path.isfile(config), config  # a shipped config name that resolves


def test_run_logger_off_a_terminal_writes_plain_lines(tmp_path, capsys):
    log = RunLogger(str(tmp_path), total=10, start=4)
    log.progress(3, {"epoch": "2", "loss": "0.5000"})
    log.message("iter 7 (epoch 2): val mIoU 1.00")
    log.close()
    out, err = capsys.readouterr()
    assert "\r" not in out + err and "\x1b" not in out + err
    first, second = out.splitlines()
    assert re.fullmatch(r"train 7/10 epoch=2 loss=0\.5000 eta \d\d:\d\d", first), first
    assert second == "iter 7 (epoch 2): val mIoU 1.00"
