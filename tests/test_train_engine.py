"""Training engine on a tiny stand-in network and a synthetic learnable dataset (no seg.models needed)."""
import ast
import glob
import json
import math
import os
import time
import types

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import Dataset

import seg.engine.loop as loop_module
from seg.config import ConfigError, load_config
from seg.data.io import DataError
from seg.engine import (
    CheckpointError,
    DistInfo,
    Hook,
    NonFiniteLossError,
    PolyLR,
    TrainLoop,
    build_optimizer,
    build_scheduler,
    find_resume_checkpoint,
    load_checkpoint,
    seed_everything,
)
from seg.engine.checkpoint import checkpoint_path, export_from_checkpoint, list_checkpoints
from seg.engine.ema import WeightEMA
from seg.engine.guard import StepGuard
from seg.engine.loop import _Window
from seg.engine.sampler import ResumableDistributedSampler
from seg.engine.step import guarded_step
from seg.segmentation import build_criterion, train


class TinyNet(nn.Module):
    """conv-BN-ReLU-dropout-conv: small, has BN buffers and uses the global RNG (dropout)."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.1),
                                  nn.Conv2d(8, num_classes, 1))

    def forward(self, x):
        return self.body(x)


class ColourBlobs(Dataset):
    """Class of a pixel = argmax of its 3 channels (learnable by a 1x1 conv), some pixels 255."""

    def __init__(self, n=16, size=16, seed=0):
        self.n, self.size, self.seed, self.epoch = n, size, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        # random augmentation through the global RNG: the engine must seed it per (epoch, index)
        img = torch.rand(3, self.size, self.size) * 2 - 1
        target = img.argmax(0)
        img = img + 0.1 * self.epoch  # the data depends on the epoch, as a class-balanced crop plan does
        target[torch.rand(self.size, self.size) < 0.1] = 255
        return img, target


def tiny_cfg(**train):
    opts = ["model.num_classes=3", "data.num_workers=0", "data.val_split=null", "train.batch_size=4",
            "train.iterations=8", "train.lr=0.05", "train.log_interval=2", "train.ckpt_interval=4",
            "train.deterministic=true"] + [f"train.{k}={v}" for k, v in train.items()]
    return load_config(None, opts)


CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def run(cfg, work_dir, resume=None, model_seed=0, validate=None):
    seed_everything(model_seed)
    model = TinyNet()
    return train(cfg, model, ColourBlobs(), CPU, str(work_dir), resume=resume, validate=validate)


def weight_score(model):
    """A validation stand-in: a number of the weights (float64 sum), drawing from the global RNG as a validation
    loader's seed does."""
    torch.rand(())
    return {"mIoU": sum(float(v.double().sum()) for v in model.state_dict().values())}


@pytest.mark.slow
def test_short_training_lowers_loss(tmp_path):
    cfg = tiny_cfg(iterations=30, log_interval=5, ckpt_interval=30)
    run(cfg, tmp_path)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses = [r["loss"] for r in records if r["tag"] == "train"]
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0], losses
    assert (tmp_path / "model_final.pth").exists()
    export = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert set(export) == {"model", "config", "meta"} and export["meta"]["iteration"] == 30


@pytest.mark.slow
def test_data_workers_give_the_same_run(tmp_path):
    """Persistent workers must still see every epoch (it travels with the index) and per-item seeds."""
    inline = run(tiny_cfg(iterations=10), tmp_path / "w0")  # 4 iterations per epoch: 3 epochs
    cfg = tiny_cfg(iterations=10)
    cfg["data"]["num_workers"] = 2
    workers = run(cfg, tmp_path / "w2")
    for (name, a), b in zip(inline.state_dict().items(), workers.state_dict().values()):
        assert torch.equal(a, b), name


def test_poly_lr_with_warmup_matches_formula():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = PolyLR(opt, max_iters=100, power=0.9, warmup_iters=10, warmup_factor=0.2)
    for it in range(100):
        expected = 0.1 * (1 - it / 100) ** 0.9
        if it < 10:
            expected *= 0.2 + 0.8 * it / 10
        assert math.isclose(opt.param_groups[0]["lr"], expected, rel_tol=1e-12), it
        opt.step()
        sched.step()


def test_no_wd_norm_bias_groups():
    cfg = tiny_cfg(no_wd_norm_bias="true", weight_decay=0.01)
    opt = build_optimizer(TinyNet(), cfg["train"])
    decayed = {p.ndim for p in opt.param_groups[0]["params"]}
    assert decayed == {4} and opt.param_groups[0]["weight_decay"] == 0.01
    assert {p.ndim for p in opt.param_groups[1]["params"]} == {1} and opt.param_groups[1]["weight_decay"] == 0.0
    assert len(opt.param_groups[1]["params"]) == 4  # two conv biases + BN weight and bias


@pytest.mark.slow
@pytest.mark.parametrize("choice", [{}, {"optimizer": "adamw", "weight_decay": 0.05},
                                    {"lr_schedule": "cosine", "warmup_iters": 4}, {"ema_decay": 0.9}])
def test_resume_matches_uninterrupted_run(tmp_path, choice):
    """Train 8 iterations straight, vs resume from the iteration-6 checkpoint: mid-epoch (4 iterations per
    epoch), from a scrambled process state; with SGD + poly, AdamW, and a cosine schedule with warm-up."""
    ema = "ema_decay" in choice
    cfg = tiny_cfg(ckpt_interval=3, **choice, **({"val_interval": 4} if ema else {}))
    validate = weight_score if ema else None  # with an EMA, validations at 4 and 8 score it beside the weights
    full = run(cfg, tmp_path / "full", validate=validate)
    run(cfg, tmp_path / "part", validate=validate)  # writes iter 3, 6 and 8
    os.remove(checkpoint_path(str(tmp_path / "part"), 8))
    seed_everything(123)  # scramble the global RNG: the checkpoint must restore it
    resumed = run(cfg, tmp_path / "part", resume="auto", model_seed=99, validate=validate)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    if ema:
        full_ema, resumed_ema = (load_checkpoint(str(tmp_path / run_dir / "model_ema.pth"))["model"]
                                 for run_dir in ("full", "part"))
        assert full_ema.keys() == resumed_ema.keys()
        assert all(torch.equal(full_ema[k], resumed_ema[k]) for k in full_ema)
        full_val, resumed_val = ([r for r in map(json.loads, open(tmp_path / run_dir / "metrics.jsonl"))
                                  if r["tag"] == "val"][-1] for run_dir in ("full", "part"))
        assert resumed_val["iter"] == 8 and "ema_mIoU" in resumed_val
        assert {k: v for k, v in full_val.items() if k != "time"} == {k: v for k, v in resumed_val.items()
                                                                       if k != "time"}


def test_checkpoint_is_weights_only_and_complete(tmp_path):
    run(tiny_cfg(), tmp_path)
    ckpt = torch.load(checkpoint_path(str(tmp_path), 8), weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "iteration", "rng", "config"} <= set(ckpt)
    assert ckpt["iteration"] == 8 and ckpt["config"]["train"]["batch_size"] == 4
    assert [it for it, _ in list_checkpoints(str(tmp_path))] == [8, 4]


def test_truncated_checkpoint_is_passed_over(tmp_path):
    run(tiny_cfg(), tmp_path)
    newest = checkpoint_path(str(tmp_path), 8)
    data = open(newest, "rb").read()
    open(newest, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="iter_0000008.pth"):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match="skipping.*iter_0000008.pth.*truncated or corrupt"):
        path, ckpt = find_resume_checkpoint(str(tmp_path))
    assert path == checkpoint_path(str(tmp_path), 4) and ckpt["iteration"] == 4


def test_model_only_export_from_checkpoint(tmp_path):
    run(tiny_cfg(), tmp_path)
    src = checkpoint_path(str(tmp_path), 4)
    export_from_checkpoint(src, str(tmp_path / "shared.pth"))
    out = torch.load(tmp_path / "shared.pth", weights_only=True)
    assert set(out) == {"model", "config", "meta"} and out["meta"]["iteration"] == 4
    full = torch.load(src, weights_only=True)
    assert out["model"].keys() == full["model"].keys()
    assert all(torch.equal(out["model"][k], full["model"][k]) for k in full["model"])
    net = TinyNet()
    net.load_state_dict(out["model"])  # loads into a fresh network as is


def test_missing_checkpoint_names_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found: .*nope.pth"):
        load_checkpoint(str(tmp_path / "nope.pth"))


class NaNAfter(nn.Module):
    """TinyNet whose output becomes NaN from the `after`-th forward on."""

    def __init__(self, after):
        super().__init__()
        self.net, self.after, self.calls = TinyNet(), after, 0

    def forward(self, x):
        self.calls += 1
        y = self.net(x)
        return y * float("nan") if self.calls > self.after else y


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg()
    model = NaNAfter(after=5)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at iteration 6.*iter_0000004.pth"):
        train(cfg, model, ColourBlobs(), CPU, str(tmp_path))
    good = load_checkpoint(checkpoint_path(str(tmp_path), 4))
    assert good["iteration"] == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


def test_nan_steps_before_the_check_change_nothing(tmp_path):
    """NaN from step 5 on, read at the log of iteration 8: steps 5-8 ran, but the weights, BN statistics and
    momentum are those of the iteration-4 checkpoint bit for bit, and the error names iteration 5."""
    cfg = tiny_cfg(log_interval=4)
    model = NaNAfter(after=4)
    loop = TrainLoop(cfg, model, ColourBlobs(), CPU, str(tmp_path), iterations=8,
                     criterion=build_criterion(cfg["train"], CPU.device), schedule=build_scheduler)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at iteration 5 \(epoch 1\).*iter_0000004.pth"):
        loop.fit()
    assert loop.iteration == 8 and model.calls == 8
    good = load_checkpoint(checkpoint_path(str(tmp_path), 4))
    state = model.state_dict()
    assert all(torch.equal(good["model"][k], state[k]) for k in state if not k.endswith("num_batches_tracked"))
    momentum = [s["momentum_buffer"] for s in loop.optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, b["momentum_buffer"]) for a, b in zip(momentum, good["optimizer"]["state"].values()))


def test_guarded_step_skips_a_nan_step_and_the_next_step_is_plain_sgd():
    """A NaN first step changes nothing (a network without buffers; fused SGD's momentum not yet created);
    the next step is the textbook first SGD step (momentum buffer = gradient), against float64 by hand."""
    torch.manual_seed(0)
    model, criterion = nn.Linear(4, 3), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, fused=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    guard = StepGuard(model, opt, scaler, torch.device("cpu"))
    guard.start(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, t = torch.randn(5, 4), torch.randint(0, 3, (5,))
    junk = [torch.full_like(p, 1e3) for p in model.parameters()]
    del junk  # freed memory that the torch.empty_like of fused SGD's first step may be handed
    loss, skipped = guarded_step(model, x * float("nan"), t, criterion, opt, scaler, None, guard)
    assert skipped and torch.isnan(loss)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    w = {k: v.double().requires_grad_() for k, v in before.items()}
    nn.functional.cross_entropy(x.double() @ w["weight"].T + w["bias"], t).backward()
    loss, skipped = guarded_step(model, x, t, criterion, opt, scaler, None, guard)
    assert not skipped
    for k, v in model.state_dict().items():
        expected = w[k].detach() - 0.1 * (w[k].grad + 0.01 * w[k].detach())
        torch.testing.assert_close(v.double(), expected, rtol=1e-6, atol=1e-7)
    report = guard.report(guard.record.tolist())
    assert report.nonfinite_iteration == 1 and math.isnan(report.nonfinite_loss) and report.skipped == 0


def test_resume_under_another_optimizer_is_refused(tmp_path):
    run(tiny_cfg(iterations=4), tmp_path)
    with pytest.raises(ConfigError, match=r"iter_0000004\.pth was trained with train\.optimizer=sgd"):
        run(tiny_cfg(iterations=8, optimizer="adamw"), tmp_path, resume="auto")


def test_guarded_step_skips_a_nan_step_of_adamw_and_the_next_step_is_the_first_adamw_step():
    """AdamW has the guarantee SGD has: a skipped step leaves the weights, both moments and the step count as
    they were (fused AdamW's found_inf); the next step is AdamW's textbook first step, against float64 by hand."""
    torch.manual_seed(0)
    model, criterion = nn.Linear(4, 3), nn.CrossEntropyLoss()
    cfg = load_config(None, ["train.optimizer=adamw", "train.lr=0.1", "train.weight_decay=0.01",
                             "train.betas=[0.8, 0.99]"])["train"]
    opt = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    guard = StepGuard(model, opt, scaler, torch.device("cpu"))
    guard.start(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, t = torch.randn(5, 4), torch.randint(0, 3, (5,))
    loss, skipped = guarded_step(model, x * float("nan"), t, criterion, opt, scaler, None, guard)
    assert skipped and torch.isnan(loss)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for state in opt.state.values():
        assert float(state["step"]) == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()
    w = {k: v.double().requires_grad_() for k, v in before.items()}
    nn.functional.cross_entropy(x.double() @ w["weight"].T + w["bias"], t).backward()
    loss, skipped = guarded_step(model, x, t, criterion, opt, scaler, None, guard)
    assert not skipped
    lr, wd, (b1, b2), eps = 0.1, 0.01, (0.8, 0.99), 1e-8
    for k, v in model.state_dict().items():
        g, p = w[k].grad, w[k].detach()
        m_hat, v_hat = (1 - b1) * g / (1 - b1), (1 - b2) * g * g / (1 - b2)  # bias-corrected first moments
        expected = p * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps)
        torch.testing.assert_close(v.double(), expected, rtol=1e-5, atol=1e-6)
    assert all(float(state["step"]) == 1 for state in opt.state.values())


def test_cosine_schedule_against_the_closed_form():
    """lr at each iteration: half a cosine from lr to 0 over the run, times the linear warm-up, in float64."""
    cfg = load_config(None, ["train.lr_schedule=cosine", "train.lr=0.2", "train.iterations=10",
                             "train.warmup_iters=3", "train.warmup_factor=0.25"])["train"]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg["lr"])
    sched = build_scheduler(opt, cfg, iters_per_epoch=5)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm = [0.25 * (1 - i / 3) + i / 3 if i < 3 else 1.0 for i in range(10)]
    expected = [0.2 * w * (1 + math.cos(math.pi * i / 10)) / 2 for i, w in enumerate(warm)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    resumed = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg["lr"])
    assert build_scheduler(resumed, cfg, 5, start=7).get_last_lr()[0] == pytest.approx(expected[7], rel=1e-12)


class Weights(Hook):
    """Records the model's parameters and buffers after every step."""

    def __init__(self):
        self.seen = []

    def after_step(self, loop):
        self.seen.append({k: v.detach().double().clone() for k, v in loop.model.state_dict().items()})


def test_ema_of_the_weights_against_the_float64_recurrence_validated_and_saved(tmp_path):
    cfg = tiny_cfg(ema_decay=0.75)
    seed_everything(0)
    model = TinyNet()
    start = {k: v.double().clone() for k, v in model.state_dict().items()}
    weights = Weights()
    loop = TrainLoop(cfg, model, ColourBlobs(), CPU, str(tmp_path), iterations=8,
                     criterion=build_criterion(cfg["train"], CPU.device), schedule=build_scheduler,
                     hooks=(WeightEMA(0.75), weights))
    loop.fit()
    expected = dict(start)
    for step in weights.seen:
        expected = {k: 0.75 * expected[k] + 0.25 * step[k] for k in expected}
    saved = load_checkpoint(str(tmp_path / "model_ema.pth"))
    assert saved["meta"]["ema_decay"] == 0.75 and saved["meta"]["iteration"] == 8
    for k, v in saved["model"].items():
        if k.endswith("num_batches_tracked"):  # integers: floor of the average
            continue
        torch.testing.assert_close(v.double(), expected[k], rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.equal(saved["model"]["body.4.weight"], model.state_dict()["body.4.weight"])


def test_every_validation_scores_the_ema_beside_the_raw_weights_best_pth_follows_the_raw(tmp_path, capsys):
    """Validations at 4 and 8, each of the raw weights then of their EMA; the scripted scores make the raw
    weights best at 4 and the EMA best at 8: best.pth must hold the raw weights of iteration 4. The EMA's
    validation draws from the global RNG too, and must not move the raw weights' training."""
    seen, scores = [], iter([50.0, 10.0, 40.0, 60.0])

    def validate(model):
        torch.rand(())  # as a validation loader's seed draw
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"mIoU": next(scores), "per_class": [1.0]}

    raw = run(tiny_cfg(val_interval=4), tmp_path / "raw", validate=lambda model: (torch.rand(()), {"mIoU": 1.0})[1])
    model = run(tiny_cfg(ema_decay=0.75, val_interval=4), tmp_path / "ema", validate=validate)
    for (name, a), b in zip(raw.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name  # the EMA only looks
    val = [r for r in map(json.loads, open(tmp_path / "ema" / "metrics.jsonl")) if r["tag"] == "val"]
    assert [(r["iter"], r["mIoU"], r["ema_mIoU"]) for r in val] == [(4, 50.0, 10.0), (8, 40.0, 60.0)], val
    best = load_checkpoint(str(tmp_path / "ema" / "checkpoints" / "best.pth"))
    assert best["meta"]["best_miou"] == 50.0 and best["meta"]["iteration"] == 4
    assert all(torch.equal(best["model"][k], seen[0][k]) for k in seen[0])  # raw, iteration 4
    assert not torch.equal(seen[1]["body.4.weight"], seen[0]["body.4.weight"])  # the EMA is another model
    final, ema = (load_checkpoint(str(tmp_path / "ema" / name))["model"] for name in ("model_final.pth",
                                                                                      "model_ema.pth"))
    assert all(torch.equal(final[k], seen[2][k]) and torch.equal(ema[k], seen[3][k]) for k in final)
    out = capsys.readouterr().out
    assert "iter 8 (epoch 2): val mIoU 40.00 ema_mIoU 60.00 (best before: 50.00)" in out, out


def test_ema_does_not_absorb_a_skipped_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    loop = types.SimpleNamespace(model=model, skipped_step=torch.tensor(True))
    ema = WeightEMA(0.5)
    ema.before_train(loop)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(1)  # what a step that then got skipped would have been averaged towards
    before = {k: v.clone() for k, v in ema.average.state_dict().items()}
    ema.after_step(loop)
    after = ema.average.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    loop.skipped_step = torch.tensor(False)
    ema.after_step(loop)
    assert int(ema.average.n_averaged) == 2
    torch.testing.assert_close(ema.average.module[0].weight, before["module.0.weight"] + 0.5)


class BadLabelAt(ColourBlobs):
    """ColourBlobs whose item 0 of epoch 0 holds the value 7, a class beyond model.num_classes=3."""

    def __getitem__(self, i):
        img, target = super().__getitem__(i)
        if i == 0 and self.epoch == 0:
            target[0, :2] = 7
        return img, target


def test_invalid_label_stops_the_run_at_the_check_naming_its_iteration(tmp_path):
    sampler = ResumableDistributedSampler(16, 1, 0, seed=0)
    sampler.set_epoch(0)
    iteration = [i for _, i in sampler].index(0) // 4 + 1  # the step whose batch (4 images) holds item 0
    seed_everything(0)
    with pytest.raises(DataError, match=rf"training batch of iteration {iteration}: label values \[7\] are outside "
                                        r"0..2 of model.num_classes=3"):
        train(tiny_cfg(log_interval=4), TinyNet(), BadLabelAt(), CPU, str(tmp_path))
    assert list_checkpoints(str(tmp_path)) == []  # the check ran before the iteration-4 checkpoint was written


class DtypeProbe(TinyNet):
    """TinyNet that records the dtype its first conv computes in."""

    def __init__(self):
        super().__init__()
        self.seen = set()
        self.body[0].register_forward_hook(lambda m, i, o: self.seen.add(o.dtype))


def test_bf16_autocast_is_used(tmp_path):
    model = DtypeProbe()
    train(tiny_cfg(amp="bf16", iterations=2), model, ColourBlobs(), CPU, str(tmp_path))
    assert model.seen == {torch.bfloat16}


def test_fp16_grad_scaler_state_is_checkpointed_and_restored(tmp_path):
    cfg = tiny_cfg(amp="fp16", iterations=8)
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        run(cfg, tmp_path)
    saved = torch.load(checkpoint_path(str(tmp_path), 4), weights_only=True)["scaler"]
    assert saved["scale"] > 0 and saved["_growth_tracker"] == 4
    # resume from iteration 4 with a modified scale: the run must pick up the stored value
    ckpt = torch.load(checkpoint_path(str(tmp_path), 4), weights_only=True)
    ckpt["scaler"]["scale"] = 1024.0
    os.remove(checkpoint_path(str(tmp_path), 8))
    torch.save(ckpt, checkpoint_path(str(tmp_path), 4))
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        run(cfg, tmp_path, resume="auto")
    final = torch.load(checkpoint_path(str(tmp_path), 8), weights_only=True)["scaler"]
    assert final["scale"] == 1024.0 and final["_growth_tracker"] == 8


class UnlabelledEpoch1(ColourBlobs):
    """ColourBlobs whose every pixel is ignore (255) in epoch 1 (iterations 5-8 with 4 per epoch)."""

    def __getitem__(self, i):
        img, target = super().__getitem__(i)
        return img, torch.full_like(target, 255) if self.epoch == 1 else target


def test_skipped_steps_leave_the_fp16_loss_scale_alone(tmp_path):
    """Iterations 5-8 are skipped: the GradScaler's growth tracker counts the 4 real steps only (torch's
    initial scale 2 ** 16 and growth interval 2000 keep the scale)."""
    seed_everything(0)
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        train(tiny_cfg(amp="fp16"), TinyNet(), UnlabelledEpoch1(), CPU, str(tmp_path))
    scaler = torch.load(checkpoint_path(str(tmp_path), 8), weights_only=True)["scaler"]
    assert scaler["scale"] == 2.0 ** 16 and scaler["_growth_tracker"] == 4


def test_resume_with_fp16_from_a_run_without_loss_scaling_starts_a_fresh_scaler(tmp_path):
    run(tiny_cfg(), tmp_path)  # train.amp=none: the checkpoints hold an empty scaler state
    os.remove(checkpoint_path(str(tmp_path), 8))
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        run(tiny_cfg(amp="fp16"), tmp_path, resume="auto")
    scaler = torch.load(checkpoint_path(str(tmp_path), 8), weights_only=True)["scaler"]
    assert scaler["scale"] == 2.0 ** 16 and scaler["_growth_tracker"] == 4  # torch's initial scale, 4 good steps


def test_class_weighted_loss_matches_float64_formula():
    cfg = tiny_cfg(class_weights="[0.5, 2.0, 1.0]")
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, :3] = 255
    loss = build_criterion(cfg["train"], torch.device("cpu"))(logits.float(), target)
    w = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    valid = target != 255
    logp = logits.log_softmax(1).permute(0, 2, 3, 1)[valid]  # (P, C)
    t = target[valid]
    expected = -(w[t] * logp[torch.arange(len(t)), t]).sum() / w[t].sum()
    assert torch.isclose(loss.double(), expected, rtol=1e-5)


def test_sampler_shards_cover_the_epoch_and_resume_offsets():
    n, world = 11, 3
    shards = []
    for rank in range(world):
        s = ResumableDistributedSampler(n, world, rank, seed=5)
        s.set_epoch(2)
        shards.append([i for e, i in s])
        assert {e for e, _ in s} == {2} and len(shards[-1]) == 4  # ceil(11 / 3), padded
        s.set_epoch(2, start=3)
        assert [i for _, i in s] == shards[-1][3:] and len(s) == 1
    flat = [i for shard in shards for i in shard]
    assert set(flat) == set(range(n)) and len(flat) == 12  # one index repeated as padding
    other = ResumableDistributedSampler(n, world, 0, seed=5)
    other.set_epoch(3)
    assert [i for _, i in other] != shards[0]  # a new permutation each epoch


def test_logged_lr_is_the_rate_of_the_logged_step(tmp_path):
    """Record of iteration `it` (1-based) = step it - 1 of the schedule, warm-up included."""
    run(tiny_cfg(log_interval=1, warmup_iters=3, warmup_factor=0.2), tmp_path)
    logged = [(r["iter"], r["lr"]) for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["tag"] == "train"]
    assert [it for it, _ in logged] == list(range(1, 9))
    for it, lr in logged:
        step = it - 1
        expected = 0.05 * (1 - step / 8) ** 0.9 * (0.2 + 0.8 * step / 3 if step < 3 else 1.0)
        assert math.isclose(lr, expected, rel_tol=1e-12), (it, lr, expected)


class Recorder(Hook):
    def __init__(self):
        self.events = []

    def before_train(self, loop):
        self.events.append(("before_train", loop.iteration))

    def after_step(self, loop):
        self.events.append(("after_step", loop.iteration))

    def after_epoch(self, loop):
        self.events.append(("after_epoch", loop.iteration))

    def after_train(self, loop):
        self.events.append(("after_train", loop.iteration))

    def state_dict(self):
        return {"recorder_steps": sum(e == "after_step" for e, _ in self.events)}


def test_hook_events_come_in_order_and_their_state_is_checkpointed(tmp_path):
    cfg = tiny_cfg(iterations=6)  # 16 samples, batch 4: the first epoch ends at iteration 4
    seed_everything(0)
    hook = Recorder()
    loop = TrainLoop(cfg, TinyNet(), ColourBlobs(), CPU, str(tmp_path), hooks=(hook,), iterations=6,
                     criterion=build_criterion(cfg["train"], CPU.device), schedule=build_scheduler)
    loop.fit()
    steps = [("after_step", i) for i in range(1, 7)]
    assert hook.events == [("before_train", 0), *steps[:4], ("after_epoch", 4), *steps[4:], ("after_train", 6)]
    assert load_checkpoint(checkpoint_path(str(tmp_path), 4))["recorder_steps"] == 4


def test_img_s_leaves_out_the_time_of_validation(tmp_path):
    """A validation sleeping 2 s at iteration 2 would cap the next window (4 images x 2 steps) at 4 img/s."""
    seed_everything(0)

    def slow_validation(model):
        time.sleep(2.0)
        return {"mIoU": 1.0, "IoU": [0.5]}

    train(tiny_cfg(iterations=4, val_interval=2), TinyNet(), ColourBlobs(), CPU, str(tmp_path),
          validate=slow_validation)
    logged = [r for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["tag"] == "train"]
    assert [r["iter"] for r in logged] == [2, 4]
    assert logged[1]["img_s"] > 8, logged[1]  # two tiny steps: well under 1 s even on a loaded machine


def test_validation_keeps_the_best_score_in_best_pth(tmp_path):
    scores = iter([10.0, 30.0, 20.0])  # validations at iterations 3, 6 and 8 (the end)
    seed_everything(0)
    train(tiny_cfg(val_interval=3), TinyNet(), ColourBlobs(), CPU, str(tmp_path),
          validate=lambda model: {"mIoU": next(scores), "IoU": [0.5]})
    val = [r for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["tag"] == "val"]
    assert [(r["iter"], r["mIoU"]) for r in val] == [(3, 10.0), (6, 30.0), (8, 20.0)]
    best = load_checkpoint(str(tmp_path / "checkpoints" / "best.pth"))
    assert set(best) == {"model", "config", "meta"}  # model-only: the periodic checkpoints are what resumes
    assert best["meta"]["iteration"] == 6 and best["meta"]["best_miou"] == 30.0
    assert load_checkpoint(str(tmp_path / "model_final.pth"))["meta"]["best_miou"] == 30.0


def test_model_state_is_checked_once_per_iteration(tmp_path, monkeypatch):
    """Log window, best.pth, periodic checkpoint and export at one iteration: one finiteness check."""
    checked = []
    real = loop_module.state_finite

    def counting(model):
        checked.append(model)
        return real(model)

    monkeypatch.setattr(loop_module, "state_finite", counting)
    seed_everything(0)
    # log every 2, checkpoint every 4, validate (new best every time) every 4; the export at 8
    train(tiny_cfg(val_interval=4), TinyNet(), ColourBlobs(), CPU, str(tmp_path),
          validate=lambda model: {"mIoU": float(len(checked)), "IoU": [0.5]})
    assert len(checked) == 4  # iterations 2, 4, 6 and 8
    assert (tmp_path / "checkpoints" / "best.pth").exists() and (tmp_path / "model_final.pth").exists()


def test_log_window_mean_is_the_float_sum_of_the_step_losses():
    """The window sums on the device in float64: its mean is the old Python-float sum of .item()s, bit for bit;
    a skipped step (None, or flagged by the guard) counts as a step, not as a loss."""
    gen = torch.Generator().manual_seed(0)
    losses = [torch.rand((), generator=gen) * 10 ** float(torch.randint(-3, 4, (), generator=gen)) for _ in range(50)]
    window = _Window()
    total = 0.0
    for i, loss in enumerate(losses):
        skipped = i % 7 == 3
        if skipped and i % 2:  # a guard-skipped step: its loss (NaN here) must not reach the sum
            window.add(torch.tensor(float("nan")), skipped=torch.tensor(True))
        else:
            window.add(None if skipped else loss, skipped=torch.tensor(False))
        total += 0.0 if skipped else loss.item()
    counted = sum(i % 7 != 3 for i in range(50))
    assert window.steps == 50 and window.sums[1].item() == counted
    assert window.mean() == total / counted
    window.reset()
    window.add(None)
    assert window.mean() is None and window.steps == 1


def test_engine_imports_nothing_of_the_task_layers():
    """seg.engine is task-neutral: nothing of seg.data (segmentation's data checks live in seg.segmentation)
    nor of the task packages above it."""
    engine = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "seg", "engine")
    paths = glob.glob(os.path.join(engine, "*.py"))
    assert len(paths) > 10 and any(p.endswith("loop.py") for p in paths)
    for path in paths:
        tree = ast.parse(open(path).read())
        # "from ..data import x" (level 2) reads as seg.data; level 1 stays inside seg.engine
        modules = [("seg." if n.level == 2 else "") + (n.module or "") for n in ast.walk(tree)
                   if isinstance(n, ast.ImportFrom) and n.level != 1]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        above = [m for m in modules if m.split(".")[:2] in (["seg", "data"], ["seg", "evaluation"],
                                                             ["seg", "classification"], ["seg", "segmentation"])]
        assert not above, (path, above)


class HostSyncs(TorchDispatchMode):
    """Counts what would make the host wait for a CUDA device: reading a value (item, bool, tolist, numpy) or
    an op whose output size depends on the data."""

    WAITS = {"aten._local_scalar_dense", "aten.is_nonzero", "aten.equal", "aten.nonzero", "aten.masked_select",
             "aten.unique_dim", "aten._unique", "aten._unique2", "aten.unique_consecutive"}

    def __init__(self, monkeypatch):
        super().__init__()
        self.count = 0
        for name in ("tolist", "numpy"):  # tensor methods that read memory without a dispatched op
            monkeypatch.setattr(torch.Tensor, name, self.counted(getattr(torch.Tensor, name)))

    def counted(self, method):
        def wrapper(tensor, *args, **kwargs):
            self.count += 1
            return method(tensor, *args, **kwargs)
        return wrapper

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += str(func.overloadpacket) in self.WAITS
        return func(*args, **(kwargs or {}))


class FixedBlobs(ColourBlobs):
    """ColourBlobs made once: loading a batch runs no op the sync counter would see (64 images: an epoch, whose
    start draws the loader's seed with an .item(), lasts 16 steps)."""

    def __init__(self):
        super().__init__(n=64)
        seed_everything(1)
        self.items = [super(FixedBlobs, self).__getitem__(i) for i in range(self.n)]

    def __getitem__(self, i):
        return self.items[i]


def test_steady_state_training_steps_wait_for_the_device_at_most_once(tmp_path, monkeypatch):
    """Counted from one forward to the next over steps 3..12: no host sync in a step, one per logging
    iteration (4, 8, 12), where the guard's flags, the finiteness check and the loss sums are read together."""
    seed_everything(0)
    model, marks = TinyNet(), []
    syncs = HostSyncs(monkeypatch)
    model.register_forward_pre_hook(lambda module, args: marks.append(syncs.count))
    cfg = tiny_cfg(iterations=13, log_interval=4, ckpt_interval=13)
    with syncs:
        train(cfg, model, FixedBlobs(), CPU, str(tmp_path))
    per_step = [b - a for a, b in zip(marks, marks[1:])][2:]  # forward i -> i + 1, i = 3..12
    assert per_step == [0, 1, 0, 0, 0, 1, 0, 0, 0, 1], per_step
