"""End-to-end classification on a tiny generated ImageFolder: learning, run summaries, resume, cross-testing.

Every training here runs in-process on CPU with one torch thread (2-core CI machines oversubscribe
badly with more), a few seconds each.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from seg.classification import build_classifier, generate_demo_imagefolder
from seg.engine.checkpoint import list_checkpoints, load_checkpoint
from seg.errors import WorkDirError

pytestmark = pytest.mark.slow  # trains or runs a tool end to end: left out of make test-fast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, PER_CLASS, VAL_PER_CLASS, EPOCHS = 24, 32, 8, 8


def _load_tool():
    path = os.path.join(ROOT, "tools", "train_classifier.py")
    spec = importlib.util.spec_from_file_location("train_classifier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo_cls(tmp_path_factory) -> str:
    return generate_demo_imagefolder(str(tmp_path_factory.mktemp("demo_cls")), PER_CLASS, VAL_PER_CLASS, SIZE, seed=0)


def _opts(root, **extra):
    opts = {"data.root": root, "data.crop_size": SIZE, "data.resize_size": SIZE, "data.scale_range": "[0.5,1.0]",
            "train.epochs": EPOCHS, "train.lr": 0.05, "train.lr_step_epochs": 6, "train.log_interval": 4, **extra}
    return ["--opts", *[f"{k}={v}" for k, v in opts.items()]]


@pytest.fixture(scope="module")
def two_runs(demo_cls, tmp_path_factory) -> str:
    """Two TinyNet zero-padding runs (seeds 0 and 1) through the command-line entry point."""
    work = str(tmp_path_factory.mktemp("cls_runs"))
    tool.main([os.path.join(ROOT, "configs", "demo_cls", "tinynet_zeros.yaml"), "--runs", "2", "--work-dir", work,
               *_opts(demo_cls)])
    return work


def _summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def _val_top1(run_dir) -> np.ndarray:
    """Per-epoch validation top-1 as logged in metrics.jsonl (not as summarised)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return np.array([r["top1"] for r in records if r["tag"] == "val"])


def test_tiny_imagefolder_is_learned_well_above_chance(two_runs):
    for r in range(2):
        s = _summary(os.path.join(two_runs, f"run{r}"))
        assert s["seed"] == r and len(s["history"]) == EPOCHS
        assert s["best"]["top1"] >= 75.0, s["history"]  # 4 classes: chance is 25 %
        assert s["last_k"]["top1"] > 50.0
        assert all(h["top5"] == 100.0 for h in s["history"])  # 4 classes: top-5 holds every class


def test_run_summary_and_over_runs_against_numpy(two_runs):
    best, last = [], []
    for r in range(2):
        run = os.path.join(two_runs, f"run{r}")
        top1 = _val_top1(run)
        assert len(top1) == EPOCHS
        s = _summary(run)
        assert s["best"]["top1"] == pytest.approx(top1.max()) and s["best"]["epoch"] == int(top1.argmax()) + 1
        assert s["last_k"]["top1"] == pytest.approx(top1[-5:].mean())
        best.append(top1.max())
        last.append(top1[-5:].mean())
    with open(os.path.join(two_runs, "runs_summary.json")) as f:
        tables = json.load(f)["tables"]
    for protocol, values in (("best", best), ("last_k", last)):
        (row,) = tables[protocol]
        assert row["name"] == "tinynet_zeros"
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
    assert os.path.isfile(os.path.join(two_runs, "runs_summary.md"))


def test_logged_lr_is_the_rate_of_the_logged_step(two_runs):
    """Step epoch schedule, computed here: step s (0-based) of epoch s // 8 uses 0.05 * 0.1 ** (epoch // 6)."""
    iters_per_epoch = 4 * PER_CLASS // 16  # 4 classes, global batch 16 (the demo config's)
    with open(os.path.join(two_runs, "run0", "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train = [r for r in records if r["tag"] == "train"]
    assert len(train) == EPOCHS * iters_per_epoch // 4  # train.log_interval=4
    for r in train:
        epoch = (r["iter"] - 1) // iters_per_epoch
        assert r["lr"] == pytest.approx(0.05 * 0.1 ** (epoch // 6), rel=1e-12), r
    for h in _summary(os.path.join(two_runs, "run0"))["history"]:  # the rate of the epoch's last step
        assert h["lr"] == pytest.approx(0.05 * 0.1 ** ((h["epoch"] - 1) // 6), rel=1e-12), h


def test_cross_test_evaluates_a_checkpoint_under_another_padding(two_runs, tmp_path):
    best_path = os.path.join(two_runs, "run0", "checkpoints", "best.pth")
    ckpt = load_checkpoint(best_path)
    partial = build_classifier("tinynet", num_classes=4, padding_mode="partial")
    assert list(partial.state_dict()) == list(ckpt["model"])  # padding adds no parameter or buffer
    tool.main(["--cross-test", best_path, "--paddings", "zeros", "partial", "--out", str(tmp_path)])
    with open(tmp_path / "cross_test.json") as f:
        out = json.load(f)
    results = {r["eval_padding"]: r for r in out["results"]}
    assert {r["trained_padding"] for r in out["results"]} == {"zeros"}
    # evaluating under the training padding reproduces the run's best epoch exactly
    assert results["zeros"]["top1"] == pytest.approx(_summary(os.path.join(two_runs, "run0"))["best"]["top1"])
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["tinynet_zeros -> tinynet_partial"]["diff"] == pytest.approx(
        results["partial"]["top1"] - results["zeros"]["top1"])
    # the partial-padding network really is a different function of the same weights
    model = build_classifier("tinynet", num_classes=4)
    model.load_state_dict(ckpt["model"])
    partial.load_state_dict(ckpt["model"])
    x = torch.randn(2, 3, SIZE, SIZE)
    assert not torch.allclose(model.eval()(x), partial.eval()(x), atol=1e-4)
    assert (tmp_path / "cross_test.md").read_text().count("tinynet_zeros -> ") == 2


def test_summarize_tables_against_numpy_over_the_logs_and_summaries_written_here(two_runs, tmp_path):
    """--summarize over the two trained zero-padding runs and two partial-padding summaries written by this test:
    per-run values from the runs' metrics.jsonl (zeros) or the values written (partial); mean, sample std
    (ddof=1) and the partial row's difference to the zeros row by numpy."""
    partial = {"best": [81.25, 78.5], "last_k": [77.0, 75.75]}
    for seed in range(2):
        folder = tmp_path / "partial" / f"run{seed}"
        folder.mkdir(parents=True)
        best = {"epoch": 3, "top1": partial["best"][seed], "top5": 100.0}
        last_k = {"k": 5, "requested_k": 5, "epochs": [4, 5, 6, 7, 8], "top1": partial["last_k"][seed], "top5": 100.0}
        (folder / "summary.json").write_text(json.dumps({"arch": "tinynet", "padding": "partial", "seed": seed,
                                                         "epochs": EPOCHS, "best": best, "last_k": last_k}))
    out = tmp_path / "tables"
    tool.main(["--summarize", str(tmp_path / "partial"), two_runs, "--out", str(out)])
    logs = [_val_top1(os.path.join(two_runs, f"run{r}")) for r in range(2)]
    zeros = {"best": [top1.max() for top1 in logs], "last_k": [top1[-5:].mean() for top1 in logs]}
    with open(out / "tables.json") as f:
        data = json.load(f)
    assert sorted((r["padding"], r["seed"]) for r in data["runs"]) == [("partial", 0), ("partial", 1), ("zeros", 0),
                                                                       ("zeros", 1)]
    markdown = (out / "tables.md").read_text()
    for protocol in ("best", "last_k"):
        z, p = np.array(zeros[protocol]), np.array(partial[protocol])
        rows = data["tables"][protocol]
        assert [r["name"] for r in rows] == ["tinynet_zeros", "tinynet_partial"]  # baseline first
        for row, values in zip(rows, (z, p)):
            np.testing.assert_allclose(row["values"], values, rtol=1e-12)
            assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert row["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert rows[0]["diff"] is None
        assert rows[1]["diff"] == pytest.approx(p.mean() - z.mean(), rel=1e-12)
        assert (f"| tinynet_partial | {p[0]:.3f} | {p[1]:.3f} | {p.mean():.3f} | {p.mean() - z.mean():.3f} | "
                f"{p.std(ddof=1):.3f} |") in markdown


def test_resume_mid_epoch_matches_uninterrupted_run(demo_cls, tmp_path, capsys):
    cfg = os.path.join(ROOT, "configs", "demo_cls", "tinynet_partial.yaml")
    opts = _opts(demo_cls, **{"train.epochs": 3, "train.ckpt_interval": 3, "train.keep_checkpoints": 0})
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    tool.main([cfg, "--work-dir", full, *opts])
    shutil.copytree(full, cut)
    for it, path in list_checkpoints(cut):
        if it > 12:  # 8 iterations per epoch: keep iteration 12, in the middle of epoch 2
            os.remove(path)
    os.remove(os.path.join(cut, "model_final.pth"))
    os.remove(os.path.join(cut, "summary.json"))
    capsys.readouterr()
    tool.main([cfg, "--work-dir", cut, "--resume", "auto", *opts])
    assert "iter_0000012.pth at iteration 12 (epoch 1.50)" in capsys.readouterr().out
    a, b = _summary(full)["history"], _summary(cut)["history"]
    keys = ("epoch", "top1", "top5", "val_loss", "lr", "iteration")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]
    wa = load_checkpoint(os.path.join(full, "model_final.pth"))["model"]
    wb = load_checkpoint(os.path.join(cut, "model_final.pth"))["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fresh_run_over_an_existing_run_is_refused_and_changes_nothing(two_runs, demo_cls):
    run0 = os.path.join(two_runs, "run0")
    files = [os.path.join(run0, name) for name in ("summary.json", "metrics.jsonl", "model_final.pth")]
    before = {p: open(p, "rb").read() for p in files}
    with pytest.raises(WorkDirError, match=f"work dir {run0} already holds a run .*--overwrite"):
        tool.main([os.path.join(ROOT, "configs", "demo_cls", "tinynet_zeros.yaml"), "--work-dir", run0,
                   *_opts(demo_cls)])
    assert {p: open(p, "rb").read() for p in before} == before


def test_cli_reports_empty_class_folder(tmp_path):
    root = generate_demo_imagefolder(str(tmp_path / "data"), 1, 1, 8, seed=0)
    empty = os.path.join(root, "train", "disk")
    shutil.rmtree(empty)
    os.makedirs(empty)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_classifier.py"),
                           os.path.join(ROOT, "configs", "demo_cls", "tinynet_zeros.yaml"),
                           "--work-dir", str(tmp_path / "work"), "--opts", f"data.root={root}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert f"error: class folder {empty} holds no image" in proc.stderr


def test_torchrun_two_cpu_ranks_score_every_val_image_once(demo_cls, tmp_path):
    work = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "tools", "train_classifier.py"),
           os.path.join(ROOT, "configs", "demo_cls", "tinynet_partial.yaml"),
           "--work-dir", str(work), *_opts(demo_cls, **{"train.epochs": 2})]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2 on cpu | global batch 16" in proc.stdout
    s = _summary(str(work))
    assert [h["val_count"] for h in s["history"]] == [4 * VAL_PER_CLASS] * 2  # sharded, no padding repeats
    # the all-reduced sharded score equals a one-process evaluation of the saved best weights
    tool.main(["--cross-test", str(work / "checkpoints" / "best.pth"), "--paddings", "partial", "--out", str(tmp_path)])
    with open(tmp_path / "cross_test.json") as f:
        (result,) = json.load(f)["results"]
    assert result["top1"] == pytest.approx(s["best"]["top1"])
    assert result["loss"] == pytest.approx(s["history"][s["best"]["epoch"] - 1]["val_loss"], rel=1e-5)
