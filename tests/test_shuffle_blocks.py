"""``shuffle="blocks"``: shards permuted per epoch, each rank reading its own run of them a
block of ``shuffle_window`` shards at a time; exact epochs, resume and wrappers as with the
global shuffle.

The samples are checked against an independent read of the shards (``tarfile`` and PIL):
with ``p_conflict=0``, ``min_scale=1`` and ``image_size`` the images' side, the crop is the
whole image, so ``x`` is the stored image (or its mirror image: the random flip) and ``y`` the
one-hot of its stored class.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shardfactory import make_shard_dir
from test_loader_clients import free_port

from stexture.loader import make_loader
from stexture.loader.batch import IMAGENET_MEAN, IMAGENET_STD
from stexture.loader.sampler import EpochSampler

SIDE = 12
WINDOW = 3
# 3 classes x 17: 51 train samples in 11 shards of 5 (the last of 1); batches of 4
OPTIONS = {"k": 0.5, "batch_size": 4, "image_size": SIDE, "min_scale": 1.0, "p_conflict": 0.0,
           "with_info": True, "seed": 3, "shuffle": "blocks", "shuffle_window": WINDOW}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shard_dir(tmp_path_factory.mktemp("blocks"), per_class=17, val_per_class=1,
                          size=SIDE, shard_size=5)


def read_shards(root: Path) -> dict[str, tuple[str, np.ndarray, int]]:
    """key -> (shard, image, class) of every train sample, read with tarfile and PIL only."""
    found: dict[str, tuple[str, np.ndarray, int]] = {}
    for path in sorted(root.glob("train-*.tar")):
        fields: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, field = member.name.split(".", 1)
                fields.setdefault(key, {})[field] = tar.extractfile(member).read()
        for key, data in fields.items():
            image = np.asarray(Image.open(io.BytesIO(data["png"])).convert("RGB"))
            found[key] = (path.name, image, int(data["cls"]))
    return found


@pytest.fixture(scope="module")
def truth(shards):
    return read_shards(shards)


def run_epoch(root: Path, epoch: int, *, rank: int, world: int, **options) -> list[tuple]:
    """(keys, x, y) of every batch of ``epoch`` on ``rank`` of ``world``."""
    loader = make_loader(root, **{**OPTIONS, **options}, rank=rank, world_size=world)
    loader.set_epoch(epoch)
    return [(list(info["key"]), x.clone(), y.clone()) for x, y, info in loader]


def as_pixels(x: torch.Tensor) -> np.ndarray:
    """A normalised 3 x S x S sample back to uint8 S x S x 3."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def assert_samples_match(batches: list[tuple], truth: dict) -> None:
    """Each sample's pixels are its stored image (or its mirror), its target its class."""
    for keys, x, y in batches:
        for key, sample, target in zip(keys, x, y, strict=True):
            _, image, cls = truth[key]
            pixels = as_pixels(sample)
            assert np.array_equal(pixels, image) or np.array_equal(pixels, image[:, ::-1]), key
            assert int(target.argmax()) == cls and float(target.max()) == 1.0, key


def most_open_shards(shards: list[str]) -> int:
    """The most shards open at once when a shard is opened at its first sample and can be
    closed after its last (what a cache must hold, prefetch aside)."""
    first, last = {}, {}
    for i, shard in enumerate(shards):
        first.setdefault(shard, i)
        last[shard] = i
    change = np.zeros(len(shards) + 1, dtype=int)
    for shard in first:
        change[first[shard]] += 1
        change[last[shard] + 1] -= 1
    return int(np.cumsum(change).max())


def flat(batches: list[tuple]) -> list[str]:
    return [k for keys, *_ in batches for k in keys]


_RUNS: dict[tuple[int, int], list[list[tuple]]] = {}  # (world, workers) -> per rank


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_is_every_sample_once_with_its_pixels_and_label(shards, truth, world, workers):
    ranks = [run_epoch(shards, 1, rank=r, world=world, num_workers=workers)
             for r in range(world)]
    _RUNS[(world, workers)] = ranks
    assert len({len(flat(r)) for r in ranks}) == 1  # equal counts per rank
    seen = Counter(k for r in ranks for k in flat(r))
    assert set(seen) == set(truth)  # every sample, nothing else
    assert sum(seen.values()) - len(truth) == (-len(truth)) % world  # the padding only
    for r in ranks:
        assert_samples_match(r, truth)
        assert most_open_shards([truth[k][0] for k in flat(r)]) <= WINDOW
    if world == 2:  # each rank reads its own shards: at most the one at the cut is shared
        touched = [{truth[k][0] for k in flat(r)} for r in ranks]
        assert len(touched[0] & touched[1]) <= 1
    other = _RUNS.get((world, 2 - workers))
    if other is not None:  # workers change how fast, never what
        for mine, theirs in zip(ranks, other, strict=True):
            assert [b[0] for b in mine] == [b[0] for b in theirs]
            assert all(torch.equal(a[1], b[1]) for a, b in zip(mine, theirs, strict=True))


def test_the_order_is_seeded_and_new_each_epoch(shards):
    first = flat(run_epoch(shards, 0, rank=0, world=1))
    assert flat(run_epoch(shards, 0, rank=0, world=1)) == first
    assert flat(run_epoch(shards, 1, rank=0, world=1)) != first
    assert flat(run_epoch(shards, 0, rank=0, world=1, seed=4)) != first
    assert sorted(flat(run_epoch(shards, 1, rank=0, world=1))) == sorted(first)
    loader = make_loader(shards, **OPTIONS, rank=0, world_size=1)
    shard_orders = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        shard_orders.append(loader.sampler.upcoming_shards())
    assert shard_orders[0] != shard_orders[1] and sorted(shard_orders[0]) == sorted(
        shard_orders[1])


def test_upcoming_shards_is_the_order_the_rank_reads(shards, truth):
    for rank in (0, 1):
        loader = make_loader(shards, **OPTIONS, rank=rank, world_size=2)
        loader.set_epoch(1)
        planned = [Path(s).name for s in loader.sampler.upcoming_shards()]
        later = [Path(s).name for s in loader.sampler.upcoming_shards(5)]  # 5 samples in
        spans = loader.sampler.shard_spans()
        keys = [k for _, _, info in loader for k in info["key"]]
        read = [truth[k][0] for k in keys]
        assert planned == list(dict.fromkeys(read))
        assert later == list(dict.fromkeys(read[5:]))
        assert [(Path(s).name, first, last) for s, first, last in spans] == [
            (shard, read.index(shard), len(read) - 1 - read[::-1].index(shard))
            for shard in planned]


@pytest.mark.parametrize("shuffle", ["blocks", "global"])
def test_a_state_mid_epoch_resumes_the_uninterrupted_run(shards, truth, shuffle):
    options = {"shuffle": shuffle, "shuffle_window": WINDOW if shuffle == "blocks" else None}
    whole = [run_epoch(shards, 2, rank=r, world=2, **options) for r in (0, 1)]
    states, rests = [], []
    for rank in (0, 1):
        loader = make_loader(shards, **{**OPTIONS, **options}, rank=rank, world_size=2)
        loader.set_epoch(2)
        batches = iter(loader)
        for _ in range(2):
            next(batches)
        states.append(loader.state_dict())
        fresh = make_loader(shards, **{**OPTIONS, **options}, rank=rank, world_size=2)
        fresh.load_state_dict(states[-1])
        rests.append([(list(i["key"]), x) for x, _, i in fresh])
    assert states[0] == states[1] and states[0]["position"] == 2 * 4 * 2
    for rank in (0, 1):
        assert [k for k, _ in rests[rank]] == [b[0] for b in whole[rank][2:]]
        assert all(torch.equal(x, b[1]) for (_, x), b in zip(rests[rank], whole[rank][2:],
                                                               strict=True))
    # the same state on one rank: the rest of the epoch's order, every sample once in all
    one = make_loader(shards, **{**OPTIONS, **options}, rank=0, world_size=1)
    one.load_state_dict(states[0])
    rest = [k for _, _, info in one for k in info["key"]]
    head = [k for r in whole for b in r[:2] for k in b[0]]
    assert sorted(head + rest) == sorted(truth)


def test_a_blocks_state_is_refused_by_another_window(shards):
    loader = make_loader(shards, **OPTIONS, rank=0, world_size=1)
    next(iter(loader))
    state = loader.state_dict()
    assert state["shuffle"] == "blocks" and state["order_world_size"] == 1
    other = make_loader(shards, **{**OPTIONS, "shuffle_window": WINDOW + 1})
    with pytest.raises(ValueError, match="shuffle_window"):
        other.load_state_dict(state)


@pytest.mark.parametrize(("options", "message"), [
    ({"shuffle": "block"}, "shuffle must be 'global' .*'blocks' or False, got 'block'"),
    ({"shuffle": 1}, "shuffle must be"),
    ({"shuffle": "blocks", "shuffle_window": 0}, "shuffle_window must be a positive"),
    ({"shuffle": "global", "shuffle_window": 4}, "applies to shuffle='blocks' only"),
])
def test_a_bad_shuffle_is_named(shards, options, message):
    with pytest.raises(ValueError, match=message):
        make_loader(shards, **{**OPTIONS, **options})


def test_true_is_the_global_shuffle(shards):
    global_ = {**OPTIONS, "shuffle": "global", "shuffle_window": None}
    assert flat(run_epoch(shards, 1, rank=0, world=1, **global_)) == flat(
        run_epoch(shards, 1, rank=0, world=1, **{**global_, "shuffle": True}))


@pytest.mark.parametrize("world", [3, 8])
def test_locality_and_exactness_of_a_larger_layout(world):
    """No I/O: 997 samples in shards of 1 to 40, any rank reads at most a window at a time,
    the ranks together every sample once (and at most world - 1 repeats)."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 41, 60)
    names = [f"s{i}" for i, n in enumerate(sizes) for _ in range(n)][:997]
    reads = []
    for rank in range(world):
        sampler = EpochSampler(len(names), batch_size=8, seed=1, shuffle="blocks", shards=names,
                               shuffle_window=4, rank=rank, world_size=world)
        order = [t.index for t in sampler]
        assert most_open_shards([names[i] for i in order]) <= 4
        reads.append(order)
    assert len({len(r) for r in reads}) == 1
    counts = Counter(i for r in reads for i in r)
    assert set(counts) == set(range(len(names)))
    assert sum(counts.values()) - len(names) == (-len(names)) % world


# --------------------------------------------------------------------------- accelerate


def _accelerate_worker(rank: int, port: int, root: str, out: str) -> None:
    import accelerate

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    accelerator = accelerate.Accelerator(cpu=True)
    prepared = accelerator.prepare(make_loader(root, **OPTIONS))
    epochs = []
    for epoch in (0, 1):
        prepared.set_epoch(epoch)
        epochs.append([(list(info["key"]), x.clone()) for x, _, info in prepared])
    torch.save(epochs, f"{out}/rank{rank}.pt")
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def test_accelerate_prepare_on_two_processes_keeps_blocks(shards, truth, tmp_path):
    """accelerate deals the loader's batches round-robin to its processes: each gets its own
    rank's blocks (the batches the loader gives that rank), every sample once per epoch."""
    pytest.importorskip("accelerate")
    torch.multiprocessing.spawn(_accelerate_worker,
                                args=(free_port(), str(shards), str(tmp_path)), nprocs=2)
    runs = [torch.load(tmp_path / f"rank{p}.pt") for p in (0, 1)]
    for epoch in (0, 1):
        keys = [k for run in runs for keys, _ in run[epoch] for k in keys]
        # every sample; accelerate makes the 13 batches (the last short) 7 full ones each
        assert set(keys) == set(truth) and len(keys) - len(truth) <= 2 * 4
        for p in (0, 1):
            native = run_epoch(shards, epoch, rank=p, world=2)[:6]  # the 6 full rounds
            got = runs[p][epoch][:6]
            assert [b[0] for b in got] == [b[0] for b in native]
            assert all(torch.equal(a[1], b[1]) for a, b in zip(got, native, strict=True))
            assert most_open_shards([truth[k][0] for b in got for k in b[0]]) <= WINDOW
