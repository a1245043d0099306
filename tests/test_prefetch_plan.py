"""The shard cache's prefetch plan is the order each process actually reads: for every
DataLoader worker (and the main process without workers) the shards planned for an epoch are
the shards of the samples that process served, in order of first use, also for a resumed
epoch at another world size (blocks shuffle: the order laid out for the saved world size)
and for a later epoch of persistent workers. The folder is on a real S3 server (SeaweedFS,
the session fixture ``s3_server``), read through the shard cache as users read it."""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict

import pytest
from shardfactory import make_shard_dir

from stexture import make_loader
from stexture.loader.remote import CachedTrainSet, RemoteShards

OPTIONS = {"k": 0.7, "batch_size": 2, "image_size": 16, "with_info": True, "seed": 4}


@pytest.fixture(scope="module")
def url(s3_server, tmp_path_factory):
    """24 training samples in 6 shards of 4, uploaded to the S3 server: their URL."""
    root = make_shard_dir(tmp_path_factory.mktemp("plan") / "shards", per_class=8, size=24)
    prefix = f"plan-{uuid.uuid4().hex[:8]}"
    s3_server.filesystem().put(f"{root}/", f"{s3_server.bucket}/{prefix}", recursive=True)
    return s3_server.url(prefix)


@pytest.fixture
def log(tmp_path, monkeypatch):
    """Record each process's plans and the samples it serves (one line each, per process id:
    forked workers inherit the patches); returns a function reading them back as
    ``{(pid, epoch): (planned shards, served samples' shards)}``."""
    folder = tmp_path / "log"
    folder.mkdir()
    plan, getitem = RemoteShards.plan, CachedTrainSet.__getitem__

    def write(entry: dict) -> None:
        with open(folder / f"{os.getpid()}.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")

    def logged_plan(self, urls, key):
        urls = list(urls)
        write({"plan": key, "shards": list(dict.fromkeys(urls))})
        return plan(self, urls, key)

    def logged_getitem(self, ticket):
        write({"served": ticket.epoch, "shard": self.samples[ticket.index].path})
        return getitem(self, ticket)

    monkeypatch.setattr(RemoteShards, "plan", logged_plan)
    monkeypatch.setattr(CachedTrainSet, "__getitem__", logged_getitem)

    def read() -> dict[tuple[str, int], tuple[list[str], list[str]]]:
        plans, served = {}, defaultdict(list)
        for file in folder.iterdir():
            for line in file.read_text().splitlines():
                entry = json.loads(line)
                if "plan" in entry:
                    plans[file.stem, entry["plan"]] = entry["shards"]
                else:
                    served[file.stem, entry["served"]].append(entry["shard"])
        for file in folder.iterdir():
            file.unlink()
        return {key: (plans.get(key), list(dict.fromkeys(shards)))
                for key, shards in served.items()}

    return read


def assert_planned_as_served(found: dict, processes: int) -> None:
    assert len(found) == processes
    for key, (planned, served) in found.items():
        assert planned == served, key


@pytest.mark.parametrize("workers", [0, 2])
def test_each_process_plans_the_shards_it_serves(s3_server, url, log, workers, tmp_path):
    loader = make_loader(url, **OPTIONS, rank=1, world_size=2, num_workers=workers,
                         cache_dir=tmp_path / "cache",
                         storage_options=s3_server.storage_options)
    served = [k for _, _, info in loader for k in info["key"]]
    assert len(served) == 12
    assert_planned_as_served(log(), max(workers, 1))


def test_a_resume_at_another_world_size_plans_the_saved_layout(s3_server, url, log, tmp_path):
    options = {**OPTIONS, "shuffle": "blocks", "shuffle_window": 2,
               "cache_dir": tmp_path / "cache", "storage_options": s3_server.storage_options}
    head = []  # two batches on each of 2 ranks (their states are the same)
    for rank in (0, 1):
        loader = make_loader(url, **options, rank=rank, world_size=2)
        batches = iter(loader)
        head += [k for _ in range(2) for k in next(batches)[2]["key"]]
        state = loader.state_dict()
    assert state["order_world_size"] == 2 and state["position"] == 8
    log()
    # the rest of the epoch on 3 ranks, 2 workers each: the order stays laid out for 2
    served = []
    for rank in range(3):
        fresh = make_loader(url, **options, rank=rank, world_size=3, num_workers=2)
        fresh.load_state_dict(state)
        served += [k for _, _, info in fresh for k in info["key"]]
        assert_planned_as_served(log(), 2)
    # the 16 samples left on 2 ranks of the 2 before (8 seen), padded to 6 a rank
    assert len(served) == 18 and len(set(served + head)) == 24


def test_persistent_workers_plan_each_later_epoch_afresh(s3_server, url, log, tmp_path):
    loader = make_loader(url, **OPTIONS, shuffle="blocks", rank=0, world_size=1,
                         num_workers=2, persistent_workers=True, cache_dir=tmp_path / "c",
                         storage_options=s3_server.storage_options)
    for epoch in range(2):
        loader.set_epoch(epoch)
        assert len([k for _, _, info in loader for k in info["key"]]) == 24
        found = log()
        assert {e for _, e in found} == {epoch}
        assert_planned_as_served(found, 2)
