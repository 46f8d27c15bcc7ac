"""The memory input's per-image augmentation, repeated augmentation (timm's RepeatAugSampler)
and the training resolution on both inputs."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from components.data.descriptor import mix_seed
from components.train.recipes import resolve_recipe

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _memory(images: np.ndarray, labels: np.ndarray | None = None, seed: int = 0):
    import torch

    from components.data.loader import InMemoryBatches

    labels = np.arange(len(images)) if labels is None else labels
    return InMemoryBatches(images, labels, MEAN, STD, torch.device("cpu"), seed=seed)


def _first_batch(data, recipe, generator_seed: int = 0, epoch: int = 0):
    import torch

    return next(iter(data.train(recipe, torch.Generator().manual_seed(generator_seed), epoch)))


def test_memory_crops_and_flips_differ_per_image_and_follow_the_generator():
    import torch
    import torch.nn.functional as F

    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    data = _memory(np.repeat(image, 16, axis=0))  # 16 copies: only augmentation differs
    recipe = resolve_recipe("apr_tiny", {"batch_size": 16, "crop_padding": 2, "hflip": True})
    images, _ = _first_batch(data, recipe)
    assert images.shape == (16, 3, 8, 8)
    # Every output is one crop of the reflection-padded image, flipped or not.
    padded = F.pad(data._prepare(data.x[:1]), (2, 2, 2, 2), mode="reflect")[0]
    candidates = {
        (dy, dx, flip): padded[:, dy : dy + 8, dx : dx + 8].flip(2)
        if flip
        else padded[:, dy : dy + 8, dx : dx + 8]
        for dy in range(5)
        for dx in range(5)
        for flip in (False, True)
    }
    found = [
        next(key for key, crop in candidates.items() if torch.allclose(crop, out)) for out in images
    ]
    assert len(set(found)) >= 8, f"per-image offsets and flips, got {found}"
    assert {flip for _, _, flip in found} == {False, True}
    assert len({dy for dy, _, _ in found}) > 1 and len({dx for _, dx, _ in found}) > 1
    # A function of the generator's state.
    assert torch.equal(images, _first_batch(data, recipe)[0])
    assert not torch.equal(images, _first_batch(data, recipe, generator_seed=1)[0])


def test_memory_order_is_a_function_of_seed_and_epoch():
    import torch

    images = np.zeros((40, 8, 8, 3), np.uint8)
    recipe = resolve_recipe("apr_tiny", {"batch_size": 8})

    def labels(seed, epoch, generator_seed=0):
        batches = _memory(images, seed=seed).train(
            recipe, torch.Generator().manual_seed(generator_seed), epoch
        )
        return torch.cat([y for _, y in batches]).tolist()

    first = labels(seed=3, epoch=0)
    assert sorted(first) == list(range(40))
    assert first == labels(3, 0, generator_seed=9), "the generator draws augmentations only"
    assert first != labels(3, 1) and first != labels(4, 0)


def test_repeated_augmentation_is_timms_sampler_on_seed_and_epoch():
    import torch
    from timm.data.distributed_sampler import RepeatAugSampler

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)
    data = _memory(images, seed=5)
    recipe = resolve_recipe(
        "apr_tiny", {"batch_size": 32, "aug_repeats": 3, "crop_padding": 2, "hflip": True}
    )
    batches = list(data.train(recipe, torch.Generator().manual_seed(0), epoch=2))
    labels = torch.cat([y for _, y in batches]).tolist()
    # timm's epoch length for 300 images on one process: 256 (a multiple of 256).
    assert len(batches) == data.batches_per_epoch(recipe) == 8 and len(labels) == 256
    counts = Counter(labels)
    assert sorted(counts.values()) == [1] + [3] * 85, "each selected image aug_repeats times"
    assert all(len(set(labels[i : i + 3])) == 1 for i in range(0, 255, 3)), "copies in a row"
    sampler = RepeatAugSampler(range(300), num_replicas=1, rank=0, num_repeats=3)
    sampler.set_epoch(mix_seed(5, 2))
    assert labels == list(sampler), "timm's order, seeded from (seed, epoch)"
    again = list(data.train(recipe, torch.Generator().manual_seed(7), epoch=2))
    assert torch.cat([y for _, y in again]).tolist() == labels
    assert torch.cat([y for _, y in data.train(recipe, torch.Generator(), 3)]).tolist() != labels
    # The copies of one image are augmented differently.
    x = torch.cat([b[0] for b in batches])
    differ = [not torch.equal(x[i], x[i + 1]) for i in range(0, 255, 3)]
    assert sum(differ) > 0.8 * len(differ)


def test_train_resolution_on_the_memory_input():
    import torch

    from components.data.loader import train_resolution

    data = _memory(np.zeros((12, 16, 16, 3), np.uint8))
    for ratio, side in ((1.0, 16), (0.714, 11), (0.5, 8), (0.1, 8)):
        recipe = resolve_recipe("apr_tiny", {"batch_size": 4, "train_resolution_ratio": ratio})
        assert train_resolution(16, ratio) == side
        assert _first_batch(data, recipe)[0].shape == (4, 3, side, side), ratio
    assert next(data.eval(4))[0].shape == (4, 3, 16, 16), "evaluation at the dataset's side"
    # The resize keeps the picture: a constant image stays constant.
    flat = _memory(np.full((4, 16, 16, 3), 200, np.uint8))
    half = replace(resolve_recipe("apr_tiny", {"batch_size": 4}), train_resolution_ratio=0.5)
    small = _first_batch(flat, half)[0]
    assert torch.allclose(small, torch.full_like(small, (200 - 127.5) / 63.75), atol=1e-4)


def test_start_skips_batches_exactly():
    """A resumed epoch from batch k: the same batches as a full pass from the same generator
    state (the memory input still draws the skipped batches' augmentations)."""
    import torch

    images = np.random.default_rng(2).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    data = _memory(images, seed=1)
    recipe = resolve_recipe(
        "apr_tiny", {"batch_size": 8, "crop_padding": 2, "hflip": True, "aug_repeats": 2}
    )
    full = list(data.train(recipe, torch.Generator().manual_seed(4), 1))
    resumed = list(data.train(recipe, torch.Generator().manual_seed(4), 1, start=3))
    assert len(full) == 5 and len(resumed) == 2
    for (x, y), (x_full, y_full) in zip(resumed, full[3:], strict=True):
        assert torch.equal(x, x_full) and torch.equal(y, y_full)
