"""run_inference() under torch.distributed (gloo, 2 CPU processes): shards summed == single process."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from seg.evaluation import SegmentationEvaluator, ShardSampler, build_eval_loader, default_label_space, run_inference

pytestmark = pytest.mark.slow  # trains or runs a tool end to end: left out of make test-fast


def make_data():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(5, 3, 16, 24, generator=g)  # 5 images: shards of 3 and 2, nothing padded
    targets = torch.randint(0, 4, (5, 16, 24), generator=g)
    targets[:, :2] = 255
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1)
    return model, TensorDataset(images, targets)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def score(model, loader):
    scores = SegmentationEvaluator(leave_out=[0, 0.5], distance_bands=[0, 3], image_stats=True)
    return run_inference(model, loader, None, [scores], device="cpu", labels=default_label_space(4), progress=False)


def worker(rank, world_size, port, out_file):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model, data = make_data()
        loader = build_eval_loader(data)
        assert isinstance(loader.sampler, ShardSampler) and len(loader.sampler) == (3 if rank == 0 else 2)
        r = score(model, loader)
        if rank == 0:
            torch.save({**{k: r[k] for k in ("confusion_matrix", "num_images", "mIoU", "leave_out", "distance_bands")},
                        "image_stats": r.image_stats}, out_file)
    finally:
        dist.destroy_process_group()


def test_distributed_shards_sum_to_single_process(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    model, data = make_data()
    ref = score(model, build_eval_loader(data))
    assert got["num_images"] == 5
    assert got["confusion_matrix"] == ref["confusion_matrix"]
    assert got["mIoU"] == ref["mIoU"]
    assert got["leave_out"] == ref["leave_out"] and got["distance_bands"] == ref["distance_bands"]
    # per-image statistics of both shards, gathered back into dataset order
    assert got["image_stats"]["images"] == ref.image_stats["images"] == ["0", "1", "2", "3", "4"]
    for name in ("intersection", "prediction", "ground_truth"):
        assert (got["image_stats"][name] == ref.image_stats[name]).all()
