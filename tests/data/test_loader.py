"""The training input pipeline: one interface, in memory or streamed; deterministic per
(seed, epoch) whatever the number of workers; a size-limited shard cache in front of S3; a
trial trains and resumes on it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from imagesets import make_image_folder

from components.common.storage import open_store
from components.data.build import build_dataset, load_manifest, load_split
from components.data.descriptor import DatasetDescriptor, SplitRule
from components.train.recipes import resolve_recipe


@pytest.fixture
def built(tmp_path, monkeypatch):
    """A 3-class folder of 10 images per class; the train split in 3 shards."""
    from components.data import shards

    monkeypatch.setattr(shards, "SHARD_MAX_IMAGES", 9)  # several shards: workers share them
    store = open_store(str(tmp_path / "store"))
    folder = make_image_folder(tmp_path / "folder")
    descriptor = DatasetDescriptor(name="pets", source=str(folder), split=SplitRule(seed=2))
    ref = build_dataset(store, descriptor, print)
    return store, replace(ref, resolution=16, input="stream")


def _epoch(data, recipe, epoch: int):
    import torch

    batches = list(data.train(recipe, torch.Generator().manual_seed(0), epoch))
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_stream_is_deterministic_per_seed_and_epoch(built):
    import torch

    from components.data.loader import StreamBatches, open_split

    store, ref = built
    assert len(load_manifest(store, ref)["splits"]["train"]["shards"]) == 3
    recipe = resolve_recipe("apr_tiny", {"batch_size": 4, "hflip": True})
    data = open_split(store, ref, "train", torch.device("cpu"), seed=5, workers=2)
    assert isinstance(data, StreamBatches) and len(data) == 21
    x0, y0 = _epoch(data, recipe, epoch=0)
    assert x0.shape[1:] == (3, 16, 16) and x0.dtype == torch.float32
    assert len(y0) == 20, "full batches of 4"
    for workers in (2, 0, 1):  # the same batches whatever the number of workers
        again = _epoch(
            open_split(store, ref, "train", torch.device("cpu"), seed=5, workers=workers), recipe, 0
        )
        assert torch.equal(x0, again[0]) and torch.equal(y0, again[1]), workers
    x1, _ = _epoch(data, recipe, epoch=1)
    other_seed, _ = _epoch(
        open_split(store, ref, "train", torch.device("cpu"), seed=6, workers=2), recipe, 0
    )
    assert not torch.equal(x0, x1[: len(x0)]) and not torch.equal(x0, other_seed[: len(x0)])
    assert abs(float(x0.mean())) < 1.5, "normalised with the manifest's mean and std"


def test_eval_sees_every_image_once_like_the_memory_path(built):
    import torch

    from components.data.loader import InMemoryBatches, open_split

    store, ref = built
    streamed = open_split(store, ref, "test", torch.device("cpu"), workers=2)
    labels = torch.cat([y for _, y in streamed.eval(4)])
    memory = open_split(store, replace(ref, input="memory"), "test", torch.device("cpu"))
    assert isinstance(memory, InMemoryBatches)
    assert sorted(labels.tolist()) == sorted(load_split(store, ref, "test")[1].tolist())
    assert len(memory) == len(streamed) == 6
    # Same pixels after resizing: the stream's eval transform matches load_split's resize.
    first_stream = next(open_split(store, ref, "test", torch.device("cpu"), workers=0).eval(6))[0]
    first_memory = next(memory.eval(6))[0]
    assert torch.allclose(first_stream, first_memory, atol=0.05)


def test_shard_cache_on_s3_reuses_and_evicts(tmp_path, s3_env):
    from components.data.loader import ShardCache

    store = open_store(f"s3://{s3_env}/cache-test")
    for n in range(3):
        store.put_bytes(f"d/train-{n:06d}.tar", bytes([n]) * 1000)
    cache = ShardCache(store, tmp_path / "cache", max_bytes=2500)
    first = [cache.path(f"d/train-{n:06d}.tar") for n in range(3)]
    assert cache.fetched == 3 and first[2].read_bytes() == bytes([2]) * 1000
    assert not first[0].exists(), "least recently used shard evicted beyond the limit"
    assert cache.path("d/train-000002.tar") == first[2] and cache.fetched == 3, "reused"
    local = ShardCache(open_store(str(tmp_path / "s")), tmp_path / "cache")
    assert local.path("x/a.tar") == tmp_path / "s" / "x" / "a.tar", "a local store is read in place"


def test_stream_from_s3_through_the_cache(tmp_path, s3_env, monkeypatch):
    import torch

    from components.data.loader import open_split

    monkeypatch.setenv("APRFLOW_SHARD_CACHE", str(tmp_path / "cache"))
    store = open_store(f"s3://{s3_env}/aprflow")
    folder = make_image_folder(tmp_path / "folder")
    ref = build_dataset(store, DatasetDescriptor(name="pets", source=str(folder)), print)
    data = open_split(store, replace(ref, input="stream"), "train", torch.device("cpu"), workers=0)
    recipe = resolve_recipe("apr_tiny", {"batch_size": 7})
    _, y = _epoch(data, recipe, 0)
    assert sorted(y.tolist()) == sorted(load_split(store, ref, "train")[1].tolist())
    cached = list((tmp_path / "cache").rglob("*.tar"))
    assert len(cached) == 1 and cached[0].stat().st_size > 0


@pytest.mark.slow
@pytest.mark.extended
def test_trial_trains_and_resumes_on_the_stream(built, monkeypatch):
    """A trial killed during epoch 2 resumes from its epoch-1 checkpoint and ends exactly where
    an uninterrupted run ends: the stream's order depends on (seed, epoch) only."""
    from components.sample.samplers import sample_specs
    from components.train.trial import Trial, result_key, run_trial

    monkeypatch.setenv("APRFLOW_DATA_WORKERS", "0")  # in process: workers are tested above
    store, ref = built
    ref = replace(ref, resolution=8)  # three short trials: keep them cheap
    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict()
    recipe = resolve_recipe("apr_tiny", {"epochs": 2, "batch_size": 4})
    trial = Trial(spec=spec, dataset=ref, recipe=recipe, seed=0)
    assert trial.trial_id != replace(trial, dataset=replace(ref, input="memory")).trial_id

    def killed_in_epoch_2(line: str) -> None:
        if "epoch 2/2" in line:  # reported before the epoch-2 checkpoint is written
            raise RuntimeError("pod killed")

    assert run_trial(store, trial, progress=killed_in_epoch_2)["status"] == "failed"
    (store.root / result_key(trial.trial_id)).unlink()
    lines: list[str] = []
    resumed = run_trial(store, trial, progress=lines.append)
    assert any("resuming" in line and "after epoch 1" in line for line in lines)

    fresh = open_store(str(store.root.parent / "fresh"))
    for key in store.list("datasets/"):
        fresh.put_bytes(key, store.get_bytes(key))
    uninterrupted = run_trial(fresh, trial, progress=lambda _: None)
    assert resumed["status"] == uninterrupted["status"] == "ok"
    assert np.allclose(resumed["history"]["train_loss"], uninterrupted["history"]["train_loss"])
    assert resumed["history"]["test_error"] == uninterrupted["history"]["test_error"]


def test_close_stops_the_persistent_workers_and_batches_are_unpinned(built):
    import torch

    from components.data.loader import open_split

    store, ref = built
    recipe = resolve_recipe("apr_tiny", {"batch_size": 4})
    data = open_split(store, ref, "train", torch.device("cpu"), seed=5, workers=2)
    _epoch(data, recipe, epoch=0)
    list(data.eval(8))
    loaders = [loader for _, loader, _ in data._loaders.values()]
    workers = [w for loader in loaders for w in loader._iterator._workers]
    assert len(workers) == 4 and all(w.is_alive() for w in workers)
    # timm's default: no pinning thread in the trainer (and the exit stall of
    # https://github.com/pytorch/pytorch/issues/81794 needs pinned memory).
    assert not any(loader.pin_memory for loader in loaders)
    data.close()
    assert not any(w.is_alive() for w in workers)
    data.close()  # idempotent
    x, _ = _epoch(data, recipe, epoch=0)  # a closed split opens new workers when used again
    assert len(x) == 20
    data.close()


@pytest.mark.parametrize("fails", [False, True])
def test_a_trial_leaves_no_loader_worker_behind(built, monkeypatch, fails):
    """The trial stops its splits' workers when it ends, failed or not, instead of leaving them
    to whoever still holds the split, or to the process's exit (where each could cost a 5-s
    join timeout)."""
    import multiprocessing

    from components.sample.samplers import sample_specs
    from components.train import trial as trial_module
    from components.train.trial import Trial, run_trial

    opened = []  # held here, as a caller or a traceback can hold them

    def recording_open_split(*args, **kwargs):
        opened.append(trial_module.open_split.__wrapped__(*args, **kwargs))
        return opened[-1]

    recording_open_split.__wrapped__ = trial_module.open_split
    monkeypatch.setattr(trial_module, "open_split", recording_open_split)

    monkeypatch.setenv("APRFLOW_DATA_WORKERS", "2")
    store, ref = built
    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict()
    recipe = resolve_recipe("apr_tiny", {"epochs": 1, "batch_size": 4})
    trial = Trial(spec=spec, dataset=replace(ref, resolution=8), recipe=recipe, seed=int(fails))

    def progress(line: str) -> None:
        if fails and "epoch 1/1" in line:
            raise RuntimeError("pod killed")

    before = set(multiprocessing.active_children())
    result = run_trial(store, trial, progress=progress)
    assert result["status"] == ("failed" if fails else "ok")
    assert len(opened) == (2 if fails else 3)  # train, test (and val, evaluated at the end)
    assert set(multiprocessing.active_children()) <= before


def test_epoch_order_and_batches():
    from components.data.loader import epoch_order, train_batches

    order = epoch_order([9, 9, 3], seed=5, epoch=0)
    assert sorted(order) == list(range(21)) and order == epoch_order([9, 9, 3], 5, 0)
    assert order != epoch_order([9, 9, 3], 5, 1) and order != epoch_order([9, 9, 3], 6, 0)
    assert [len(b) for b in train_batches(order, 4)] == [4] * 5, "last partial batch dropped"
    assert train_batches([3, 1, 2], 8) == [[3, 1, 2]], "a split smaller than a batch: one batch"


def test_stream_repeats_each_image_differently_and_trains_at_the_train_resolution(built):
    """aug_repeats on the stream: copies in a row, each augmented differently, the same
    whatever the workers; train_resolution_ratio sizes the training crops, not evaluation."""
    import torch

    from components.data.loader import open_split

    store, ref = built
    recipe = resolve_recipe(
        "apr_tiny",
        {"batch_size": 4, "hflip": True, "aug_repeats": 2, "train_resolution_ratio": 0.75},
    )
    data = open_split(store, ref, "train", torch.device("cpu"), seed=5, workers=0)
    x, y = _epoch(data, recipe, epoch=0)
    assert x.shape[1:] == (3, 12, 12), "round(0.75 x 16) px"
    assert next(data.eval(4))[0].shape[1:] == (3, 16, 16)
    # 21 images, 2 repeats: timm's sampler selects 21 (10 images twice, one once); 5 batches.
    assert len(y) == 20 == 4 * data.batches_per_epoch(recipe)
    assert all(y[i] == y[i + 1] for i in range(0, 20, 2))
    assert all(not torch.equal(x[i], x[i + 1]) for i in range(0, 20, 2)), "copies differ"
    in_workers = _epoch(
        open_split(store, ref, "train", torch.device("cpu"), seed=5, workers=2), recipe, 0
    )
    assert torch.equal(x, in_workers[0]) and torch.equal(y, in_workers[1])


def test_stream_start_skips_batches_exactly(built):
    import torch

    from components.data.loader import open_split

    store, ref = built
    recipe = resolve_recipe("apr_tiny", {"batch_size": 4, "hflip": True})
    data = open_split(store, ref, "train", torch.device("cpu"), seed=5, workers=0)
    full = list(data.train(recipe, torch.Generator(), 1))
    resumed = list(data.train(recipe, torch.Generator(), 1, start=3))
    assert len(full) == 5 and len(resumed) == 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, full[3:], strict=True))


def test_stream_leaves_the_global_generator_alone(built):
    """The trainer's global RNG (DropPath, Mixup) must not depend on whether the loader's
    persistent workers are new (a resumed run) or reused (an uninterrupted one)."""
    import torch

    from components.data.loader import open_split

    store, ref = built
    recipe = resolve_recipe("apr_tiny", {"batch_size": 4, "hflip": True})
    for workers in (0, 2):
        data = open_split(store, ref, "train", torch.device("cpu"), seed=5, workers=workers)
        before = torch.random.get_rng_state()
        for epoch in (0, 1):  # a new DataLoader, then the persistent one again
            list(data.train(recipe, torch.Generator(), epoch))
            list(data.eval(8))
        assert torch.equal(before, torch.random.get_rng_state()), workers


@pytest.mark.parametrize("re_prob", [0.0, 0.5])
def test_workers_send_uint8_and_the_device_normalises_to_the_same_floats(built, re_prob):
    """As timm's loader with its prefetcher: the workers send uint8 images and the batch is
    normalised on the device, giving bit for bit the floats that ToTensor + Normalize in the
    worker give. Random erasing (normalised floats, seeded per image) stays in the worker."""
    import torch
    from timm.data import create_transform

    from components.data.descriptor import mix_seed
    from components.data.loader import ShardSamples, StreamBatches, _seeded, open_split
    from components.data.shards import decode_rgb

    store, ref = built
    recipe = resolve_recipe("apr_tiny", {"batch_size": 6, "hflip": True, "re_prob": re_prob})
    data = open_split(store, ref, "train", torch.device("cpu"), seed=3, workers=0)
    assert isinstance(data, StreamBatches)
    images, _ = next(data.train(recipe, torch.Generator(), 0))
    assert images.dtype == torch.float32 and images.shape == (6, 3, 16, 16)

    loader, batches = data._loaders["train"][1:]
    samples: ShardSamples = loader.dataset
    sent = torch.stack([samples[item][0] for item in batches.batches[0]])
    assert sent.dtype == (torch.float32 if re_prob else torch.uint8)
    # The worker-side float path of the same images, as timm builds it without a prefetcher.
    in_worker = create_transform(
        16,
        is_training=True,
        scale=recipe.scale,
        ratio=recipe.ratio,
        hflip=0.5,
        color_jitter=recipe.color_jitter,
        auto_augment=recipe.auto_augment or None,
        re_prob=re_prob,
        interpolation="bilinear",
        mean=tuple(data.mean),
        std=tuple(data.std),
    )
    expected = []
    for index, epoch, copy in batches.batches[0]:
        number = int(np.searchsorted(samples.starts, index, side="right")) - 1
        name, raw, _ = samples._shard(number)[index - int(samples.starts[number])]
        with _seeded(mix_seed(3, epoch, name, copy)):
            expected.append(in_worker(decode_rgb(raw)))
    assert torch.equal(images, torch.stack(expected))
