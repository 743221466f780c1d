"""One of each: expected failures are SegErrors, one device resolver, one rank helper, one tile check, data
defaults in the config only."""
import ast
import builtins
import glob
import inspect
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seg.data import SegDataset, SegTrainDataset
from seg.engine.distributed import all_reduce_mean, current_dist, parse_device, resolve_device
from seg.engine.loaders import ShardSampler
from seg.errors import ConfigError, SegError
from seg.evaluation.inference import check_tile_fits, predict_logits, tile_starts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILTIN_ERRORS = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}

# (file, enclosing function, builtin): the only bare raises of builtin exceptions seg/ may hold, each a
# programmer error or a Python protocol, never a failure a user can cause with a config, a file or an option.
ALLOWED_BUILTIN_RAISES = {
    # a module __getattr__ must raise AttributeError for a missing name: hasattr() and import machinery rely on it
    ("seg/__init__.py", "__getattr__", "AttributeError"),
}


def builtin_raises(path: str) -> list[tuple[str, str, str, int]]:
    """(file, enclosing function, exception name, line) of every ``raise <builtin>`` / ``raise <builtin>(...)``."""
    rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(exc, ast.Name) and exc.id in BUILTIN_ERRORS:
                    found.append((rel, function, exc.id, child.lineno))
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            visit(child, inner)

    with open(path) as f:
        visit(ast.parse(f.read()), "<module>")
    return found


def test_builtin_raises_are_spotted(tmp_path):
    """The walk itself: it sees calls and bare names, nested functions, and ignores seg's own errors."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    def g():\n        raise KeyError('k')\n    raise ValueError\n"
                    "def h():\n    raise ConfigError('x')\n    raise\n")
    assert [r[1:] for r in builtin_raises(str(path))] == [("g", "KeyError", 3), ("f", "ValueError", 4)]


def test_seg_raises_only_seg_errors_for_expected_failures():
    files = sorted(glob.glob(os.path.join(ROOT, "seg", "**", "*.py"), recursive=True))
    assert len(files) > 50
    raises = [r for path in files for r in builtin_raises(path)]
    bare = [f"{file}:{line} raise {name} in {function}()" for file, function, name, line in raises
            if (file, function, name) not in ALLOWED_BUILTIN_RAISES]
    assert not bare, "expected failures must raise a seg.errors.SegError subclass:\n" + "\n".join(bare)
    assert {r[:3] for r in raises} == ALLOWED_BUILTIN_RAISES  # no stale allow-list entry


# ---------------------------------------------------------------- the device resolver
@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has `n` CUDA devices (resolve_device only asks, it never touches one)."""
    def have(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return have


@pytest.mark.parametrize("spec, count, local_rank, expected", [
    ("cpu", 0, 0, "cpu"), (" CPU ", 2, 1, "cpu"), ("auto", 0, 3, "cpu"), ("auto", 2, 1, "cuda:1"),
    ("cuda", 1, 0, "cuda:0"), ("cuda", 4, 3, "cuda:3"), ("cuda:1", 2, 0, "cuda:1"), ("Cuda:0", 1, 0, "cuda:0"),
    (torch.device("cuda", 1), 2, 0, "cuda:1"), (torch.device("cpu"), 0, 0, "cpu"),
])
def test_resolve_device(gpus, spec, count, local_rank, expected):
    gpus(count)
    assert resolve_device(spec, "--device", local_rank) == torch.device(expected)


@pytest.mark.parametrize("spec, count, local_rank, message", [
    ("cuda", 0, 0, "train.device=cuda requested but this machine has no CUDA device"),
    ("cuda:2", 2, 0, "train.device=cuda:2 requested but this machine has only 2 CUDA device(s)"),
    ("auto", 2, 2, "train.device=auto requested but this machine has only 2 CUDA device(s)"),  # a rank too many
    ("mps", 0, 0, "train.device=mps: Apple's MPS backend is not supported (seg runs on CUDA or the CPU); use cpu"),
    ("gpu0", 1, 0, "train.device: expected auto, cpu, cuda or cuda:N, got 'gpu0'"),
    ("cuda:", 1, 0, "train.device: expected auto, cpu, cuda or cuda:N, got 'cuda:'"),
    ("cuda:-1", 1, 0, "train.device: expected auto, cpu, cuda or cuda:N, got 'cuda:-1'"),
])
def test_resolve_device_refuses_in_one_line_naming_the_option(gpus, spec, count, local_rank, message):
    gpus(count)
    with pytest.raises(ConfigError) as err:
        resolve_device(spec, "train.device", local_rank)
    assert str(err.value) == message


def test_parse_device_checks_the_form_only(gpus):
    gpus(0)  # cuda:7 may exist on the machine a planned step runs on
    assert [parse_device(s, "--device") for s in ("AUTO", "cuda:7", "cpu")] == ["auto", "cuda:7", "cpu"]
    with pytest.raises(ConfigError, match="--device: expected"):
        parse_device("tpu", "--device")


def test_every_bench_device_option_is_parsed_by_seg_cli():
    """bench/ scripts read --device through seg.cli as tools/ do (tests/test_cli.py checks tools/), so every
    script resolves it with resolve_device instead of a default of its own."""
    checked = 0
    for path in glob.glob(os.path.join(ROOT, "bench", "**", "*.py"), recursive=True):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument" and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value == "--device"):
                types = [kw.value.id for kw in node.keywords if kw.arg == "type" and isinstance(kw.value, ast.Name)]
                assert types in (["device_arg"], ["device_name"]), f"{path}:{node.lineno}"
                checked += 1
    assert checked >= 3


# ---------------------------------------------------------------- the rank helper
def test_current_dist_without_a_process_group(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    info = current_dist()
    assert (info.rank, info.world_size, info.local_rank, info.device) == (0, 1, 3, torch.device("cpu"))
    assert info.is_main and not info.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world_size: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        info = current_dist()
        mean = all_reduce_mean(torch.tensor([float(rank), 10.0 * rank], dtype=torch.float64))
        torch.save({"info": (info.rank, info.world_size, str(info.device), info.is_main, info.distributed),
                    "shard": list(ShardSampler(range(7))), "mean": mean.tolist()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_current_dist_in_a_two_rank_group(tmp_path):
    out = str(tmp_path / "rank")
    # fork: the ranks need nothing re-imported, which keeps this test at a second or two
    mp.start_processes(_rank_worker, args=(2, _free_port(), out), nprocs=2, join=True, start_method="fork")
    got = [torch.load(f"{out}.{r}", weights_only=False) for r in (0, 1)]
    assert [g["info"] for g in got] == [(0, 2, "cpu", True, True), (1, 2, "cpu", False, True)]
    assert [g["shard"] for g in got] == [[0, 2, 4, 6], [1, 3, 5]]  # rank r takes r, r+2, ...: nothing twice
    assert got[0]["mean"] == got[1]["mean"] == [0.5, 5.0]


# ---------------------------------------------------------------- one tile check
@pytest.mark.parametrize("tile, height, width", [(4, 4, 4), (4, 3, 9), (4, 9, 3), (5, 5, 6), (1, 1, 1), (8, 7, 7)])
def test_check_tile_fits(tile, height, width):
    if tile <= min(height, width):
        check_tile_fits(tile, height, width)
    else:
        with pytest.raises(ConfigError, match=f"^tile size {tile} is larger than the image {height}x{width};"):
            check_tile_fits(tile, height, width)


def test_every_tile_path_refuses_a_tile_larger_than_the_image_the_same_way():
    model = torch.nn.Conv2d(3, 2, 1)
    errors = []
    for call in (lambda: tile_starts(5, 6, 3),
                 lambda: predict_logits(model, torch.zeros(1, 3, 5, 8), mode="tile", tile_size=6)):
        with pytest.raises(SegError) as err:
            call()
        errors.append(err.value)
    assert [type(e) for e in errors] == [ConfigError, ConfigError]
    assert str(errors[0]).startswith("tile size 6 is larger than the image 5;")
    assert str(errors[1]).startswith("tile size 6 is larger than the image 5x8;")


# ---------------------------------------------------------------- data defaults in one place
@pytest.mark.parametrize("cls", [SegDataset, SegTrainDataset])
def test_dataset_constructors_take_explicit_values(cls):
    """The data section's defaults live in the config (DATA_DEFAULTS, the schema built on it): a constructor
    default would be a second copy that can drift."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert params and [p.name for p in params if p.default is not inspect.Parameter.empty] == []
