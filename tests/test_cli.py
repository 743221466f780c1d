"""One CLI shell for every tool (issue 12, cases 1 and 7-9): one-line errors with exit code 1, the
checkpoint as the truth for the architecture in eval, schema choices from the builders, housekeeping.
Tools run in-process through seg.cli.run_tool, as `python tools/X.py` runs them."""
import argparse
import ast
import glob
import importlib.util
import json
import os
import shutil
import socket

import pytest
import torch
from conftest import save_demo_checkpoint

from seg import commands
from seg.cli import add_config_args, run_tool, tool_parser
from seg.config import SCHEMA, ConfigError, load_config
from seg.data import build_val_dataset
from seg.engine import init_distributed
from seg.evaluation import SegmentationEvaluator, build_eval_loader, run_inference
from seg.models import ENCODERS, NORMS, OUTPUT_STRIDES, DeepLabV3Plus
from seg.nn import PADDING_MODES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "deeplabv3plus_r18_zeros.yaml")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line_error(main, argv, capsys) -> str:
    """Run a tool's main through run_tool; assert exit code 1 and one `error: ...` line (progress bars aside),
    no traceback. Returns that line."""
    assert run_tool(main, argv) == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    return "error: " + err.split("error: ")[1].split("\n")[0]


def train_main(argv):
    tool = load_tool("train")
    return tool.main(argv)


def train_argv(work_dir, root, *opts):
    return [CONFIG, "--work-dir", str(work_dir), "--opts", f"data.root={root}", "data.crop_size=32",
            "data.num_workers=0", "data.val_split=null", "train.batch_size=2", "train.iterations=2", *opts]


# ---------------------------------------------------------------- case 8: one-line errors
@pytest.mark.parametrize("opt, message", [
    ("model.encoder=wrn38", "key 'model.encoder': unknown encoder 'wrn38'; expected one of ['resnet18', 'resnet34', "
                            "'resnet50', 'resnet101', 'wider_resnet38'] or timm/<timm model name>"),
    ("model.norm=bogus", "key 'model.norm' must be one of ['bn', 'syncbn'], got 'bogus'"),
    ("data.hflip=5", "key 'data.hflip' must be <= 1, got 5.0"),
    ("eval.tile_size=0", "key 'eval.tile_size' must be >= 1, got 0"),
])
def test_train_config_errors_are_one_line(tmp_path, demo_root, capsys, opt, message):
    err = one_line_error(train_main, train_argv(tmp_path, demo_root, opt), capsys)
    assert message in err


def test_schema_choices_are_the_builders_own():
    model = SCHEMA["model"]
    assert model["norm"]["choices"] == NORMS
    assert (model["output_stride"]["choices"], model["padding"]["choices"]) == (OUTPUT_STRIDES, PADDING_MODES)
    for name in (*ENCODERS, "timm/resnet18"):  # every built-in encoder and any timm model name
        assert load_config(None, [f"model.encoder={name}"])["model"]["encoder"] == name
    with pytest.raises(ConfigError, match="model.encoder"):
        load_config(None, ["model.encoder=wrn38"])


def test_labels_beyond_num_classes_name_the_key(tmp_path, demo_root, capsys):
    err = one_line_error(train_main, train_argv(tmp_path, demo_root, "model.num_classes=5"), capsys)
    # found before iteration 1, in the sample of training files checked then, and named
    assert "_gtFine_labelTrainIds.png: label values [" in err and "outside 0..4 of model.num_classes=5" in err


def test_one_image_per_process_with_batchnorm_is_one_line(tmp_path, demo_root, capsys):
    err = one_line_error(train_main, train_argv(tmp_path, demo_root, "train.batch_size=1"), capsys)
    assert "train.batch_size=1 gives 1 image per process; BatchNorm needs at least 2" in err


def test_train_refuses_a_work_dir_holding_a_run_in_one_line(tmp_path, demo_root, capsys):
    (tmp_path / "config.yaml").write_text("model: {}\n")  # an earlier run's
    err = one_line_error(train_main, train_argv(tmp_path, demo_root), capsys)
    assert f"work dir {tmp_path} already holds a run (config.yaml)" in err and "--overwrite" in err
    assert (tmp_path / "config.yaml").read_text() == "model: {}\n"


def test_debug_shows_the_traceback(tmp_path, demo_root):
    with pytest.raises(ConfigError, match="model.norm"):
        run_tool(train_main, train_argv(tmp_path, demo_root, "model.norm=bogus") + ["--debug"])


def test_malformed_polygon_names_the_file(demo_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root, ignore=shutil.ignore_patterns(".cache"))
    poly = sorted(glob.glob(str(root / "gtFine" / "val" / "*" / "*_polygons.json")))[0]
    ann = json.load(open(poly))
    del ann["objects"][1]["polygon"]
    json.dump(ann, open(poly, "w"))
    os.remove(poly.replace("_polygons.json", "_labelTrainIds.png"))  # so that it is converted again
    err = one_line_error(load_tool("prepare_cityscapes").main, [str(root), "--workers", "1"], capsys)
    assert f"error: {poly}: not a valid Cityscapes polygon JSON (KeyError: 'polygon')" in err


def test_compare_and_cross_test_errors_are_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nope.json")
    err = one_line_error(load_tool("compare").main, [missing, "--out-dir", str(tmp_path)], capsys)
    assert f"error: {missing}: No such file or directory" in err
    err = one_line_error(load_tool("cross_test").main, [CONFIG, missing, "--paddings", "zeros,bogus"], capsys)
    assert "unknown padding(s) ['bogus']" in err


@pytest.mark.parametrize("command,args", [
    ("train", ["{missing}.yaml"]),
    ("eval", ["{missing}.pth"]),
    ("predict", ["{missing}.pth", "{missing}.png", "--out", "o"]),
    ("compare", ["{missing}.json"]),
    ("cross-test", ["{missing}.pth"]),
    ("export", ["{missing}.pth", "--format", "weights", "--out", "o"])])
def test_every_seg_command_passes_its_arguments_to_the_tool(tmp_path, capsys, command, args):
    """`seg <command> ARGS` behaves as `python tools/<tool>.py ARGS`: here, one line naming the missing file."""
    missing = str(tmp_path / "nope")
    assert commands.main([command, *(a.format(missing=missing) for a in args)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1 and missing in err, err


def test_eval_argument_errors_name_the_option(capsys):
    with pytest.raises(SystemExit) as stop:
        load_tool("eval").main([CONFIG, "x.pth", "--tile-size", "0"])
    assert stop.value.code == 2 and "argument --tile-size: must be >= 1, got 0" in capsys.readouterr().err


# ---------------------------------------------------------------- case 7: the checkpoint is the truth
@pytest.fixture(scope="module")
def os16_checkpoint(tmp_path_factory):
    """An output-stride-16 ResNet-18 checkpoint (the demo config says 8)."""
    return save_demo_checkpoint(tmp_path_factory.mktemp("os16") / "r18_os16.pth", ["model.output_stride=16"])


@pytest.mark.slow
def test_eval_builds_the_checkpoints_architecture_and_records_it(demo_root, os16_checkpoint, tmp_path):
    out = tmp_path / "r.json"
    load_tool("eval").main([CONFIG, os16_checkpoint, "--num-workers", "0", "--device", "cpu", "--out", str(out),
                            "--opts", f"data.root={demo_root}"])
    res = json.loads(out.read_text())
    assert (res["encoder"], res["output_stride"], res["norm"], res["trained_padding"]) == ("resnet18", 16, "bn",
                                                                                          "zeros")
    reference = DeepLabV3Plus("resnet18", 19, output_stride=16)  # built by hand, as the checkpoint was trained
    reference.load_state_dict(torch.load(os16_checkpoint, weights_only=True)["model"])
    expected = run_inference(reference.eval(), build_eval_loader(build_val_dataset({"root": demo_root})), None,
                             [SegmentationEvaluator()], device="cpu", progress=False)
    assert res["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-9)


def test_eval_refuses_a_command_line_architecture_that_contradicts_the_checkpoint(demo_root, os16_checkpoint,
                                                                                  tmp_path, capsys):
    argv = [CONFIG, os16_checkpoint, "--device", "cpu", "--out", str(tmp_path / "r.json"), "--opts",
            f"data.root={demo_root}", "model.output_stride=8"]
    err = one_line_error(load_tool("eval").main, argv, capsys)
    assert (f"model.output_stride=8 on the command line conflicts with checkpoint {os16_checkpoint}, trained with "
            "model.output_stride=16") in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_eval_errors_are_one_line_labels_beyond_classes_and_oversized_tiles(demo_root, tmp_path, capsys):
    ckpt = save_demo_checkpoint(tmp_path / "five.pth", ["model.num_classes=5"])
    argv = [CONFIG, ckpt, "--device", "cpu", "--num-workers", "0", "--out", str(tmp_path / "r.json"), "--opts",
            f"data.root={demo_root}"]
    err = one_line_error(load_tool("eval").main, argv, capsys)
    assert "five.pth: the model predicts 5 classes but the data section (data.format='cityscapes') names 19" in err
    argv[1] = save_demo_checkpoint(tmp_path / "all_classes.pth")
    err = one_line_error(load_tool("eval").main, argv[:2] + ["--mode", "tile", "--tile-size", "96"] + argv[2:], capsys)
    assert "error: tile size 96 is larger than the image" in err


# ---------------------------------------------------------------- case 9: housekeeping
def test_tools_import_the_installed_package_without_sys_path_edits():
    for path in glob.glob(os.path.join(ROOT, "tools", "*.py")):
        tree = ast.parse(open(path).read())
        edits = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys"]
        assert not edits, f"{path}: sys.path used on line(s) {edits}"


@pytest.mark.slow
def test_distributed_timeout_is_configurable_and_bounds_the_wait(monkeypatch):
    """A process group whose second rank never comes fails after train.dist_timeout_min, not forever."""
    assert 0 < SCHEMA["train"]["dist_timeout_min"]["default"] <= 30
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(Exception, match=r"[Tt]imed out after [1-9] seconds"):
        init_distributed("cpu", timeout_min=0.05)
    assert not torch.distributed.is_initialized()


def test_config_argument_resolves_shipped_configs_by_name(tmp_path, monkeypatch):
    parser = tool_parser(None)
    add_config_args(parser)
    shipped = os.path.join(ROOT, "configs", "cityscapes", "deeplabv3plus_r50_partial_896.yaml")
    monkeypatch.chdir(tmp_path)  # names resolve wherever the command runs
    for name in ("cityscapes/deeplabv3plus_r50_partial_896", "cityscapes/deeplabv3plus_r50_partial_896.yaml",
                 "configs/cityscapes/deeplabv3plus_r50_partial_896"):
        assert os.path.samefile(parser.parse_args([name]).config, shipped)
    (tmp_path / "cityscapes").mkdir()
    own = tmp_path / "cityscapes" / "deeplabv3plus_r50_partial_896.yaml"
    own.write_text("_base_: []\n")
    assert parser.parse_args([str(own.relative_to(tmp_path))]).config == "cityscapes/deeplabv3plus_r50_partial_896.yaml"
    assert parser.parse_args(["no/such_config"]).config == "no/such_config"  # load_config names it as given


def test_eval_config_option_takes_shipped_config_names(tmp_path, monkeypatch):
    shipped = os.path.join(ROOT, "configs", "demo", "deeplabv3plus_r18_zeros.yaml")
    monkeypatch.chdir(tmp_path)  # names resolve wherever the command runs
    eval_tool = load_tool("eval")
    for argv in (["model.pth", "--config", "demo/deeplabv3plus_r18_zeros"],
                 ["demo/deeplabv3plus_r18_zeros.yaml", "model.pth"]):
        args = eval_tool.parse_args(argv)
        assert os.path.samefile(args.config, shipped) and args.checkpoint == "model.pth"


# ---------------------------------------------------------------- issue 25, case 10: --device / --scales
BAD_OPTIONS = [("--device", "gpu0"), ("--device", "cuda:99"), ("--scales", "0,1"), ("--scales", "1,-0.5"),
               ("--scales", ","), ("--scales", "one"), ("--overlap", ","), ("--overlap", "1/4,1/3")]


TOOL_ARGS = {"eval": ["{missing}.pth"], "predict": ["{missing}.pth", "{missing}.png", "--out", "{missing}"],
             "cross_test": ["{missing}.pth"], "reproduce": []}
# cross_test has no --scales / --overlap; reproduce plans steps for another machine, so only the form of its
# --device is checked there (its cuda:99 may exist)
BAD_OPTION_CASES = ([(tool, option, value) for tool in ("eval", "predict") for option, value in BAD_OPTIONS]
                    + [("cross_test", "--device", "gpu0"), ("cross_test", "--device", "cuda:99"),
                       ("reproduce", "--device", "gpu0")])


@pytest.mark.parametrize("tool,option,value", BAD_OPTION_CASES)  # --overlap: one number, not IndexError on ","
def test_bad_device_or_scales_is_an_argparse_error_in_every_tool(tmp_path, monkeypatch, capsys, tool, option, value):
    """Refused while parsing (usage, exit 2, the option named), before any file is read: not a traceback from
    torch.device("gpu0") or from scale 0 after the model and data were loaded."""
    monkeypatch.chdir(tmp_path)  # a tool that wrongly accepted the value writes here
    main = load_tool(tool).main
    assert any(option in action.option_strings for action in _parser_actions(main)), f"{tool} has no {option}"
    args = TOOL_ARGS[tool]
    missing = str(tmp_path / "nope")
    with pytest.raises(SystemExit) as stop:
        main([a.format(missing=missing) for a in args] + [option, value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument {option}:" in err and "Traceback" not in err, err


def _parser_actions(main):
    """The argparse actions a tool's main() defines (captured from its parse_args call on --help)."""
    actions = []
    real = argparse.ArgumentParser.parse_args

    def capture(parser, args=None, namespace=None):
        actions.extend(parser._actions)
        raise SystemExit(0)
    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            main(["--help"])
    finally:
        argparse.ArgumentParser.parse_args = real
    return actions


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_cuda_is_an_argparse_error_or_one_line(tmp_path, capsys):
    for tool, args in (("eval", ["x.pth"]), ("predict", ["x.pth", "x.png", "--out", str(tmp_path)]),
                       ("cross_test", ["x.pth"])):
        with pytest.raises(SystemExit) as stop:
            load_tool(tool).main(args + ["--device", "cuda"])
        assert stop.value.code == 2 and "cuda requested but this machine has no CUDA device" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.device=cuda requested but this machine has no CUDA device"):
        init_distributed("cuda")  # train takes its device from the config: a one-line ConfigError


def test_device_and_scales_options_use_the_one_parser_in_seg_cli():
    """Every tool's --device / --scales / --overlap is typed by seg.cli (device_arg, device_name, scales_arg,
    fraction_arg)."""
    for path in glob.glob(os.path.join(ROOT, "tools", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument" and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value in ("--device", "--scales", "--overlap")):
                continue
            types = [kw.value.id for kw in node.keywords if kw.arg == "type" and isinstance(kw.value, ast.Name)]
            assert types and types[0] in ("device_arg", "device_name", "scales_arg", "fraction_arg"), \
                f"{path}:{node.lineno}"
