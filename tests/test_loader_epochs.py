"""The training loader as a DataLoader: the same pixels for any number of workers, exact
epochs across ranks, resume, pickling, and worker start methods."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest
import torch
from shardfactory import make_shard_dir

from stexture.loader import IMAGENET_MEAN, IMAGENET_STD, make_loader

SIZE = 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """3 classes, 30 train samples in 8 shards."""
    return make_shard_dir(tmp_path_factory.mktemp("epochs"), per_class=10, val_per_class=2,
                          size=SIZE, shard_size=4)


def unnormalised(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x.cpu() * std + mean


def run_epoch(loader):
    return [(x.clone(), y.clone(), list(info["key"]), list(info["texture_key"]))
            for x, y, info in loader]


@pytest.mark.parametrize("mix_device", [None, "cpu"])
def test_workers_give_the_pixels_of_zero_workers_and_pixels_in_range(shards, mix_device):
    """Batch j of an epoch is identical (keys, donors, every pixel, every label) for 0, 1 and
    2 workers: crops and mixing are seeded by the epoch and the samples' places in its order,
    never by the worker. What may differ across worker counts: nothing in the batches; only
    the warnings' process and the moment a batch is ready."""
    options = {"k": 0.7, "batch_size": 7, "image_size": 12, "seed": 11, "with_info": True,
               "mix_device": mix_device}
    reference = None
    for workers in (0, 1, 2):
        extra = {"persistent_workers": True, "prefetch_factor": 2} if workers else {}
        loader = make_loader(shards, num_workers=workers, **options, **extra)
        epochs = [run_epoch(loader) for _ in range(2)]
        for batches in epochs:
            assert sum(len(b[2]) for b in batches) == 30
            for x, y, _, _ in batches:
                raw = unnormalised(x)
                assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5, (workers, raw.abs().max())
                torch.testing.assert_close(y.sum(1), torch.ones(len(y)))
        if reference is None:
            reference = epochs
            assert [b[2] for b in epochs[0]] != [b[2] for b in epochs[1]]  # a new order
            continue
        for ref_epoch, epoch in zip(reference, epochs, strict=True):
            assert len(ref_epoch) == len(epoch)
            for (x0, y0, k0, t0), (x1, y1, k1, t1) in zip(ref_epoch, epoch, strict=True):
                assert k0 == k1 and t0 == t1
                assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_an_epoch_under_ranks_is_one_pass_for_any_workers(shards):
    """2 ranks x 2 workers, 30 samples, batch 4: each rank 15 samples in 4 batches, every
    sample exactly once across ranks; with 4 ranks, 30 -> 32 by repeating 2 samples."""
    def keys(rank, world, workers, epoch):
        loader = make_loader(shards, k=0.5, batch_size=4, image_size=8, with_info=True,
                             rank=rank, world_size=world, num_workers=workers)
        loader.set_epoch(epoch)
        batches = [info["key"] for _, _, info in loader]
        assert len(batches) == len(loader)
        return batches

    for epoch in (0, 1):
        per_rank = [keys(r, 2, 2, epoch) for r in (0, 1)]
        assert [len(b) for b in per_rank] == [4, 4]
        flat = [k for batches in per_rank for b in batches for k in b]
        assert len(flat) == 30 and len(set(flat)) == 30
    four = [k for r in range(4) for b in keys(r, 4, 1, 0) for k in b]
    assert len(four) == 32 and len(set(four)) == 30  # padded with at most world_size - 1


def test_ranks_are_read_from_the_environment_when_an_epoch_starts(shards, monkeypatch):
    loader = make_loader(shards, k=0.5, batch_size=5, image_size=8, with_info=True)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert len(loader) == 2  # 10 samples of 30 on rank 1 of 3
    keys = [k for _, _, info in loader for k in info["key"]]
    monkeypatch.setenv("RANK", "0")
    others = [k for _, _, info in loader for k in info["key"]]  # the next epoch, rank 0
    assert len(keys) == len(others) == 10


def test_drop_last_leaves_out_the_tail_instead_of_padding(shards):
    per_rank = [[k for _, _, info in make_loader(
        shards, k=0.5, batch_size=4, image_size=8, with_info=True, rank=r, world_size=4,
        drop_last=True) for k in info["key"]] for r in range(4)]
    assert all(len(keys) == 4 for keys in per_rank)  # 7 each, the incomplete batch dropped
    flat = [k for keys in per_rank for k in keys]
    assert len(set(flat)) == len(flat)


def test_shuffle_buffer_zero_turns_shuffling_off(shards):
    with pytest.warns(DeprecationWarning, match="shuffle_buffer"):
        loader = make_loader(shards, k=0.5, batch_size=6, image_size=8, with_info=True,
                             shuffle_buffer=0)
    first = [k for _, _, info in loader for k in info["key"]]
    second = [k for _, _, info in loader for k in info["key"]]
    assert first == second and len(first) == 30


def test_state_dict_resumes_at_the_next_unseen_batch(shards):
    options = {"k": 0.5, "batch_size": 4, "image_size": 8, "with_info": True, "seed": 2,
               "num_workers": 2}
    loader = make_loader(shards, **options)
    loader.set_epoch(3)
    full = run_epoch(loader)
    interrupted = make_loader(shards, **options)
    interrupted.set_epoch(3)
    seen = []
    for batch in interrupted:
        seen.append(batch)
        if len(seen) == 3:
            break
    state = interrupted.state_dict()
    assert state["epoch"] == 3 and state["batches"] == 3
    resumed = make_loader(shards, **options)
    resumed.load_state_dict(state)
    rest = run_epoch(resumed)
    assert len(rest) == len(full) - 3
    for (x0, _, k0, _), (x1, _, k1, _) in zip(full[3:], rest, strict=True):
        assert k0 == k1 and torch.equal(x0, x1)
    after = resumed.state_dict()
    assert (after["epoch"], after["batches"]) == (4, 0)
    with pytest.raises(ValueError, match="another loader"):
        make_loader(shards, **{**options, "seed": 9}).load_state_dict(state)


def test_the_loader_pickles_and_gives_the_same_batches(shards):
    loader = make_loader(shards, k=0.5, batch_size=8, image_size=8, with_info=True, seed=4)
    copy = pickle.loads(pickle.dumps(loader))
    for (x0, _, k0, _), (x1, _, k1, _) in zip(run_epoch(loader), run_epoch(copy), strict=True):
        assert k0 == k1 and torch.equal(x0, x1)


def test_forked_workers_after_opencv_ran_in_the_parent(shards):
    # OpenCV's thread pool runs in the parent first and its threads fall asleep on their
    # condition variable: a forked worker that reconfigures the pool waits on them forever
    big = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), np.uint8)
    cv2.resize(cv2.GaussianBlur(big, (31, 31), 5), (700, 700), interpolation=cv2.INTER_AREA)
    time.sleep(2)
    loader = make_loader(shards, k=0.5, batch_size=5, image_size=8, num_workers=2, timeout=60)
    assert sum(len(x) for x, _ in loader) == 30


def test_workers_start_in_a_script_read_from_stdin(shards):
    script = textwrap.dedent(f"""
        import stexture
        loader = stexture.make_loader({str(shards)!r}, k=0.8, batch_size=5, image_size=8,
                                      num_workers=2)
        print(sum(len(x) for x, y in loader))
    """)
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                          timeout=180, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "30"


def test_workers_die_with_a_killed_parent(shards, tmp_path):
    # the workers block in worker_init_fn (as a stuck decode would), where torch's own
    # watchdog never looks; the parent is killed with SIGKILL
    script = textwrap.dedent(f"""
        import os, threading, time
        import stexture

        def stuck(worker_id):
            open(os.path.join({str(tmp_path)!r}, f"w{{os.getpid()}}"), "w").close()
            time.sleep(600)

        loader = stexture.make_loader({str(shards)!r}, k=0.8, batch_size=2, image_size=8,
                                      num_workers=2, worker_init_fn=stuck)
        threading.Thread(target=lambda: next(iter(loader)), daemon=True).start()
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("w*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.name[1:]) for p in tmp_path.glob("w*")]
        assert len(workers) == 2 and all(alive(p) for p in workers)
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in workers)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
