"""The training loader inside the wrappers trainers put around it: accelerate's default
``prepare`` on 2 processes, a resume at another world size (2 -> 1 and 1 -> 2 ranks, gloo,
2 workers), Ray Train's ``prepare_data_loader`` on 2 workers, and Ignite (a resumed run, and
``deterministic=True``); Ray and Ignite with the global shuffle and with
``shuffle="blocks"`` (accelerate with blocks: ``test_shuffle_blocks.py``). Every test checks
that an epoch is the split exactly, each sample once, through the wrapper, and where a run
resumes, that the pixels are those of an uninterrupted run."""

from __future__ import annotations

import csv
import multiprocessing
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shardfactory import make_shard_dir
from test_loader_clients import free_port

from stexture.loader import make_loader

ROOT = Path(__file__).resolve().parent.parent
# 4 classes x 16: 64 train samples; batches of 4 are 16 an epoch on one rank, 8 on each of 2
OPTIONS = {"k": 0.5, "batch_size": 4, "image_size": 8, "with_info": True, "seed": 7}
HEAD = 3  # batches consumed before a state is saved
BLOCKS = {"shuffle": "blocks", "shuffle_window": 2}  # 2 of the 8 shards open at a time


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shard_dir(tmp_path_factory.mktemp("trainers"),
                          classes=("armchair", "bed", "chair", "sofa"), per_class=16,
                          val_per_class=1, size=12, shard_size=8)


def split_keys(root: Path) -> list[str]:
    """The train keys as index.csv lists them (the reference for 'every sample once')."""
    with open(root / "index.csv", newline="") as f:
        return sorted(row["key"] for row in csv.DictReader(f) if row["split"] == "train")


def batches(loader, limit: int | None = None) -> list[tuple[list[str], torch.Tensor]]:
    """(keys, x) of the loader's batches (the first ``limit``)."""
    out = []
    for x, _, info in loader:
        out.append((list(info["key"]), x.clone()))
        if limit is not None and len(out) == limit:
            break
    return out


def reference(root, epoch: int, **options) -> list[tuple[list[str], torch.Tensor]]:
    """An uninterrupted epoch on one rank."""
    loader = make_loader(root, **{**OPTIONS, **options}, rank=0, world_size=1)
    loader.set_epoch(epoch)
    return batches(loader)


def flat_keys(runs) -> list[str]:
    return [k for run in runs for keys, _ in run for k in keys]


def assert_same_batches(got, expected) -> None:
    assert len(got) == len(expected)
    for (k0, x0), (k1, x1) in zip(got, expected, strict=True):
        assert k0 == k1 and torch.equal(x0, x1)


def assert_same_pixels_per_key(runs, expected) -> None:
    """Each sample's pixels are those of the same sample in ``expected`` (p_conflict=0: a
    sample's crop is seeded by its place in the epoch's order, whatever the ranks)."""
    pixels = {k: x[i] for keys, x in expected for i, k in enumerate(keys)}
    for run in runs:
        for keys, x in run:
            for i, k in enumerate(keys):
                assert torch.equal(x[i], pixels[k]), k


# --------------------------------------------------------------------------- accelerate


def _accelerate_worker(rank: int, port: int, root: str, out: str) -> None:
    import accelerate

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    accelerator = accelerate.Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    model = torch.nn.Linear(3 * 8 * 8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train = make_loader(root, **OPTIONS)
    model, optimizer, prepared = accelerator.prepare(model, optimizer, train)  # the default
    epochs = []
    for epoch in (0, 1):
        prepared.set_epoch(epoch)
        run = []
        for x, y, info in prepared:
            loss = torch.nn.functional.cross_entropy(model(x.flatten(1)), y)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            run.append((list(info["key"]), x.clone()))
        epochs.append(run)
    # epoch 2 stops after HEAD steps; a fresh loader resumes from the state of its steps
    prepared.set_epoch(2)
    head = batches(prepared, HEAD)
    state = train.state_dict(batches=HEAD)
    fresh = make_loader(root, **OPTIONS)
    fresh.load_state_dict(state)
    resumed = accelerator.prepare(fresh)
    resumed.set_epoch(state["epoch"])
    rest = batches(resumed)
    torch.save({"epochs": epochs, "head": head, "rest": rest, "state": state},
               f"{out}/rank{rank}.pt")
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def test_accelerate_default_prepare_on_two_processes_serves_each_sample_once(shards, tmp_path):
    """accelerate's prepare hands each process every other batch of the loader's
    batch_sampler (every rank's batches): process p's batch j is batch 2j + p of the epoch
    on one rank, the same samples and pixels; a state taken from the steps resumes there."""
    pytest.importorskip("accelerate")
    torch.multiprocessing.spawn(_accelerate_worker,
                                args=(free_port(), str(shards), str(tmp_path)), nprocs=2)
    runs = [torch.load(tmp_path / f"rank{p}.pt") for p in (0, 1)]
    keys = split_keys(shards)
    for epoch in (0, 1):
        per_process = [r["epochs"][epoch] for r in runs]
        assert [len(p) for p in per_process] == [8, 8]
        assert sorted(flat_keys(per_process)) == keys  # each sample once, none lost
        expected = reference(shards, epoch)
        for p in (0, 1):
            assert_same_batches(per_process[p], expected[p::2])
    assert runs[0]["state"] == runs[1]["state"]
    assert (runs[0]["state"]["epoch"], runs[0]["state"]["position"]) == (2, HEAD * 4 * 2)
    assert sorted(flat_keys([r["head"] for r in runs] + [r["rest"] for r in runs])) == keys
    expected = reference(shards, 2)
    for p in (0, 1):
        assert_same_batches(runs[p]["head"] + runs[p]["rest"], expected[p::2])


def test_a_loaded_state_that_set_epoch_drops_is_not_dropped_silently(shards):
    """accelerate's prepared loader sets its own epoch count (0 unless told otherwise) on
    every iteration: a state of epoch 2 whose epoch was never set there warns."""
    accelerate = pytest.importorskip("accelerate")
    train = make_loader(shards, **OPTIONS)
    train.set_epoch(2)
    batches(train, HEAD)
    fresh = make_loader(shards, **OPTIONS)
    fresh.load_state_dict(train.state_dict())
    prepared = accelerate.Accelerator(cpu=True).prepare(fresh)
    with pytest.warns(UserWarning, match=r"set_epoch\(0\) drops the loaded state"):
        next(iter(prepared))


def test_a_state_without_its_position_or_of_another_order_is_refused(shards):
    loader = make_loader(shards, **OPTIONS)
    loader.set_epoch(1)
    batches(loader, HEAD)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="no 'position'"):  # a state of the old format
        make_loader(shards, **OPTIONS).load_state_dict({"epoch": 1, "batches": HEAD})
    with pytest.raises(ValueError, match="'batch_size': \\(4, 8\\)"):
        make_loader(shards, **{**OPTIONS, "batch_size": 8}).load_state_dict(state)
    with pytest.raises(ValueError, match="'shuffle': \\(True, False\\)"):
        make_loader(shards, **OPTIONS, shuffle=False).load_state_dict(state)


# --------------------------------------------------------------------------- elastic resume

ELASTIC = {"p_conflict": 0.0, "num_workers": 2}


def _elastic_worker(rank: int, port: int, root: str, out: str, state_of_one: dict) -> None:
    # a process that spawn started starts its own children by spawn too; a script that
    # torchrun starts forks them (Linux's default): fork the loader's workers, as there
    multiprocessing.set_start_method("fork", force=True)
    # built before the process group, as torchrun scripts do
    head_loader = make_loader(root, **OPTIONS, **ELASTIC)
    resumed = make_loader(root, **OPTIONS, **ELASTIC)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=2)
    head_loader.set_epoch(1)
    head = batches(head_loader, HEAD)  # 2 ranks, then a restart on 1 (2 -> 1)
    state = head_loader.state_dict()
    resumed.load_state_dict(state_of_one)  # 1 rank, then a restart on 2 (1 -> 2)
    rest = batches(resumed)
    torch.save({"head": head, "state": state, "rest": rest}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_resume_at_another_world_size_continues_from_the_global_position(shards, tmp_path):
    """States saved after 3 batches of epoch 1 (gloo, 2 workers a rank): 2 ranks -> 1 and
    1 rank -> 2 continue at the next unseen sample of the epoch's order: the epoch is the
    split exactly (nothing repeated, nothing lost), each sample with its pixels."""
    keys = split_keys(shards)
    expected = reference(shards, 1, **ELASTIC)
    one = make_loader(shards, **OPTIONS, **ELASTIC)
    one.set_epoch(1)
    head_of_one = batches(one, HEAD)
    state_of_one = one.state_dict()
    assert (state_of_one["world_size"], state_of_one["position"]) == (1, HEAD * 4)
    torch.multiprocessing.spawn(_elastic_worker, args=(free_port(), str(shards), str(tmp_path),
                                                       state_of_one), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    # 1 -> 2
    assert [len(r["rest"]) for r in ranks] == [7, 7]  # 52 samples left: 26 a rank
    one_to_two = [head_of_one] + [r["rest"] for r in ranks]
    assert sorted(flat_keys(one_to_two)) == keys
    assert_same_pixels_per_key(one_to_two, expected)
    # 2 -> 1
    state = ranks[0]["state"]
    assert state == ranks[1]["state"]
    assert (state["epoch"], state["world_size"], state["position"]) == (1, 2, HEAD * 4 * 2)
    restarted = make_loader(shards, **OPTIONS, **ELASTIC)
    restarted.load_state_dict(state)
    rest = batches(restarted)
    two_to_one = [r["head"] for r in ranks] + [rest]
    assert sorted(flat_keys(two_to_one)) == keys
    assert_same_batches(rest, expected[2 * HEAD:])  # slots 24.. on one rank
    assert_same_pixels_per_key(two_to_one, expected)
    assert restarted.state_dict()["epoch"] == 2


# --------------------------------------------------------------------------- Ray Train


def _ray_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    rank = ray.train.get_context().get_world_rank()
    options = {**OPTIONS, **config["shuffle"]}
    train = make_loader(config["root"], **options)
    loader = ray.train.torch.prepare_data_loader(train)
    epochs = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        epochs.append(batches(loader, HEAD if epoch == 1 else None))
    state = train.state_dict()  # after HEAD consumed batches; Ray has fetched one more
    fresh = make_loader(config["root"], **options)
    fresh.load_state_dict(state)
    rest = batches(ray.train.torch.prepare_data_loader(fresh))
    torch.save({"epochs": epochs, "state": state, "rest": rest},
               f"{config['out']}/rank{rank}.pt")


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("shuffle", [{}, BLOCKS], ids=["global", "blocks"])
def test_ray_train_two_workers_epochs_and_a_state_of_consumed_batches(shards, tmp_path,
                                                                      shuffle):
    """TorchTrainer, 2 workers, prepare_data_loader(make_loader(...)): the epoch set through
    loader.sampler, each sample once an epoch across workers, and a state that counts the
    batches consumed (not the one Ray fetched ahead): the resumed epoch misses nothing."""
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # Ray's workers cannot import this test module: send its loop by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    trainer = TorchTrainer(
        _ray_loop, train_loop_config={"root": str(shards), "out": str(tmp_path),
                                      "shuffle": shuffle},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path / "ray"), name="loader"))
    trainer.fit()
    runs = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    keys = split_keys(shards)
    assert sorted(flat_keys([r["epochs"][0] for r in runs])) == keys
    for r, run in enumerate(runs):
        assert (run["state"]["epoch"], run["state"]["batches"]) == (1, HEAD)
        assert run["state"]["position"] == HEAD * 4 * 2
        expected = make_loader(shards, **OPTIONS, **shuffle, rank=r, world_size=2)
        expected.set_epoch(1)
        assert_same_batches(run["epochs"][1] + run["rest"], batches(expected))
    assert sorted(flat_keys([r["epochs"][1] + r["rest"] for r in runs])) == keys
    assert flat_keys([r["epochs"][0] for r in runs]) != flat_keys([r["epochs"][1] for r in runs])


# --------------------------------------------------------------------------- Ignite


def _ignite_run(engine_class, root, shuffle, *, state=None, stop_at=None, max_epochs=3):
    """Per Ignite epoch (1-based) the (keys, x) of its batches; and the engine's state."""
    from ignite.engine import Events

    loader = make_loader(root, **OPTIONS, **shuffle)
    seen: dict[int, list] = {}

    def step(engine, batch):
        x, _, info = batch
        seen.setdefault(engine.state.epoch, []).append((list(info["key"]), x.clone()))

    engine = engine_class(step)
    engine.add_event_handler(Events.EPOCH_STARTED, loader.epoch_started)
    if stop_at is not None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at),
                                 lambda e: e.terminate())
    if state is not None:
        engine.load_state_dict(state)
    engine.run(loader, max_epochs=None if state is not None else max_epochs)
    return seen, engine.state_dict()


@pytest.mark.parametrize("shuffle", [{}, BLOCKS], ids=["global", "blocks"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_ignite_sets_the_epoch_and_resumes_a_checkpoint_mid_epoch(shards, deterministic,
                                                                  shuffle):
    """Ignite (Engine, and DeterministicEngine, which rebuilds the loader around a
    ReproducibleBatchSampler of its batch_sampler): the loader's epoch_started handler gives
    every epoch its own order, each sample once; a run resumed from the engine's state after
    3 batches of epoch 2, with a fresh loader, continues that epoch's order exactly."""
    from ignite.engine import DeterministicEngine, Engine

    engine_class = DeterministicEngine if deterministic else Engine
    keys = split_keys(shards)
    full, _ = _ignite_run(engine_class, shards, shuffle)
    for epoch in (1, 2, 3):  # Ignite counts epochs from 1, the loader from 0
        assert sorted(flat_keys([full[epoch]])) == keys
        assert_same_batches(full[epoch], reference(shards, epoch - 1, **shuffle))
    head, checkpoint = _ignite_run(engine_class, shards, shuffle, stop_at=16 + HEAD)
    assert checkpoint["iteration"] == 16 + HEAD and len(head[2]) == HEAD
    rest, _ = _ignite_run(engine_class, shards, shuffle, state=checkpoint)
    assert sorted(rest) == [2, 3]
    assert_same_batches(head[2] + rest[2], full[2])
    assert_same_batches(rest[3], full[3])


# --------------------------------------------------------------------------- README


def test_readme_names_the_index_csv_header_the_writer_writes(tmp_path):
    from stexture import cli

    photos = tmp_path / "photos"
    for name in ("bed", "chair"):
        (photos / name).mkdir(parents=True)
        for i in range(2):
            pixels = np.random.default_rng(i).integers(0, 255, (40, 40, 3), np.uint8)
            Image.fromarray(pixels).save(photos / name / f"{i}.png")
    assert cli.main(["decompose", str(photos), str(tmp_path / "out"), "--size", "0",
                     "--quiet"]) == 0
    header = (tmp_path / "out" / "index.csv").read_text().splitlines()[0]
    readme = (ROOT / "README.md").read_text()
    described = re.findall(r"`index\.csv` \(([^)]*)\)", readme)
    assert described, "the README describes index.csv's columns"
    for columns in described:
        assert ",".join(c.strip() for c in columns.split(",")) == header
