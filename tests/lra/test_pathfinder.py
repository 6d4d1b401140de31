"""Pathfinder / Path-X: every label re-derived from the pixels alone by a connectivity check (drawn pixels
within 2·margin + 1 of each other are joined; the markers are the pixels of intensity 255); snakes never
come near each other; balance, seeding, shapes, markers, the 128 preset, refused configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from attnzoo.lra.pathfinder import (
    LEVELS,
    MARKER,
    SPLITS,
    PathfinderConfig,
    _draw,
    describe,
    draw,
    generate,
    pathfinder_config,
)

SMALL = pathfinder_config(32, train=24, valid=8, test=8, seed=3)


def components(mask: np.ndarray, link: int) -> np.ndarray:
    """[R, R] int64 component ids (0 off the mask) of ``mask``'s cells, two cells joined when both are on and
    they lie within Chebyshev distance ``link``: each cell takes the largest id in reach until nothing changes."""
    r = mask.shape[-1]
    on = torch.from_numpy(mask).float()[None, None]
    ids = torch.arange(1, r * r + 1, dtype=torch.float32).view(1, 1, r, r) * on
    while True:
        grown = torch.nn.functional.max_pool2d(ids, 2 * link + 1, stride=1, padding=link) * on
        if torch.equal(grown, ids):
            return ids[0, 0].long().numpy()
        ids = grown


def connected_by_pixels(image: np.ndarray, margin: int) -> bool:
    """Are the two marker blobs in one component of the drawn pixels, dashes joined across their gaps?"""
    blobs = components(image == MARKER, 1)
    found = [b for b in np.unique(blobs) if b]
    assert len(found) == 2, f"expected two marker blobs, found {len(found)}"
    joined = components(image > 0, 2 * margin + 1)
    return joined[blobs == found[0]][0] == joined[blobs == found[1]][0]


@pytest.fixture(scope="module")
def data():
    return generate(SMALL)


@pytest.fixture(scope="module")
def drawings():
    return {split: [draw(SMALL, split, i) for i in range(getattr(SMALL, split))] for split in SPLITS}


def test_every_label_is_what_the_pixels_say(data, drawings):
    for split, (images, labels) in data.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            assert int(connected_by_pixels(image, SMALL.paddle_margin[0])) == label, f"{split} image {i}"
            assert np.array_equal(drawings[split][i].image, image) and drawings[split][i].label == label


def test_each_snake_is_one_component_and_no_two_snakes_come_near(drawings):
    for d in (d for split in drawings.values() for d in split):
        joined = components(d.image > 0, 2 * d.margin + 1)
        groups = [b for b in np.unique(joined) if b]
        assert len(groups) == 2 + d.distractors  # two marked snakes, the distractors drawn, nothing merged
        owners = [np.unique(d.paths[joined == g]) for g in groups]
        assert all(len(o) == 1 for o in owners) and len({int(o[0]) for o in owners}) == len(groups)
        assert np.array_equal(d.paths > 0, d.image > 0) and {1, 2} <= set(np.unique(d.paths))


def test_snakes_are_dashed(drawings):
    for d in (d for split in drawings.values() for d in split):
        pieces = len(np.unique(components(d.image > 0, 1))) - 1  # 8-connected: gaps not bridged
        assert pieces >= SMALL.contour_length  # 28 paddles in the two snakes alone; most gaps are visible


def test_markers_are_two_round_blobs_at_the_snake_ends(drawings):
    radius = SMALL.marker_radius
    for d in (d for split in drawings.values() for d in split):
        blobs = components(d.image == MARKER, 1)
        sizes = np.bincount(blobs.ravel())[1:]
        assert len(sizes[sizes > 0]) == 2 and (sizes[sizes > 0] <= np.pi * (radius + 1) ** 2).all()
        for row, col in d.markers:
            assert d.image[row, col] == MARKER and d.paths[row, col] in (1, 2)
        ends = {int(d.paths[r, c]) for r, c in d.markers}
        assert (len(ends) == 1) == bool(d.label)
        assert (d.image[d.image != MARKER] < MARKER).all() and d.image[d.paths == 0].max() == 0


@pytest.mark.parametrize("config", [SMALL, dataclasses.replace(SMALL, contour_length=6, distractors=3, distractor_length=2)],
                         ids=["hard", "sparse"])
def test_the_snakes_do_not_depend_on_the_label(config):
    for i in range(6):
        negative, positive = (_draw(config, "train", i, label) for label in (0, 1))
        markers = (negative.image == MARKER) | (positive.image == MARKER)
        assert np.array_equal(negative.image[~markers], positive.image[~markers])
        assert negative.distractors == positive.distractors and not np.array_equal(negative.image, positive.image)


@pytest.mark.parametrize("level, contour", [("easy", 6), ("intermediate", 9), ("hard", 14)])
def test_difficulty_levels_draw_snakes_of_their_length_with_labels_the_pixels_agree_with(level, contour):
    config = pathfinder_config(32, **LEVELS[level], train=6, valid=0, test=0, seed=5)
    # the generator's wrapper: distractors a third of the contour long, 20 // that many of them
    assert (config.contour_length, config.distractor_length, config.distractors) == (contour, contour // 3, 20 // (contour // 3))
    for i in range(config.train):
        d = draw(config, "train", i)
        assert int(connected_by_pixels(d.image, d.margin)) == d.label
        # a marked snake is contour_length paddles, apart from each other; a paddle 2 px long and 0.5 px wide
        # covers 2 to 4 pixels, and a marker disk (radius 1.5) 9 more at each end that has one
        for snake in (1, 2):
            assert 2 * contour <= int((d.paths == snake).sum()) <= 4 * contour + 2 * 9
        assert d.distractors <= config.distractors


def test_shapes_dtypes_and_exact_balance(data):
    for split, (images, labels) in data.items():
        n = getattr(SMALL, split)
        assert images.shape == (n, 32, 32) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64 and labels.sum() == n // 2
    assert "24 images 32×32; label 1: 50.0%" in describe(*data["train"])


def test_seeded_and_independent_of_workers(data):
    again = generate(SMALL)
    assert all(np.array_equal(again[s][0], data[s][0]) and np.array_equal(again[s][1], data[s][1]) for s in SPLITS)
    other = generate(dataclasses.replace(SMALL, seed=4))
    assert not np.array_equal(other["train"][0], data["train"][0])
    config = dataclasses.replace(SMALL, train=6, valid=2, test=0)
    alone, shared = generate(config), generate(config, workers=2)
    assert all(np.array_equal(alone[s][0], shared[s][0]) and np.array_equal(alone[s][1], shared[s][1]) for s in SPLITS)


def test_path_x_preset_draws_valid_images():
    config = pathfinder_config(128, train=3, valid=0, test=0, seed=1)
    assert (config.paddle_length, config.paddle_margin, config.continuity) == (5.0, (2, 3), 1.8)
    images, labels = generate(config)["train"]
    assert images.shape == (3, 128, 128) and images.dtype == np.uint8
    for i, (image, label) in enumerate(zip(images, labels)):
        d = draw(config, "train", i)
        assert np.array_equal(d.image, image) and d.margin in (2, 3)
        assert int(connected_by_pixels(image, d.margin)) == label
        assert len(np.unique(components(image > 0, 2 * d.margin + 1))) - 1 == 2 + d.distractors


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(contour_length=2), "contour_length"),
        (dict(paddle_margin=(0,)), "paddle_margin"),
        (dict(paddle_margin=1), "paddle_margin"),
        (dict(marker_radius=0.5), "marker_radius"),
        (dict(seed_distance=8.0), "seed_distance"),
        (dict(paddle_thickness=0.0), "paddle_thickness"),
        (dict(distractors=61), "distractors"),
        (dict(contour_length=60, max_attempts=2), "could not fit two 60-paddle snakes"),
    ],
    ids=["short-contour", "no-gap", "margin-not-tuple", "tiny-marker", "no-room-to-seed", "flat-paddle",
         "too-many-distractors", "contour-does-not-fit"],
)
def test_bad_configs_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        generate(dataclasses.replace(SMALL, **change))


def test_bad_resolution_and_workers_are_refused():
    with pytest.raises(ValueError, match="presets exist for resolutions"):
        pathfinder_config(64)
    with pytest.raises(ValueError, match="workers"):
        generate(SMALL, workers=0)
    with pytest.raises(ValueError, match="no image 8 in split 'valid'"):
        draw(SMALL, "valid", 8)
    assert PathfinderConfig() == pathfinder_config(32)
