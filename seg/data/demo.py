"""Synthetic street scenes written in the exact Cityscapes layout (the embedded default dataset).

For every image the generator draws a scene as Cityscapes polygons (painter's order, back to front),
writes ``*_gtFine_polygons.json`` in the Cityscapes JSON format and lets cityscapesscripts' json2labelImg
produce the ``labelIds`` / ``labelTrainIds`` / ``color`` PNGs from it, so the real conversion path runs.
The photo (``*_leftImg8bit.png``) is rendered from the same polygons with per-object colours drawn from
overlapping distributions plus class-specific texture and noise, so colour alone does not decide the class.
Objects (road, buildings, trees, cars, poles...) often cross the image borders.

``train_extra`` images get ``gtCoarse`` annotations instead: simplified polygons inside the visible part
of each region, small objects often skipped and boundaries left unlabelled, as real coarse labels are.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from multiprocessing import get_context

import cv2
import numpy as np
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image, ImageDraw

from seg.errors import InputError
from seg.progress import progress_bar

CITIES = {
    "train": ("aachen", "bochum", "bremen"),
    "val": ("frankfurt", "lindau", "munster"),
    "train_extra": ("augsburg", "bamberg", "konstanz"),
}
_SPLIT_CODE = {"train": 0, "val": 1, "train_extra": 2}

# Per-class appearance: candidate base colours (RGB), fine-noise and low-frequency-noise amplitudes,
# and a pattern. Colours deliberately overlap across classes (grey cars / roads / poles / buildings,
# green cars / vegetation / terrain, white signs / markings / buildings / sky ...).
_GREYS = [(70, 70, 75), (90, 90, 95), (120, 120, 120), (160, 160, 160), (200, 200, 205)]
_VIVID = [(180, 30, 30), (30, 60, 160), (40, 120, 50), (220, 200, 60), (240, 240, 240), (20, 20, 25)]
_STYLE = {
    "sky": ([(70, 130, 180), (150, 180, 210), (190, 195, 200), (220, 225, 230)], 2, 18, None),
    "building": ([(70, 70, 70), (160, 140, 110), (150, 70, 60), (200, 195, 185), (120, 120, 120)], 7, 10, "windows"),
    "wall": ([(150, 150, 140), (180, 170, 150), (110, 110, 115)], 8, 14, None),
    "fence": ([(140, 110, 80), (150, 150, 150), (90, 90, 90)], 6, 6, "bars"),
    "road": ([(80, 75, 85), (100, 95, 100), (120, 115, 120), (60, 60, 62)], 12, 10, None),
    "sidewalk": ([(150, 140, 150), (180, 150, 160), (120, 120, 120), (170, 170, 165)], 6, 8, "tiles"),
    "terrain": ([(110, 140, 70), (140, 130, 90), (90, 120, 60)], 16, 20, None),
    "vegetation": ([(50, 100, 30), (80, 130, 50), (40, 80, 40), (110, 140, 60)], 30, 22, None),
    "pole": (_GREYS + [(60, 80, 60)], 3, 3, None),
    "traffic sign": ([(30, 70, 170), (200, 30, 30), (240, 240, 240), (230, 200, 30)], 3, 2, None),
    "traffic light": ([(30, 30, 30), (50, 50, 40), (200, 170, 30)], 3, 2, None),
    "car": (_GREYS + _VIVID, 3, 6, None),
    "truck": (_GREYS + _VIVID, 4, 8, None),
    "bus": ([(200, 200, 60), (240, 240, 240), (180, 30, 30), (30, 60, 160)], 4, 8, None),
    "person": (_VIVID + _GREYS, 8, 6, None),
    "rider": (_VIVID + _GREYS, 8, 6, None),
    "train": ([(200, 200, 200), (180, 40, 40), (230, 210, 70), (90, 110, 140)], 4, 8, "windows"),
    "motorcycle": ([(20, 20, 20), (160, 20, 20), (40, 40, 110), (110, 110, 110)], 3, 3, None),
    "bicycle": ([(20, 20, 20), (120, 20, 30), (60, 60, 60)], 3, 2, None),
    "ego vehicle": ([(25, 25, 30), (40, 40, 45)], 3, 4, None),
    "road marking": ([(230, 230, 225), (220, 200, 80)], 6, 6, None),  # drawn as "road"
}
_LABEL_OF = {"road marking": "road"}  # appearance styles that are not Cityscapes labels
_PATTERNS = {None: 0, "windows": 1, "bars": 2, "tiles": 3}


# ----------------------------------------------------------------------------- shapes
def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def _ellipse(cx, cy, rx, ry, n=14, rng=None, wobble=0.0):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1 + (rng.uniform(-wobble, wobble, n) if rng is not None and wobble else 0)
    return np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], 1)


def _car(x, yb, w, h):
    f = [(0, 0), (0, .55), (.15, .6), (.28, 1), (.72, 1), (.85, .6), (1, .55), (1, 0)]
    return np.array([[x + a * w, yb - b * h] for a, b in f], float)


def _person(x, yb, h):
    """Body (torso + legs) and head as two polygons."""
    w = 0.28 * h
    body = np.array([[x - w / 2, yb - .82 * h], [x + w / 2, yb - .82 * h], [x + w / 2.4, yb - .45 * h],
                     [x + w / 3, yb], [x + w / 12, yb], [x, yb - .4 * h], [x - w / 12, yb], [x - w / 3, yb],
                     [x - w / 2.4, yb - .45 * h]], float)
    return body, _ellipse(x, yb - .9 * h, .1 * h, .1 * h, n=10)


def _clip(poly: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon to the pixel rectangle [0, W-1] x [0, H-1]."""
    for axis, lo, hi in ((0, 0, width - 1), (1, 0, height - 1)):
        for bound, keep in ((lo, lambda v, lo=lo: v >= lo), (hi, lambda v, hi=hi: v <= hi)):
            out = []
            for i in range(len(poly)):
                p, q = poly[i - 1], poly[i]
                if keep(q[axis]) != keep(p[axis]):
                    t = (bound - p[axis]) / (q[axis] - p[axis])
                    out.append(p + t * (q - p))
                if keep(q[axis]):
                    out.append(q)
            poly = np.array(out, float).reshape(-1, 2)
            if len(poly) == 0:
                return poly
    return poly


# ----------------------------------------------------------------------------- scene
Objects = list[tuple[str, np.ndarray]]  # (label or style, (N, 2) float xy polygon), back to front


@dataclass
class _View:
    """Image size and the street's perspective: horizon row ``yh`` and vanishing column ``vx``."""

    W: int
    H: int
    yh: float
    vx: float

    def depth(self, y: float) -> float:
        """0 at the horizon, 1 at the bottom row: scales the size of things standing at row y."""
        return (y - self.yh) / (self.H - self.yh)

    def ground_row(self, rng, lo: float, hi: float) -> float:
        return self.yh + (self.H - self.yh) * rng.uniform(lo, hi)


def _backdrop(rng, v: _View) -> Objects:
    """Sky, buildings on both sides (the outer ones cross the left / right borders), maybe a tree line."""
    W, H, yh, vx = v.W, v.H, v.yh, v.vx
    objs = [("sky", _rect(-5, -5, W + 5, yh + 2))]
    for side in (-1, 1):
        x = vx + side * W * rng.uniform(0.02, 0.08)
        while -0.1 * W < x < 1.1 * W:
            x1 = x + side * W * rng.uniform(0.08, 0.22)
            top = yh - H * rng.uniform(0.08, 0.5) * (1 + abs(x - vx) / W)
            objs.append(("building", _rect(min(x, x1), top, max(x, x1), yh + H * 0.02)))
            x = x1
    if rng.random() < 0.5:
        for _ in range(rng.integers(2, 5)):
            objs.append(("vegetation", _ellipse(W * rng.uniform(-0.1, 1.1), yh - H * .05, W * rng.uniform(.05, .15),
                                                H * rng.uniform(.05, .15), n=18, rng=rng, wobble=0.25)))
    return objs


def _ground(rng, v: _View) -> Objects:
    """Sidewalk everywhere below the horizon, the road over it, lane markings, maybe terrain and a fence/wall."""
    W, H, yh, vx = v.W, v.H, v.yh, v.vx
    rw = W * rng.uniform(0.02, 0.06)  # half road width at the horizon
    objs = [("sidewalk", np.array([[-0.6 * W, yh], [1.6 * W, yh], [1.6 * W, H + 5], [-0.6 * W, H + 5]]))]
    if rng.random() < 0.6:
        tx = rng.uniform(-0.5, -0.2) * W
        objs.append(("terrain", np.array([[vx - rw * 3, yh], [vx - rw * 1.5, yh], [tx + 0.15 * W, H + 5],
                                          [tx, H + 5]])))
    objs.append(("road", np.array([[vx - rw, yh], [vx + rw, yh], [W * rng.uniform(1.0, 1.4), H + 5],
                                   [W * rng.uniform(-0.4, 0.0), H + 5]])))
    centre = lambda t: (vx + (W * 0.5 - vx) * t, yh + (H - yh) * t)  # noqa: E731  on the lane line
    for k in range(4):  # dashes: bright pixels that are still road
        (x0, y0), (x1, y1) = centre(0.15 + 0.22 * k), centre(0.25 + 0.22 * k)
        lw = W * (0.004 + 0.01 * (0.25 + 0.22 * k))
        dash = np.array([[x0 - lw * 0.5, y0], [x0 + lw * 0.5, y0], [x1 + lw, y1], [x1 - lw, y1]])
        objs.append(("road marking", dash))
    if rng.random() < 0.5:
        x0 = W * rng.uniform(-0.2, 0.6)
        objs.append(("fence" if rng.random() < 0.5 else "wall",
                     _rect(x0, yh - H * 0.06, x0 + W * rng.uniform(0.15, 0.5), yh + H * 0.1)))
    return objs


# (probability, width factor, height / width) of each vehicle class; the rest of the draws are cars.
# Every one of the 19 Cityscapes classes is drawn, so per-class tables have no permanent holes.
_VEHICLES = (("truck", 0.1, 1.3, 0.8), ("bus", 0.1, 1.3, 0.8), ("train", 0.06, 2.6, 0.45))


def _vehicles(rng, v: _View) -> list[tuple[float, Objects]]:
    """(foot row, parts) of cars / trucks / buses / trains on the road, some crossing the side borders."""
    out = []
    for _ in range(rng.integers(2, 6)):
        yb = v.ground_row(rng, 0.15, 1.05)
        w = v.W * (0.35 * v.depth(yb) + 0.03)
        x = v.W * rng.uniform(-0.25, 1.05) - w / 2
        label, wf, hf, u = "car", 1.0, 0.55, rng.random()
        for name, p, width, height in _VEHICLES:
            if u < p:
                label, wf, hf = name, width, height
                break
            u -= p
        out.append((yb, [(label, _car(x, yb, wf * w, hf * wf * w))]))
    return out


def _people(rng, v: _View) -> list[tuple[float, Objects]]:
    """(foot row, parts) of persons, sometimes a rider on a bicycle or a motorcycle."""
    out = []
    for _ in range(rng.integers(1, 5)):
        yb = v.ground_row(rng, 0.1, 0.9)
        h = v.H * (0.5 * v.depth(yb) + 0.05)
        x = v.W * rng.uniform(-0.05, 1.05)
        if rng.random() < 0.3:
            body, head = _person(x, yb - h * 0.25, h * 0.8)
            wheels, size = ("bicycle", 1.0) if rng.random() < 0.5 else ("motorcycle", 1.25)
            out.append((yb, [(wheels, _ellipse(x, yb - h * 0.18 * size, h * 0.3 * size, h * 0.18 * size, n=10)),
                             ("rider", body), ("rider", head)]))
        else:
            body, head = _person(x, yb, h)
            out.append((yb, [("person", body), ("person", head)]))
    return out


def _street_furniture(rng, v: _View) -> list[tuple[float, Objects]]:
    """(foot row, parts) of poles carrying a traffic sign or light, and roadside trees."""
    out = []
    for _ in range(rng.integers(2, 5)):
        yb = v.ground_row(rng, 0.05, 0.7)
        d = v.depth(yb)
        x = v.W * rng.uniform(-0.02, 1.02)
        top = yb - v.H * (0.25 + 0.75 * d)
        if rng.random() < 0.35:
            r, crown = v.W * (0.04 + 0.15 * d), yb - v.H * (0.2 + 0.5 * d)
            out.append((yb, [("vegetation", _ellipse(x, crown, r, r * 1.1, 18, rng, 0.3)),
                             ("vegetation", _rect(x - r * 0.08, crown, x + r * 0.08, yb))]))
            continue
        pw, s = max(v.W * (0.002 + 0.008 * d), 1.2), v.W * (0.01 + 0.03 * d)
        if rng.random() < 0.5:
            head = ("traffic sign", _ellipse(x, top + s, s, s, n=12) if rng.random() < 0.5
                    else _rect(x - s, top, x + s, top + 1.6 * s))
        else:
            head = ("traffic light", _rect(x - 0.6 * s, top, x + 0.6 * s, top + 2.2 * s))
        out.append((yb, [("pole", _rect(x - pw, top, x + pw, yb)), head]))
    return out


def _scene(rng: np.random.Generator, W: int, H: int) -> Objects:
    """Polygons of one street scene, back to front (things sorted far to near by their foot row)."""
    v = _View(W, H, yh=H * rng.uniform(0.36, 0.5), vx=W * rng.uniform(0.35, 0.65))
    objs = _backdrop(rng, v) + _ground(rng, v)
    things = _vehicles(rng, v) + _people(rng, v) + _street_furniture(rng, v)
    for _, parts in sorted(things, key=lambda t: t[0]):
        objs += parts
    if rng.random() < 0.4:  # ego-vehicle bonnet (void, ignored) at the bottom
        objs.append(("ego vehicle", np.array([[-5, H + 5], [-5, H * 0.95], [W * 0.3, H * 0.9], [W * 0.7, H * 0.9],
                                              [W + 5, H * 0.95], [W + 5, H + 5]])))
    return objs


# ----------------------------------------------------------------------------- rendering
def _object_map(objs, W, H) -> np.ndarray:
    """int32 (H, W) map of the last (front-most) object covering each pixel, rasterised by PIL like
    json2labelImg does, so image and labels share their boundaries."""
    canvas = Image.new("I", (W, H), 0)
    draw = ImageDraw.Draw(canvas)
    for k, (_, poly) in enumerate(objs):
        draw.polygon([tuple(p) for p in poly.tolist()], fill=k + 1)
    return np.asarray(canvas, dtype=np.int32)


def _noise(rng, H, W, cells):
    """Smooth noise in [-1, 1] of shape (H, W): random grid of ``cells`` per side, bicubic upsampled."""
    small = rng.uniform(-1, 1, (max(2, cells * H // W), cells)).astype(np.float32)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)


def _render(rng, objs, obj_map, W, H) -> np.ndarray:
    """RGB uint8 (H, W, 3) photo of the scene."""
    n = len(objs) + 1
    base = np.zeros((n, 3), np.float32)
    fine, low = np.zeros(n, np.float32), np.zeros(n, np.float32)
    pattern, period = np.zeros(n, np.int32), np.ones(n, np.float32)
    for k, (label, _) in enumerate(objs, 1):
        colours, f, lo, pat = _STYLE[label]
        base[k] = np.array(colours[rng.integers(len(colours))]) + rng.normal(0, 12, 3)
        fine[k], low[k] = f * rng.uniform(0.6, 1.4), lo * rng.uniform(0.6, 1.4)
        pattern[k], period[k] = _PATTERNS[pat], W * rng.uniform(0.012, 0.03)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    per = period[obj_map]
    px, py = np.mod(xx, per) / per, np.mod(yy, per * 1.3) / (per * 1.3)
    pat = pattern[obj_map]
    shade = np.where((pat == 1) & (px < 0.55) & (py < 0.6), -45.0, 0.0)  # windows
    shade += np.where((pat == 2) & (px < 0.3), -35.0, 0.0)  # fence bars
    shade += np.where((pat == 3) & ((px < 0.06) | (py < 0.06)), -25.0, 0.0)  # paving tiles
    shade += (yy / H - 0.5) * -20.0  # light falls off towards the bottom
    img = base[obj_map] + shade[..., None]
    img += (low[obj_map] * _noise(rng, H, W, 24))[..., None] * rng.uniform(0.7, 1.0, 3).astype(np.float32)
    img = cv2.GaussianBlur(img, (3, 3), 0.7)  # soft edges, as a camera would
    img += fine[obj_map][..., None] * rng.standard_normal((H, W, 3), dtype=np.float32)
    img = img * rng.uniform(0.8, 1.15) + rng.normal(0, 6, 3)  # exposure and white balance
    return np.clip(img, 0, 255).astype(np.uint8)


def _coarse_objects(objs, obj_map, rng, W, H) -> list[tuple[str, np.ndarray]]:
    """Coarse polygons: simplified outlines of the eroded visible part of each object; small objects are
    mostly skipped and a few regions dropped, leaving parts unlabelled."""
    out = []
    erode = max(1, round(min(W, H) * 0.012))
    kernel = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
    for k, (label, _) in enumerate(objs, 1):
        if label == "ego vehicle" or rng.random() < 0.15:
            continue
        mask = cv2.erode((obj_map == k).astype(np.uint8), kernel)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            if cv2.contourArea(c) < 4 * erode * erode:
                continue
            poly = cv2.approxPolyDP(c, epsilon=1.5 * erode, closed=True).reshape(-1, 2)
            if len(poly) >= 3:
                out.append((label, poly.astype(float)))
    return out


def _write_json(path: str, objs, W: int, H: int) -> None:
    objects = [{"label": _LABEL_OF.get(label, label), "polygon": poly.astype(int).tolist(), "deleted": 0,
                "verified": 0, "id": k, "user": "seg-demo", "date": ""} for k, (label, poly) in enumerate(objs)]
    with open(path, "w") as f:
        json.dump({"imgHeight": H, "imgWidth": W, "objects": objects}, f)


def frame_name(split: str, index: int) -> tuple[str, str]:
    """(city, "{city}_{seq:06d}_{frame:06d}") of the ``index``-th image of ``split``."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{19 + index % 7:06d}"


def make_sample(out: str, split: str, index: int, height: int, width: int, seed: int) -> str:
    """Write one image with its annotation files; returns the leftImg8bit path. Deterministic in
    (seed, split, index)."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    city, stem = frame_name(split, index)
    # integer, clipped polygons, exactly as written to the JSON, so the photo and labels share boundaries
    objs = [(label, np.round(_clip(p, width, height))) for label, p in _scene(rng, width, height)]
    objs = [(label, p) for label, p in objs if len(p) >= 3]
    obj_map = _object_map(objs, width, height)
    img = _render(rng, objs, obj_map, width, height)
    img_dir = os.path.join(out, "leftImg8bit", split, city)
    os.makedirs(img_dir, exist_ok=True)
    img_path = os.path.join(img_dir, f"{stem}_leftImg8bit.png")
    cv2.imwrite(img_path, img[..., ::-1])
    annotation = "gtCoarse" if split == "train_extra" else "gtFine"
    if annotation == "gtCoarse":
        objs = _coarse_objects(objs, obj_map, rng, width, height)
    gt_dir = os.path.join(out, annotation, split, city)
    os.makedirs(gt_dir, exist_ok=True)
    prefix = os.path.join(gt_dir, f"{stem}_{annotation}_")
    _write_json(prefix + "polygons.json", objs, width, height)
    for encoding, suffix in (("ids", "labelIds"), ("trainIds", "labelTrainIds"), ("color", "color")):
        json2labelImg(prefix + "polygons.json", prefix + suffix + ".png", encoding)
    return img_path


def _job(args):
    return make_sample(*args)


def generate_demo_dataset(out: str, train: int = 60, val: int = 20, height: int = 256, width: int = 512,
                          seed: int = 0, extra: int = 0, workers: int = 1) -> dict:
    """Write ``train`` / ``val`` images with gtFine (and ``extra`` train_extra images with gtCoarse) under
    ``out`` in the Cityscapes layout. Returns {"root", "counts", "height", "width", "seed"}."""
    if min(train, val, extra) < 0 or height < 16 or width < 16:
        raise InputError(f"need non-negative counts and images of at least 16x16, got train={train} val={val} "
                         f"extra={extra} size={height}x{width}")
    jobs = [(out, split, i, height, width, seed)
            for split, n in (("train", train), ("val", val), ("train_extra", extra)) for i in range(n)]
    bar = dict(total=len(jobs), desc=f"demo data -> {out}", unit="img", disable=len(jobs) < 32)
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            list(progress_bar(pool.imap_unordered(_job, jobs, chunksize=4), **bar))
    else:
        list(progress_bar(map(_job, jobs), **bar))
    return {"root": out, "counts": {"train": train, "val": val, "train_extra": extra},
            "height": height, "width": width, "seed": seed}
