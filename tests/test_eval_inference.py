"""Inference modes: per-pixel models agree across modes; overlap averaging checked against a naive reference."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from seg.evaluation import predict_logits, tile_starts, tile_stride


def per_pixel_model(num_classes=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, num_classes, 1)).eval()


def naive_starts(length, tile, stride):
    starts = list(range(0, length - tile + 1, stride))
    return starts if starts[-1] == length - tile else starts + [length - tile]


@pytest.mark.parametrize("scales,flip", [((1.0,), False), ((1.0, 0.75), True)])
@pytest.mark.slow
def test_per_pixel_model_identical_in_all_modes(scales, flip):
    model = per_pixel_model()
    image = torch.randn(2, 3, 50, 77)
    kwargs = dict(tile_size=32, scales=scales, flip=flip, tile_batch=3)
    regular = predict_logits(model, image, "regular", **kwargs)
    tile = predict_logits(model, image, "tile", **kwargs)
    overlap = predict_logits(model, image, "overlap", overlap=0.4, **kwargs)
    assert regular.shape == (2, 5, 50, 77)
    torch.testing.assert_close(tile, regular, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(overlap, regular, atol=1e-5, rtol=1e-5)
    assert torch.equal(tile.argmax(1), regular.argmax(1))
    assert torch.equal(overlap.argmax(1), regular.argmax(1))


def test_downscaled_image_smaller_than_tile_uses_shorter_side():
    model = per_pixel_model()
    image = torch.randn(1, 3, 40, 60)  # at scale 0.5: 20x30, smaller than the 32 px tile
    kwargs = dict(tile_size=32, scales=(1.0, 0.5))
    regular = predict_logits(model, image, "regular", scales=(1.0, 0.5))
    torch.testing.assert_close(predict_logits(model, image, "overlap", **kwargs), regular, atol=1e-5, rtol=1e-5)
    tiles = TileIdentity()
    predict_logits(tiles, image, "tile", tile_size=32, scales=(0.5,))
    assert tiles.batches == [(2, 3, 20, 20)]  # two square 20 px tiles: columns 0 and 10


def test_per_pixel_model_matches_direct_forward():
    model = per_pixel_model()
    image = torch.randn(1, 3, 40, 64)
    with torch.no_grad():
        direct = model(image)
    torch.testing.assert_close(predict_logits(model, image, "overlap", tile_size=24, stride=10), direct,
                               atol=1e-5, rtol=1e-5)


class TileIdentity(nn.Module):
    """Logits known per tile: channel 0 = the tile's top-left value of input channel 0 (a global column
    index map), channel 1 = the tile's top-left value of input channel 1 (a global row index map),
    channel 2 = 1. Also records the tile sizes it sees."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(tuple(x.shape))
        corner = x[:, :3, :1, :1].clone()
        corner[:, 2] = 1.0
        return corner.expand(-1, -1, x.shape[2], x.shape[3])


def test_overlap_average_and_count_match_naive_reference():
    h, w, tile, stride = 40, 70, 24, 16  # non-square image: a count indexed on swapped axes would fail
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    image = torch.stack([cols, rows, torch.zeros(h, w)])[None]
    model = TileIdentity()
    out = predict_logits(model, image, "overlap", tile_size=tile, stride=stride, tile_batch=4).double()

    sums = np.zeros((2, h, w))
    count = np.zeros((h, w))
    for y in naive_starts(h, tile, stride):
        for x in naive_starts(w, tile, stride):
            sums[0, y:y + tile, x:x + tile] += x
            sums[1, y:y + tile, x:x + tile] += y
            count[y:y + tile, x:x + tile] += 1
    assert count.min() >= 1 and count.max() > 1
    np.testing.assert_allclose(out[0, 0].numpy(), sums[0] / count, atol=1e-5)
    np.testing.assert_allclose(out[0, 1].numpy(), sums[1] / count, atol=1e-5)
    np.testing.assert_allclose(out[0, 2].numpy(), np.ones((h, w)), atol=1e-6)
    # tiles are square and batched: 2 x 4 = 8 tiles -> batches of 3, 3, 2
    model.batches.clear()
    predict_logits(model, image, "overlap", tile_size=tile, stride=stride, tile_batch=3)
    assert all(s[2:] == (tile, tile) for s in model.batches)
    assert [s[0] for s in model.batches] == [3, 3, 2]


def test_tile_starts_align_last_tile_to_border():
    assert tile_starts(100, 32, 32) == [0, 32, 64, 68]
    assert tile_starts(96, 32, 32) == [0, 32, 64]
    assert tile_starts(32, 32, 32) == [0]
    assert tile_starts(1024, 1024, 683) == [0]
    assert tile_starts(2048, 1024, 683) == [0, 683, 1024]


def test_overlap_stride_formula():
    assert tile_stride("tile", 1024) == 1024
    assert tile_stride("overlap", 1024, overlap=1 / 3) == math.ceil(1024 * 2 / 3)
    assert tile_stride("overlap", 1024, stride=512) == 512


def test_flip_uses_mirrored_input():
    class LeftRight(nn.Module):  # logit 0 = column index, so flipping without un-flipping would be visible
        def forward(self, x):
            col = torch.arange(x.shape[-1], dtype=x.dtype).expand(x.shape[0], 1, x.shape[2], -1)
            return torch.cat([col, torch.zeros_like(col)], 1)
    image = torch.zeros(1, 3, 8, 12)
    out = predict_logits(LeftRight(), image, "regular", flip=True)
    expected = (torch.arange(12.0) + torch.arange(12.0).flip(0)) / 2  # mirrored run, flipped back, averaged
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_bad_inputs_raise_clear_errors():
    model = per_pixel_model()
    image = torch.randn(1, 3, 20, 40)
    with pytest.raises(ValueError, match="larger than the image"):
        predict_logits(model, image, "tile", tile_size=32)
    with pytest.raises(ValueError, match="unknown inference mode"):
        predict_logits(model, image, "sliding")
    with pytest.raises(ValueError, match="overlap"):
        predict_logits(model, image, "overlap", tile_size=16, overlap=1.0)
    with pytest.raises(ValueError, match="mode 'tile'"):
        predict_logits(model, image, "tile", tile_size=16, stride=8)
