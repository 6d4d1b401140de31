"""Pathfinder (32×32) and Path-X (128×128) as the Long Range Arena draws them (Tay et al. 2021,
arxiv.org/abs/2011.04006), after the generator of Linsley et al. 2018 (arxiv.org/abs/1805.08315;
github.com/drewlinsley/pathfinder, ``snakes2.py``): is there a path between the two circles?

An image is a black canvas with two "snakes" (chains of short line segments, the paddles, with gaps
between them: dashed curves), some shorter distractor snakes, and two round markers. Label 1: both
markers sit on the two ends of one snake; label 0: one marker ends each of the two snakes. The two
snakes and the distractors are drawn before the label picks the marker ends, so nothing but the path
tells the classes apart. s images, r rows = r columns = resolution; images [S, R, R] uint8.

Settings (LRA's ``lra_benchmarks/data/pathfinder.py`` lists what it changed from the generator's
defaults; "hard" = ``curv_contour_length_14``, the split LRA reports):

    ============================  ================  =====================
    field (generator's name)      32 (Pathfinder)   128 (Path-X)
    ============================  ================  =====================
    contour_length                14                14
    paddle_length                 2                 5 (default)
    paddle_thickness              0.5               1.5
    paddle_margin (_list)         (1,)              (2, 3), one per image
    continuity                    1.0               1.8
    distractors (num_..._snakes)  20 // 4 = 5       35 / (14/3) -> 8 tried
    distractor_length             14 // 3 = 4       14 / 3 -> 4 paddles
    seed_distance                 7                 20
    marker_radius                 1.5               3
    contrast (snake × paddle)     2 × 0.75 = 1.5    0.9 × 1 (default)
    padding                       1                 1
    ============================  ================  =====================

The algorithm is the generator's: a snake starts with a paddle at a random place and angle (the
first snake's tail at least 2·seed_distance from the border, the second's tail seed_distance from
the first's), then grows one paddle at a time, the two snakes in turn. The next paddle pivots
about a point ``margin`` past the last head: its direction φ turns by Δ from the last one with
weight cos²(min(|Δ|·continuity, 90°)) (continuity 1.0 allows turns below 90°, 1.8 below 50°), its
tail is ``margin`` past the pivot, so dashes are 2·margin apart along the path. A candidate is
drawn only among the places still free (the generator zeroes blocked candidates the same way).
Distractors grow the same way from random seeds; one that cannot grow is retried 4 times, then
left out (the generator's ``allow_incomplete``).

Note:
    Where this differs from the generator, it is to make every label checkable from the pixels:

    * Spacing. ``link = 2·margin + 1`` (Chebyshev pixels). Each paddle comes within ``link`` of
      its own snake, and every pixel of a snake stays more than ``link`` from every other snake.
      So joining the drawn (non-zero) pixels that lie within ``link`` of each other yields exactly
      one component per snake, and a label is 1 iff the two markers fall in one component. The
      generator kept snakes about 2·margin apart by dilated masks, which let dashes of two snakes
      sit as close as a gap. A snake keeps more than ``margin`` from its own paddles but the one
      before (it never touches itself; the generator's rule was its 2·margin for both).
    * At a dead end the last few rounds of both snakes are taken back and regrown (up to
      BACKTRACKS times) before the pair restarts from scratch; the generator only restarted, which
      at this spacing costs 2× (32) to 26× (128) more growth per image.
    * Both ends of both snakes reserve a marker disk while the snakes grow, so a marker never lands
      near another snake (the generator drew markers last, wherever the ends were).
    * Drawing: a paddle is a flat-ended bar, box-filtered from ``antialias``² sub-samples per
      pixel (the generator: PIL at 2× then Lanczos), its intensity ceil(min(1, coverage·contrast)
      · 254) in 1..254, so paddles never reach 255. Markers are hard disks (pixel centres within
      ``marker_radius``) of exactly 255. Tails are snapped to a 1/antialias sub-pixel grid and
      angles are whole degrees (the generator: pixel coordinates on the pivot's circle).
    * No single-paddle distractors (LRA's runs set ``use_single_paddles = False``).
    * Splits are balanced exactly (LRA drew each label with probability 1/2). Default sizes
      160k / 20k / 20k: LRA's 80 / 10 / 10 split (``lra_benchmarks/image/input_pipeline.py``) of
      a 200k set per level (that total is what LRA ports report; the LRA code does not state it).

Seeded: image ``i`` of a split is drawn from its own generator seeded by (seed, split, i), so the
data do not depend on ``workers``.
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

SPLITS = ("train", "valid", "test")
MARKER = 255  # marker intensity; paddles stay in 1..PADDLE_MAX
PADDLE_MAX = 254
DISTRACTOR_TRIES = 5  # the generator's max_distractor_contour_retrial = 4, plus the first try
CHUNK = 256  # images per job handed to a worker
SEED_CANDIDATES = 64  # random (place, angle) pairs tried at once for a snake's first paddle
BACKTRACKS = 20  # partial take-backs of the two snakes before an attempt restarts from scratch
BACK_DEPTH = 6  # at most this many rounds taken back at once
MAX_DISTRACTORS = 60  # a bit each (and one for the border) in the 64-bit map of which snake is near


@dataclass(frozen=True)
class PathfinderConfig:
    """Defaults: LRA's 32×32 Pathfinder, "hard" (``pathfinder_config(128)`` for Path-X)."""

    resolution: int = 32  # images are resolution × resolution
    contour_length: int = 14  # paddles per snake (the two snakes the markers sit on)
    paddle_length: float = 2.0  # pixels, tail to head
    paddle_thickness: float = 0.5  # pixels
    paddle_margin: tuple[int, ...] = (1,)  # one drawn per image; dashes are 2·margin apart
    continuity: float = 1.0  # turn weight cos²(min(|Δ|·continuity, 90°)): larger is straighter
    distractors: int = 5  # distractor snakes tried per image
    distractor_length: int = 4  # paddles per distractor
    seed_distance: float = 7.0  # pixels between the two snakes' first tails
    marker_radius: float = 1.5  # pixels
    contrast: float = 1.5  # paddle intensity = min(1, coverage · contrast) · 254
    padding: int = 1  # border (pixels) left empty
    antialias: int = 4  # sub-samples per pixel side
    train: int = 160_000
    valid: int = 20_000
    test: int = 20_000
    seed: int = 0
    max_attempts: int = 1000  # restarts of the two snakes per image before giving up loudly


PRESETS = {
    32: dict(),
    128: dict(
        resolution=128, paddle_length=5.0, paddle_thickness=1.5, paddle_margin=(2, 3), continuity=1.8,
        distractors=8, seed_distance=20.0, marker_radius=3.0, contrast=0.9,
    ),
}


# The three difficulties LRA released for Pathfinder-32 (curv_baseline, curv_contour_length_9,
# curv_contour_length_14), as the generator's wrapper derives them from the contour length:
# distractor_length = contour_length // 3, distractors = 20 // distractor_length. LRA reports "hard".
LEVELS = {
    "easy": dict(contour_length=6, distractor_length=2, distractors=10),
    "intermediate": dict(contour_length=9, distractor_length=3, distractors=6),
    "hard": dict(),
}


def pathfinder_config(resolution: int, **overrides) -> PathfinderConfig:
    """LRA's settings at ``resolution`` (32: Pathfinder, 128: Path-X), with ``overrides`` on top."""
    if resolution not in PRESETS:
        raise ValueError(f"pathfinder: presets exist for resolutions {sorted(PRESETS)}, got {resolution}; "
                         f"for another size build PathfinderConfig(resolution={resolution}, ...) yourself")
    return PathfinderConfig(**{**PRESETS[resolution], **overrides})


class Drawing(NamedTuple):
    """One image and what the generator knows about it."""

    image: np.ndarray  # [R, R] uint8: paddles 1..254, markers 255, background 0
    label: int  # 1: the markers end one snake; 0: they end different snakes
    paths: np.ndarray  # [R, R] int16: the snake each drawn pixel belongs to; 0 background, 1-2 marked, 3.. distractors
    markers: np.ndarray  # [2, 2] int64: (row, column) of each marker's centre pixel
    margin: int  # the paddle margin drawn for this image; link = 2·margin + 1
    distractors: int  # distractor snakes drawn


def link_distance(margin: int) -> int:
    """Chebyshev distance (pixels) within which each dash lies of its own snake, beyond which other snakes stay."""
    return 2 * margin + 1


def self_link_distance(margin: int) -> int:
    """Chebyshev distance beyond which a snake's paddles stay from its own non-consecutive ones (no touching)."""
    return margin


def split_labels(config: PathfinderConfig, split: str) -> np.ndarray:
    """[S] int64: the split's labels, exactly balanced (the extra one of an odd count is a 1), shuffled."""
    count = getattr(config, split)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(SPLITS.index(split), 0)))
    return rng.permutation((np.arange(count) + 1) % 2).astype(np.int64)


def draw(config: PathfinderConfig, split: str, index: int) -> Drawing:
    """Image ``index`` of ``split`` (the same one ``generate`` returns), with its ground truth."""
    _check(config)
    if split not in SPLITS or not 0 <= index < getattr(config, split):
        count = getattr(config, split, None)
        raise ValueError(f"pathfinder: no image {index!r} in split {split!r} (splits {SPLITS}; this one holds {count})")
    return _draw(config, split, index, int(split_labels(config, split)[index]))


def generate(config: PathfinderConfig, *, workers: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "valid", "test"}: (images [S, R, R] uint8, labels [S] int64). ``workers`` processes
    share the images; the result does not depend on how many."""
    _check(config)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"pathfinder: workers must be a positive int, got {workers!r}")
    out = {}
    for split in SPLITS:
        labels = split_labels(config, split)
        size = max(1, min(CHUNK, -(-len(labels) // workers)))
        jobs = [(config, split, start, labels[start : start + size]) for start in range(0, len(labels), size)]
        if workers == 1 or len(jobs) < 2:
            chunks = [_chunk(job) for job in jobs]
        else:
            methods = multiprocessing.get_all_start_methods()
            with multiprocessing.get_context("fork" if "fork" in methods else None).Pool(workers) as pool:
                chunks = pool.map(_chunk, jobs)
        r = config.resolution
        out[split] = (np.concatenate(chunks) if chunks else np.zeros((0, r, r), np.uint8), labels)
    return out


def describe(images: np.ndarray, labels: np.ndarray) -> str:
    """Count, size, class balance and how much of the canvas is drawn, one line."""
    ink = (images > 0).mean() if len(images) else 0.0
    positive = labels.mean() if len(labels) else 0.0
    return f"{len(images)} images {images.shape[-2]}×{images.shape[-1]}; label 1: {positive:.1%}; drawn pixels {ink:.1%}"


# ---------------------------------------------------------------------------------------------------------------------
# drawing


def _chunk(job) -> np.ndarray:
    config, split, start, labels = job
    return np.stack([_draw(config, split, start + i, int(label)).image for i, label in enumerate(labels)])


def _draw(config: PathfinderConfig, split: str, index: int, label: int) -> Drawing:
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(SPLITS.index(split), 1, index)))
    margin = int(config.paddle_margin[rng.integers(len(config.paddle_margin))])
    for _ in range(config.max_attempts):
        canvas = _Canvas(config, margin)
        ends = canvas.two_snakes(rng)
        if ends is not None:
            break
    else:
        raise ValueError(
            f"pathfinder: could not fit two {config.contour_length}-paddle snakes (paddle_length={config.paddle_length}, "
            f"margin={margin}) on a {config.resolution}×{config.resolution} canvas in {config.max_attempts} attempts "
            f"({split} image {index}); shorten contour_length, paddle_length or paddle_margin, or raise resolution"
        )
    drawn = sum(canvas.distractor(rng, 3 + d) for d in range(config.distractors))
    origin = int(rng.integers(2))
    terminal = origin if label == 1 else 1 - origin
    tips = (ends[origin][0], ends[terminal][1])
    for snake, tip in zip((origin + 1, terminal + 1), tips):
        canvas.marker(tip, snake)
    image, paths = canvas.render()
    markers = np.array([t // canvas.g.aa - canvas.g.border for t in tips], dtype=np.int64)
    return Drawing(image, label, paths, markers, margin, drawn)


class _Stamps(NamedTuple):
    """Every paddle and marker disk the canvas can hold, drawn once. A paddle stamp is indexed by
    angle·A² + fy·A + fx (A = antialias): whole-degree angle, tail at sub-pixel (fy, fx)/A of its pixel."""

    reach: int  # paddle windows span rows/columns -reach..reach around the tail's pixel
    coverage: np.ndarray  # [360·A², K, K] float32 (K = 2·reach + 1): the share of each pixel a paddle covers
    paddle: tuple[np.ndarray, np.ndarray]  # (rows, cols) [360·A², P] int64 of covered pixels, from the tail's pixel
    disk: tuple[np.ndarray, np.ndarray]  # (rows, cols) [A², Q] of a marker disk's pixels, from its centre's pixel


@lru_cache(maxsize=8)
def _stamps(length: float, thickness: float, aa: int, radius: float) -> _Stamps:
    reach = math.ceil(length + thickness / 2) + 1
    k = 2 * reach + 1
    grid = (np.arange(k * aa) + 0.5) / aa - reach  # sub-sample positions, from the tail pixel's corner
    sub = np.arange(aa) / aa
    rel_y = grid[None, None, :, None] - sub[:, None, None, None]  # [A, 1, KA, 1]
    rel_x = grid[None, None, None, :] - sub[None, :, None, None]  # [1, A, 1, KA]
    coverage = np.empty((360, aa, aa, k, k), np.float32)
    for a in range(360):
        s, c = math.sin(math.radians(a)), math.cos(math.radians(a))
        along, across = rel_y * s + rel_x * c, rel_y * c - rel_x * s
        inside = (along >= 0) & (along <= length) & (np.abs(across) <= thickness / 2)  # [A, A, KA, KA]
        coverage[a] = inside.reshape(aa, aa, k, aa, k, aa).mean(axis=(3, 5))
    coverage = coverage.reshape(360 * aa * aa, k, k)
    if not (coverage > 0).any(axis=(-2, -1)).all():
        raise ValueError(f"pathfinder: a paddle {thickness} pixels thick misses every sub-sample at some angles; "
                         f"raise paddle_thickness or antialias (now {aa})")
    r = math.ceil(radius) + 1
    centres = np.arange(-r, r + 1) + 0.5
    disk = ((centres[None, :, None] - sub.repeat(aa)[:, None, None]) ** 2
            + (centres[None, None, :] - np.tile(sub, aa)[:, None, None]) ** 2) <= radius**2  # [A², 2r+1, 2r+1]
    return _Stamps(reach, coverage, _cells(coverage > 0, reach), _cells(disk, r))


def _cells(masks: np.ndarray, centre: int) -> tuple[np.ndarray, np.ndarray]:
    """masks [N, K, K] bool -> (rows, cols) [N, P] of their True cells less ``centre``, padded by repeating one."""
    width = int(masks.sum((1, 2)).max())
    flat = masks.reshape(len(masks), -1)
    cells = np.zeros((len(masks), width), np.int64)
    for i, row in enumerate(flat):
        idx = np.flatnonzero(row)
        cells[i] = np.concatenate([idx, np.full(width - len(idx), idx[0])])
    return cells // masks.shape[-1] - centre, cells % masks.shape[-1] - centre


@lru_cache(maxsize=16)
def _halo(length: float, thickness: float, aa: int, radius: float, r: int) -> _Stamps:
    """Like ``_stamps``, but the cells within Chebyshev distance ``r`` of each stamp's."""
    s = _stamps(length, thickness, aa, radius)
    paddle = _cells(_dilate(np.pad(s.coverage > 0, ((0, 0), (r, r), (r, r))), r), s.reach + r)
    d = int(np.abs(s.disk[0]).max())
    disks = np.zeros((aa * aa, 2 * (d + r) + 1, 2 * (d + r) + 1), bool)
    disks[np.arange(aa * aa)[:, None], s.disk[0] + d + r, s.disk[1] + d + r] = True
    return _Stamps(s.reach, s.coverage, paddle, _cells(_dilate(disks, r), d + r))


def _dilate(masks: np.ndarray, r: int) -> np.ndarray:
    """Chebyshev dilation by ``r`` (a (2r+1)² max filter) over the last two axes; cells past the edge are False."""
    out = masks
    for axis in (out.ndim - 2, out.ndim - 1):
        pad = [(r, r) if a == axis else (0, 0) for a in range(out.ndim)]
        out = np.lib.stride_tricks.sliding_window_view(np.pad(out, pad), 2 * r + 1, axis=axis).any(-1)
    return out


class _Geometry(NamedTuple):
    """A canvas's layout, and its stamps as offsets into the flattened (bordered) arrays. Points are in
    sub-pixel units (A = antialias per pixel) of the bordered arrays."""

    aa: int
    border: int  # empty cells around the canvas in the arrays, so stamps never clip
    width: int  # of the bordered arrays
    unit: np.ndarray  # [360, 2] (row, col) unit vector at each whole degree (0: +col, 90: +row)
    gap: np.ndarray  # [360, 2] margin · A · unit: from a head to the pivot, and from the pivot to the next tail
    along: np.ndarray  # [360, 2] paddle_length · A · unit: from a tail to its head
    turns: np.ndarray  # [C] turns Δ (degrees) with a non-zero weight
    weights: np.ndarray  # [C] cos²(min(|Δ|·continuity, 90°))
    stamps: _Stamps
    paddle: np.ndarray  # [360·A², P] flat offsets of a paddle's pixels from its tail pixel
    disk: np.ndarray  # [A², Q] flat offsets of a marker disk's pixels from its centre pixel
    halo: tuple[np.ndarray, np.ndarray]  # (paddle, disk) flat offsets of the pixels within ``link``
    self_halo: tuple[np.ndarray, np.ndarray]  # the same within ``self_link``


@lru_cache(maxsize=16)
def _geometry(resolution: int, length: float, thickness: float, aa: int, radius: float, continuity: float,
              margin: int) -> _Geometry:
    s = _stamps(length, thickness, aa, radius)
    link, self_link = link_distance(margin), self_link_distance(margin)
    # wide enough that every candidate's cells (a tail within 2·margin + 1 of a head on the canvas, its paddle,
    # the disk at its head) and every placed paddle's halo stay inside the arrays
    border = 2 * margin + 1 + max(s.reach, math.ceil(length) + int(np.abs(s.disk[0]).max()) + 1) + link + 2
    width = resolution + 2 * border
    unit = np.stack([np.sin(np.radians(np.arange(360))), np.cos(np.radians(np.arange(360)))], axis=-1)
    delta = np.arange(-179, 181)
    weight = np.cos(np.minimum(np.abs(delta) * continuity * math.pi / 180, math.pi / 2)) ** 2
    keep = weight > 1e-9

    def flat(stamps: _Stamps) -> tuple[np.ndarray, np.ndarray]:
        return stamps.paddle[0] * width + stamps.paddle[1], stamps.disk[0] * width + stamps.disk[1]

    halo, self_halo = (flat(_halo(length, thickness, aa, radius, r)) for r in (link, self_link))
    paddle, disk = flat(s)
    return _Geometry(aa, border, width, unit, margin * aa * unit, length * aa * unit, delta[keep], weight[keep], s,
                     paddle, disk, halo, self_halo)


class _Canvas:
    """Coverage drawn so far, and two maps (flat, bordered) of what lies near each pixel: ``snakes``, a bit
    per snake with a pixel within ``link`` (bit 0: the border and padding); ``pieces``, the paddle with a
    pixel within ``self_link`` (0 none, -1 several or the border). Points are sub-pixel units."""

    def __init__(self, config: PathfinderConfig, margin: int):
        c = config
        self.config = c
        self.g = g = _geometry(c.resolution, float(c.paddle_length), float(c.paddle_thickness), c.antialias,
                               float(c.marker_radius), float(c.continuity), margin)
        inner = slice(g.border + c.padding, g.border + c.resolution - c.padding)
        snakes = np.ones((g.width, g.width), np.int64)
        snakes[inner, inner] = 0
        self.snakes = snakes.reshape(-1)
        self.pieces = -self.snakes.astype(np.int32)
        self.cover = np.zeros((g.width, g.width), np.float32)
        self.paths = np.zeros((g.width, g.width), np.int16)
        self.markers = np.zeros((g.width, g.width), bool)
        self.count = 0
        self.log: list[tuple] = []  # per committed paddle, what it overwrote (for undo)

    def snap(self, points: np.ndarray) -> np.ndarray:
        """Continuous canvas (row, col) -> sub-pixel units."""
        return np.rint((points + self.g.border) * self.g.aa).astype(np.int64)

    def where(self, tails: np.ndarray, angles: np.ndarray, disks: np.ndarray | None, offsets) -> np.ndarray:
        """[C, P] flat cells of paddles at ``tails`` [C, 2] (and of disks centred at ``disks`` [C, 2]), from
        ``offsets`` = (paddle, disk) offset tables."""
        g = self.g
        pix = tails // g.aa
        sub = tails - pix * g.aa
        cells = (pix[:, 0] * g.width + pix[:, 1])[:, None] + offsets[0][(angles * g.aa + sub[:, 0]) * g.aa + sub[:, 1]]
        if disks is None:
            return cells
        pix = disks // g.aa
        sub = disks - pix * g.aa
        disk = (pix[:, 0] * g.width + pix[:, 1])[:, None] + offsets[1][sub[:, 0] * g.aa + sub[:, 1]]
        return np.concatenate([cells, disk], 1)

    def allowed(self, cells: np.ndarray, snake: int, prev: int) -> np.ndarray:
        """[C] bool: may a paddle of ``snake`` cover ``cells``? More than ``link`` from other snakes and the
        border, more than ``self_link`` from its own paddles but ``prev`` (0: none), and after a first paddle
        within ``link`` of its own snake."""
        own = np.int64(1 << snake)
        near = np.bitwise_or.reduce(self.snakes[cells], axis=1)
        ok = (near & ~own) == 0
        if prev:
            ok &= (near & own) != 0
        pieces = self.pieces[cells]
        return ok & ((pieces == 0) | (pieces == prev)).all(1) if prev else ok & (pieces == 0).all(1)

    def commit(self, tail: np.ndarray, angle: int, disk: np.ndarray | None, snake: int) -> int:
        """Draw the paddle (reserving the disk, if any) and mark its halos; its piece id."""
        g = self.g
        self.count += 1
        piece, r = self.count, g.stamps.reach
        (py, px), (fy, fx) = tail // g.aa, tail % g.aa
        stamp = g.stamps.coverage[(angle * g.aa + fy) * g.aa + fx]
        window = (slice(py - r, py + r + 1), slice(px - r, px + r + 1))
        entry = [window, self.cover[window].copy(), self.paths[window].copy()]
        np.maximum(self.cover[window], stamp, out=self.cover[window])
        self.paths[window][stamp > 0] = snake
        disks = None if disk is None else disk[None]
        cells = self.where(tail[None], np.array([angle]), disks, g.halo)[0]
        old = self.snakes[cells]
        self.snakes[cells] = old | (1 << snake)
        entry += [self.snakes, cells, old]
        cells = self.where(tail[None], np.array([angle]), disks, g.self_halo)[0]
        old = self.pieces[cells]
        self.pieces[cells] = np.where((old == 0) | (old == piece), piece, -1)
        entry += [self.pieces, cells, old]
        self.log.append(entry)
        return piece

    def undo(self, keep: int) -> None:
        """Take paddles back off until ``keep`` remain."""
        while len(self.log) > keep:
            window, cover, paths, *maps = self.log.pop()
            self.cover[window], self.paths[window] = cover, paths
            for near, cells, old in (maps[3:], maps[:3]):
                near[cells] = old
            self.count -= 1

    def grow(self, rng, head: np.ndarray, angle: int, prev: int, snake: int, last: bool):
        """One more paddle after the one ending at ``head`` at ``angle``: (head, angle, piece) of the new one
        (its head rounded to the sub-pixel grid when ``last``: the marker's centre), or None."""
        g = self.g
        angles = g.turns + angle
        angles %= 360
        tails = np.rint(head + g.gap[angle] + g.gap[angles]).astype(np.int64)  # pivot margin past the head, tail margin past it
        disks = np.rint(tails + g.along[angles]).astype(np.int64) if last else None
        ok = self.allowed(self.where(tails, angles, disks, (g.paddle, g.disk)), snake, prev)
        cum = np.cumsum(g.weights * ok)
        if cum[-1] == 0:
            return None
        i = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(cum) - 1)
        piece = self.commit(tails[i], int(angles[i]), None if disks is None else disks[i], snake)
        return (disks[i] if last else tails[i] + g.along[angles[i]]), int(angles[i]), piece

    def seed(self, rng, tails: np.ndarray, snake: int, disk: bool):
        """First paddle of a snake: the first allowed of ``tails`` (continuous [C, 2], on the canvas) at random
        angles: (tail, head, angle, piece), or None."""
        g = self.g
        angles = rng.integers(0, 360, len(tails))
        subs = self.snap(tails)
        ok = self.allowed(self.where(subs, angles, subs if disk else None, (g.paddle, g.disk)), snake, 0)
        if not ok.any():
            return None
        i = int(np.argmax(ok))
        piece = self.commit(subs[i], int(angles[i]), subs[i] if disk else None, snake)
        return subs[i], subs[i] + g.along[angles[i]], int(angles[i]), piece

    def two_snakes(self, rng):
        """Grow the two marked snakes in turn: [(origin, terminal)] tips (sub-pixel units) of each, or None.
        At a dead end the last d rounds of paddles are taken back and grown again, d drawn from 1..k where k
        counts the dead ends since the snakes were last this long (at most BACK_DEPTH), up to BACKTRACKS times."""
        c, g = self.config, self.g
        lo, hi = 2 * c.seed_distance, c.resolution - 2 * c.seed_distance
        first = self.seed(rng, rng.uniform(lo, hi, (SEED_CANDIDATES, 2)), 1, disk=True)
        if first is None:
            return None
        around = g.unit[rng.integers(0, 360, SEED_CANDIDATES)] * c.seed_distance
        second = self.seed(rng, first[0] / g.aa - g.border + around, 2, disk=True)
        if second is None:
            return None
        states = [first[1:], second[1:]]  # (head, angle, piece) after each paddle, the two snakes in turn
        total, budget, stuck, longest = 2 * c.contour_length, BACKTRACKS, 0, 0
        while len(states) < total:
            grown = self.grow(rng, *states[-2], snake=len(states) % 2 + 1, last=len(states) >= total - 2)
            if grown is not None:
                states.append(grown)
                if len(states) > longest:
                    longest, stuck = len(states), 0
                continue
            stuck += 1
            keep = len(states) - 2 * int(rng.integers(1, 1 + min(stuck, BACK_DEPTH)))
            if budget == 0 or keep <= 2:  # out of take-backs, or back to the first paddles: start afresh
                return None
            budget -= 1
            self.undo(keep)
            del states[keep:]
        return [(first[0], states[-2][0]), (second[0], states[-1][0])]

    def distractor(self, rng, snake: int) -> int:
        """Try to grow one distractor snake: 1 if drawn, 0 if left out (the canvas as it was)."""
        c = self.config
        for _ in range(DISTRACTOR_TRIES):
            mark = len(self.log)
            state = self.seed(rng, rng.uniform(0, c.resolution, (SEED_CANDIDATES, 2)), snake, disk=False)
            for _ in range(c.distractor_length - 1 if state else 0):
                state = self.grow(rng, *state[-3:], snake=snake, last=False)
                if state is None:
                    break
            if state is not None:
                return 1
            self.undo(mark)
        return 0

    def marker(self, tip: np.ndarray, snake: int) -> None:
        g = self.g
        (py, px), (fy, fx) = tip // g.aa, tip % g.aa
        rows, cols = g.stamps.disk[0][fy * g.aa + fx] + py, g.stamps.disk[1][fy * g.aa + fx] + px
        self.markers[rows, cols] = True
        self.paths[rows, cols] = snake

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        inner = slice(self.g.border, self.g.border + self.config.resolution)
        image = np.ceil(np.minimum(self.cover[inner, inner] * self.config.contrast, 1.0) * PADDLE_MAX).astype(np.uint8)
        image[self.markers[inner, inner]] = MARKER
        return image, self.paths[inner, inner].copy()


# ---------------------------------------------------------------------------------------------------------------------
# validation


def _check(config: PathfinderConfig) -> None:
    _check_counts(config)
    _check_shapes(config)
    _check_fits(config)


def _check_counts(config: PathfinderConfig) -> None:
    for name, least in (("resolution", 8), ("contour_length", 3), ("distractors", 0), ("distractor_length", 1),
                        ("padding", 0), ("antialias", 1), ("train", 0), ("valid", 0), ("test", 0), ("seed", 0),
                        ("max_attempts", 1)):
        value = getattr(config, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            why = " (the two markers of a label-1 snake would sit on adjacent paddles)" if name == "contour_length" else ""
            raise ValueError(f"pathfinder: {name} must be an int >= {least}{why}, got {value!r}")


def _check_shapes(config: PathfinderConfig) -> None:
    if config.distractors > MAX_DISTRACTORS:
        raise ValueError(f"pathfinder: at most {MAX_DISTRACTORS} distractors (a bit each in a 64-bit map), "
                         f"got {config.distractors}")
    margins = config.paddle_margin
    if not isinstance(margins, tuple) or not margins or not all(isinstance(m, int) and m >= 1 for m in margins):
        raise ValueError(f"pathfinder: paddle_margin must be a non-empty tuple of ints >= 1 (one is drawn per image), "
                         f"got {margins!r}; e.g. paddle_margin=(2, 3)")
    for name in ("paddle_length", "paddle_thickness", "continuity", "contrast", "seed_distance"):
        if not getattr(config, name) > 0:
            raise ValueError(f"pathfinder: {name} must be > 0, got {getattr(config, name)!r}")
    if not config.marker_radius >= 0.75:
        raise ValueError(f"pathfinder: marker_radius must be >= 0.75 so a marker covers a pixel centre wherever it "
                         f"sits, got {config.marker_radius}")


def _check_fits(config: PathfinderConfig) -> None:
    r, inner = config.resolution, config.resolution - 2 * config.padding
    if r - 4 * config.seed_distance <= 0:
        raise ValueError(f"pathfinder: the first snake starts at least 2·seed_distance from every side, which leaves "
                         f"no room on a {r}×{r} canvas with seed_distance={config.seed_distance}; "
                         f"use seed_distance < {r / 4}")
    need = config.paddle_length + 2 * config.marker_radius
    if need > inner:
        raise ValueError(f"pathfinder: a paddle with a marker on its end needs {need:.1f} pixels but the canvas has "
                         f"{inner} inside its padding; raise resolution or shorten paddle_length / marker_radius")
