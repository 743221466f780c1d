"""Runs that cannot clobber each other (issue 12): work-dir ownership, resume semantics, divergence, early
data checks, all-ignore batches, crash-safe files, housekeeping. Engine level, on the tiny stand-in network
of test_train_engine (a few seconds per run)."""
import glob
import json
import math
import os
import shutil

import cv2
import pytest
import torch
from test_train_engine import CPU, ColourBlobs, TinyNet, tiny_cfg

import seg.segmentation.criterion as criterion
from seg.config import ConfigError
from seg.data import DataError, build_val_dataset
from seg.data.balance import cache_key, load_or_compute_centroids
from seg.engine import (
    CheckpointError,
    NonFiniteLossError,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from seg.engine.checkpoint import checkpoint_path, list_checkpoints
from seg.engine.workdir import WorkDirLock
from seg.errors import WorkDirError
from seg.evaluation.result import write_json
from seg.segmentation import build_criterion, train

pytestmark = pytest.mark.slow  # trains or runs a tool end to end: left out of make test-fast


def run(cfg, work_dir, resume=None, overwrite=False):
    seed_everything(0)
    extra = {"overwrite": True} if overwrite else {}
    return train(cfg, TinyNet(), ColourBlobs(), CPU, str(work_dir), resume=resume, **extra)


def metrics(work_dir, tag="train"):
    return [json.loads(line) for line in open(os.path.join(work_dir, "metrics.jsonl")) if f'"{tag}"' in line]


def snapshot(work_dir):
    """{relative path: bytes} of every file of a work dir but the lock."""
    out = {}
    for path in glob.glob(os.path.join(work_dir, "**", "*"), recursive=True):
        if os.path.isfile(path) and not path.endswith(".lock"):
            out[os.path.relpath(path, work_dir)] = open(path, "rb").read()
    return out


def all_finite(state):
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def poly_lr(base, step, total, power=0.9):
    """The rate step `step` (1-based) uses: the schedule at iteration step - 1 (no warm-up)."""
    return base * (1 - (step - 1) / total) ** power


# ---------------------------------------------------------------- case 1: work-dir ownership
def test_fresh_run_in_a_work_dir_holding_a_run_is_refused_and_changes_nothing(tmp_path):
    run(tiny_cfg(), tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(WorkDirError, match=r"already holds a run \(config.yaml, metrics.jsonl, model_final.pth, "
                                           r"checkpoints, run.json\).*--resume auto.*--overwrite"):
        run(tiny_cfg(iterations=4), tmp_path)
    assert snapshot(tmp_path) == before


def test_overwrite_moves_the_old_run_aside_whole(tmp_path, capsys):
    work = tmp_path / "wd"
    run(tiny_cfg(), work)
    before = snapshot(work)
    run(tiny_cfg(iterations=4), work, overwrite=True)
    (old,) = glob.glob(str(tmp_path / "wd.old-*"))
    assert snapshot(old) == before  # every file of the old run, unchanged
    assert f"moved the previous run in {work} to {old}" in capsys.readouterr().out
    assert [it for it, _ in list_checkpoints(str(work))] == [4]  # the new run's own checkpoint survived pruning
    assert [r["iter"] for r in metrics(work)] == [2, 4]


def test_a_second_job_in_a_locked_work_dir_is_refused(tmp_path):
    lock = WorkDirLock(str(tmp_path))  # another job holding the work dir
    try:
        with pytest.raises(WorkDirError, match=f"in use by another job \\(pid {os.getpid()}"):
            run(tiny_cfg(), tmp_path)
        assert not (tmp_path / "metrics.jsonl").exists()
    finally:
        lock.release()
    run(tiny_cfg(iterations=2), tmp_path)  # released: the work dir is usable again


def test_resume_auto_takes_only_its_own_runs_checkpoints(tmp_path, capsys):
    run(tiny_cfg(), tmp_path / "a")  # another run, further on (iteration 8)
    run(tiny_cfg(iterations=4), tmp_path / "b")
    shutil.copy(checkpoint_path(str(tmp_path / "a"), 8), checkpoint_path(str(tmp_path / "b"), 8))
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"skipping checkpoint .*iter_0000008.pth belongs to run"):
        run(tiny_cfg(iterations=8), tmp_path / "b", resume="auto")
    assert f"resumed from {checkpoint_path(str(tmp_path / 'b'), 4)} at iteration 4" in capsys.readouterr().out


def test_resume_from_another_runs_checkpoint_path_is_refused(tmp_path):
    run(tiny_cfg(), tmp_path / "a")
    run(tiny_cfg(iterations=4), tmp_path / "b")
    with pytest.raises(WorkDirError, match=r"iter_0000004.pth belongs to run \w+, but work dir .*b holds run"):
        run(tiny_cfg(), tmp_path / "b", resume=checkpoint_path(str(tmp_path / "a"), 4))


# ---------------------------------------------------------------- case 2: resume semantics
def test_resume_with_a_new_lr_takes_effect_from_the_resumed_step(tmp_path, capsys):
    run(tiny_cfg(), tmp_path)  # lr 0.05, 8 iterations, checkpoints at 4 and 8
    os.remove(checkpoint_path(str(tmp_path), 8))
    capsys.readouterr()
    run(tiny_cfg(lr=0.001), tmp_path, resume="auto")
    out = capsys.readouterr().out
    assert "train.lr: 0.05 -> 0.001" in out and "take effect from iteration 4" in out
    logged = {r["iter"]: r["lr"] for r in metrics(tmp_path)}
    assert math.isclose(logged[4], poly_lr(0.05, 4, 8), rel_tol=1e-9)  # before the resume: the old rate
    for it in (6, 8):
        assert math.isclose(logged[it], poly_lr(0.001, it, 8), rel_tol=1e-9), (it, logged)
    assert load_checkpoint(str(tmp_path / "model_final.pth"))["config"]["train"]["lr"] == 0.001


def test_resume_with_more_iterations_trains_on_at_the_rebuilt_schedule(tmp_path):
    run(tiny_cfg(), tmp_path)  # finished at iteration 8
    done = load_checkpoint(checkpoint_path(str(tmp_path), 8))["model"]
    run(tiny_cfg(iterations=12), tmp_path, resume="auto")
    logged = {r["iter"]: r["lr"] for r in metrics(tmp_path)}
    for it in (10, 12):
        assert logged[it] > 0 and math.isclose(logged[it], poly_lr(0.05, it, 12), rel_tol=1e-9), (it, logged)
    final = load_checkpoint(str(tmp_path / "model_final.pth"))
    assert final["meta"]["iteration"] == 12
    moved = [k for k, v in done.items() if v.is_floating_point() and not torch.equal(v, final["model"][k])]
    assert len(moved) >= len(done) // 2  # the weights did change


def test_resume_with_fewer_iterations_than_done_is_refused(tmp_path):
    run(tiny_cfg(), tmp_path)
    with pytest.raises(Exception, match=r"train.iterations=6 is below the iteration 8"):
        run(tiny_cfg(iterations=6), tmp_path, resume="auto")


# ---------------------------------------------------------------- case 3: divergence
class BufferBlowsUp(TinyNet):
    """TinyNet whose BatchNorm running variance becomes inf from the `after`-th forward on, while the loss
    stays finite (train-mode BN uses batch statistics): divergence the loss guard cannot see."""

    def __init__(self, after):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            self.body[1].running_var.fill_(float("inf"))
        return super().forward(x)


def test_non_finite_buffers_stop_the_run_and_are_never_saved(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"body.1.running_var.*verified finite\): \S*iter_0000004.pth"):
        train(tiny_cfg(), BufferBlowsUp(after=5), ColourBlobs(), CPU, str(tmp_path))
    assert [it for it, _ in list_checkpoints(str(tmp_path))] == [4]
    assert not (tmp_path / "model_final.pth").exists()
    assert all_finite(load_checkpoint(checkpoint_path(str(tmp_path), 4))["model"])


def test_resume_auto_passes_over_a_checkpoint_holding_nan(tmp_path, capsys):
    run(tiny_cfg(), tmp_path)
    path = checkpoint_path(str(tmp_path), 8)
    ckpt = torch.load(path, weights_only=True)  # one written by an older version, without the guard
    ckpt["model"]["body.1.running_mean"][0] = float("nan")
    torch.save(ckpt, path)
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"skipping checkpoint .*iter_0000008.pth holds 1 non-finite tensor"):
        run(tiny_cfg(iterations=12), tmp_path, resume="auto")
    assert "iter_0000004.pth at iteration 4" in capsys.readouterr().out


# ---------------------------------------------------------------- case 4: early data checks
@pytest.fixture
def demo_copy(demo_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root, ignore=shutil.ignore_patterns(".cache"))
    return root


def val_files(root, pattern):
    return sorted(glob.glob(str(root / "**" / "val" / "*" / pattern), recursive=True))


def test_truncated_val_image_is_found_when_the_set_is_built(demo_copy):
    image = val_files(demo_copy, "*_leftImg8bit.png")[2]
    data = open(image, "rb").read()
    open(image, "wb").write(data[:-200])
    with pytest.raises(DataError, match=f"{image}: truncated PNG"):
        build_val_dataset({"root": str(demo_copy)})


def bad_label(root, index, value=200):
    label = val_files(root, "*_gtFine_labelTrainIds.png")[index]
    lbl = cv2.imread(label, cv2.IMREAD_UNCHANGED)
    lbl[5, 7] = value
    cv2.imwrite(label, lbl)
    return label


def demo_classes_cfg(**train):
    """tiny_cfg with the demo data's 19 classes (Cityscapes trainIds), so that its labels are in range."""
    cfg = tiny_cfg(**train)
    cfg["model"]["num_classes"] = 19
    return cfg


def test_bad_val_label_fails_before_iteration_1(demo_copy, tmp_path):
    label = bad_label(demo_copy, 3)
    val_set = build_val_dataset({"root": str(demo_copy)})
    seed_everything(0)
    with pytest.raises(DataError, match=f"{label}: label values \\[200\\]"):
        train(demo_classes_cfg(), TinyNet(), ColourBlobs(), CPU, str(tmp_path / "wd"), val_set=val_set)
    assert snapshot(tmp_path / "wd") == {}  # nothing written: the same command runs once the data is fixed


def test_verify_checks_every_val_label_not_only_a_sample(demo_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(criterion, "VERIFY_SAMPLE", 2)  # the sample: first and last file
    label = bad_label(demo_copy, 1)
    val_set = build_val_dataset({"root": str(demo_copy)})
    with pytest.raises(DataError, match=f"{label}: label values \\[200\\]"):
        train(demo_classes_cfg(iterations=2), TinyNet(), ColourBlobs(), CPU, str(tmp_path / "wd"), val_set=val_set,
              verify=True)


def test_val_labels_beyond_num_classes_fail_before_iteration_1_naming_the_key(demo_root, tmp_path):
    val_set = build_val_dataset({"root": demo_root})  # Cityscapes trainIds 0..18; the config says 3 classes
    with pytest.raises(DataError, match=r"outside 0..2 of model.num_classes=3"):
        train(tiny_cfg(), TinyNet(), ColourBlobs(), CPU, str(tmp_path), val_set=val_set)
    assert snapshot(tmp_path) == {}


# ---------------------------------------------------------------- case 5: all-ignore batches
class IgnoredInEpoch1(ColourBlobs):
    """ColourBlobs whose every pixel is ignore (255) in epoch 1 (iterations 5-8 with 4 per epoch)."""

    def __getitem__(self, i):
        img, target = super().__getitem__(i)
        return img, torch.full_like(target, 255) if self.epoch == 1 else target


def test_all_ignore_batches_are_skipped_with_a_counted_warning(tmp_path, capsys):
    seed_everything(0)
    train(tiny_cfg(), TinyNet(), IgnoredInEpoch1(), CPU, str(tmp_path))
    out = capsys.readouterr()
    assert "step skipped (4 so far)" in out.out + out.err and "4 batch(es) without a labelled pixel" in out.out
    records = {r["iter"]: r for r in metrics(tmp_path)}
    assert records[8]["loss"] is None and records[8]["skipped_batches"] == 4
    # skipped steps change nothing: the final weights and BN statistics are those of iteration 4
    at4 = load_checkpoint(checkpoint_path(str(tmp_path), 4))["model"]
    final = load_checkpoint(str(tmp_path / "model_final.pth"))["model"]
    assert all(torch.equal(at4[k], final[k]) for k in at4 if k != "body.1.num_batches_tracked")


def test_criterion_gives_zero_not_nan_for_a_rank_without_labelled_pixels():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = build_criterion(tiny_cfg()["train"], torch.device("cpu"))(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


# ---------------------------------------------------------------- case 6: crash-safe files
def test_results_json_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "eval.json"
    write_json({"mIoU": 70.0}, str(path))
    with pytest.raises(TypeError):  # fails half-way through serialising
        write_json({"mIoU": 71.0, "later": object()}, str(path))
    assert json.loads(path.read_text()) == {"mIoU": 70.0}
    assert os.listdir(tmp_path) == ["eval.json"]


def test_torn_last_metrics_line_is_dropped_on_resume_with_a_warning(tmp_path):
    run(tiny_cfg(), tmp_path)
    os.remove(checkpoint_path(str(tmp_path), 8))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"iter": 9, "tag": "tra')  # killed mid-append
    with pytest.warns(UserWarning, match=r"metrics.jsonl: dropping unreadable line 5"):
        run(tiny_cfg(), tmp_path, resume="auto")
    assert [r["iter"] for r in metrics(tmp_path)] == [2, 4, 6, 8]


# ---------------------------------------------------------------- case 8 (engine part): one-line errors
def test_batch_of_one_image_per_process_with_batchnorm_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"train.batch_size=1 gives 1 image per process; BatchNorm"):
        run(tiny_cfg(batch_size=1), tmp_path)


def test_full_disk_while_saving_is_a_checkpoint_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "iter_0000004.pth")
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed; unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint {path}: .*no space left on device"):
        save_checkpoint({"model": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["iter_0000004.pth"]


def test_unusable_work_dir_is_a_work_dir_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WorkDirError, match=f"cannot use work dir {blocker}/wd"):
        run(tiny_cfg(), blocker / "wd")


# ---------------------------------------------------------------- case 9: housekeeping
def test_stale_temporary_checkpoints_are_removed_at_start(tmp_path, capsys):
    run(tiny_cfg(iterations=4), tmp_path)
    stale = [checkpoint_path(str(tmp_path), 8) + ".tmp4242", str(tmp_path / "config.yaml.tmp4242")]
    for path in stale:
        open(path, "wb").write(b"\0" * 1000)  # left by a job killed while writing
    run(tiny_cfg(), tmp_path, resume="auto")
    assert not any(os.path.exists(p) for p in stale)
    assert f"removed stale temporary file {stale[0]}" in capsys.readouterr().out


def test_unreadable_centroid_cache_is_recomputed(demo_copy):
    labels = val_files(demo_copy, "*_gtFine_labelTrainIds.png")
    first = load_or_compute_centroids(str(demo_copy), labels, 4)
    cache = demo_copy / ".cache" / f"centroids_{cache_key(str(demo_copy), labels, 4)}.npz"
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2])  # truncated zip
    with pytest.warns(UserWarning, match="unreadable centroid cache"):
        again = load_or_compute_centroids(str(demo_copy), labels, 4)
    assert (again.item == first.item).all() and (again.xy == first.xy).all()
    assert cache.read_bytes() == data  # rewritten whole
