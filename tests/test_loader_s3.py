"""The loaders reading a shard folder from a real S3 server (SeaweedFS, the session fixture
``s3_server``) through the shard cache: the same pixels, labels and keys as the same shards
read locally, for any number of workers and ranks, exact epochs, resume, a cache smaller than
the split, and clear errors when the storage fails."""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from types import SimpleNamespace

import pytest
import torch
from shardfactory import make_shard_dir
from test_shard_cache import CuttableProxy

from stexture import make_eval_loader, make_loader
from stexture.loader.remote import process_order
from stexture.loader.sampler import EpochSampler
from stexture.shards import ShardFolder, read_manifest
from stexture.shards.cache import ShardFetchError, StorageUnreachableError
from stexture.shards.format import MANIFEST_NAME
from stexture.shards.format.offsets import encode_offsets, offsets_name, scan_tar_bytes

pytest.importorskip("s3fs")

LOADER = {"k": 0.7, "batch_size": 5, "image_size": 16, "with_info": True, "seed": 3}


def add_offsets(root) -> None:
    """Write each split's offsets file and name it in the manifest, as ``stexture
    decompose`` does (the folder then starts without reading a shard)."""
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    record = {}
    for split, entry in manifest["splits"].items():
        shards = [scan_tar_bytes(s["name"], (root / s["name"]).read_bytes())
                  for s in entry["shards"]]
        data = encode_offsets(split, shards)
        (root / offsets_name(split)).write_bytes(data)
        record[split] = {"name": offsets_name(split), "sha256": hashlib.sha256(data).hexdigest()}
    manifest["sample_offsets"] = record
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


def upload(server, local) -> str:
    """The folder ``local`` copied under a fresh prefix of the bucket: its URL."""
    prefix = f"loader-{uuid.uuid4().hex[:8]}"
    server.filesystem().put(f"{local}/", f"{server.bucket}/{prefix}", recursive=True)
    return server.url(prefix)


@pytest.fixture(scope="module")
def folders(s3_server, tmp_path_factory):
    """(local folder, its URL): 24 training samples in 6 shards, 6 validation samples in 2,
    with offsets files; and the same folder without them (the headers are read)."""
    local = make_shard_dir(tmp_path_factory.mktemp("s3-loader") / "shards", per_class=8,
                           val_per_class=2, size=24, seed=5)
    plain_url = upload(s3_server, local)
    add_offsets(local)
    return {"offsets": (local, upload(s3_server, local)), "headers": (local, plain_url)}


def batches(loader) -> list[tuple]:
    return [(x, y, info["key"], info["structure_cls"], info["texture_cls"])
            for x, y, info in loader]


def assert_same(expected: list[tuple], got: list[tuple]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # pixels and targets
        assert a[2] == b[2]  # keys
        assert torch.equal(a[3], b[3]) and torch.equal(a[4], b[4])  # the two classes


def remote_loader(server, url, tmp_path, **options):
    return make_loader(url, storage_options=server.storage_options,
                       cache_dir=tmp_path / "cache", **{**LOADER, **options})


def test_a_url_folder_reads_its_manifest_and_names_the_url_in_errors(s3_server, folders,
                                                                      tmp_path):
    local, url = folders["offsets"]
    remote = read_manifest(url + "/", storage_options=s3_server.storage_options)
    assert remote.root == url and remote.splits == read_manifest(local).splits
    assert "secret" not in repr(remote)  # the credentials are never printed
    folder = ShardFolder.open(url, storage_options=s3_server.storage_options)
    assert folder.index == ShardFolder.open(local).index
    with pytest.raises(FileNotFoundError, match=f"no manifest.json at {url}-missing/"):
        read_manifest(url + "-missing", storage_options=s3_server.storage_options)
    with pytest.raises(FileNotFoundError, match="bucket 'no-such-bucket' does not exist"):
        read_manifest("s3://no-such-bucket/shards", storage_options=s3_server.storage_options)
    closed = CuttableProxy(s3_server.s3_port)
    closed.close()
    started = time.monotonic()
    with pytest.raises(StorageUnreachableError) as error:
        make_loader(url, k=1.0, storage_options={**s3_server.storage_options, "client_kwargs":
                                                 {"endpoint_url": closed.endpoint}},
                    cache_dir=tmp_path / "cache")
    assert time.monotonic() - started < 5
    assert "\n" not in str(error.value) and url in str(error.value)
    assert closed.endpoint in str(error.value)


@pytest.mark.parametrize(("layout", "num_workers"), [("headers", 0), ("offsets", 0),
                                                     ("offsets", 2)])
def test_the_loader_from_s3_gives_the_pixels_and_labels_of_the_local_folder(
        s3_server, folders, tmp_path, layout, num_workers):
    local, url = folders[layout]
    expected = batches(make_loader(local, **LOADER))
    loader = remote_loader(s3_server, url, tmp_path, num_workers=num_workers)
    assert_same(expected, batches(loader))
    # each shard of the split was fetched, verified, and is read from the cache now
    manifest = read_manifest(local)
    assert sorted(loader.dataset.remote.cache.cached()) == [s.name for s in
                                                            manifest.shards("train")]
    # the next epoch (another order, other crops) too, from the cached shards
    local_loader = make_loader(local, **LOADER)
    local_loader.set_epoch(1)
    loader.set_epoch(1)
    assert_same(batches(local_loader), batches(loader))


@pytest.mark.parametrize("shuffle", [{"shuffle": "global"},
                                     {"shuffle": "blocks", "shuffle_window": 2}])
def test_two_ranks_of_two_workers_read_every_sample_once_from_s3(s3_server, folders, tmp_path,
                                                                  shuffle):
    local, url = folders["offsets"]
    keys = []
    for rank in range(2):
        loader = remote_loader(s3_server, url, tmp_path, num_workers=2, rank=rank,
                               world_size=2, **shuffle)
        local_rank = make_loader(local, **LOADER, rank=rank, world_size=2, **shuffle)
        got = batches(loader)
        assert_same(batches(local_rank), got)
        keys += [key for batch in got for key in batch[2]]
    split = split_keys(local, "train")
    assert len(keys) == len(split) and set(keys) == set(split)


def split_keys(local, split: str) -> list[str]:
    """The keys of ``split`` from ``index.csv``: what an epoch must hold once each."""
    return [row["key"] for row in ShardFolder.open(local).index if row["split"] == split]


def test_a_resumed_epoch_from_s3_gives_the_samples_an_uninterrupted_one_gives(
        s3_server, folders, tmp_path):
    _, url = folders["offsets"]
    whole = batches(remote_loader(s3_server, url, tmp_path, num_workers=2))
    interrupted = remote_loader(s3_server, url, tmp_path, num_workers=2)
    iterator = iter(interrupted)
    assert_same(whole[:2], [_batch(next(iterator)) for _ in range(2)])
    state = interrupted.state_dict()
    del iterator
    resumed = remote_loader(s3_server, url, tmp_path / "elsewhere", num_workers=2)
    resumed.load_state_dict(state)
    assert_same(whole[2:], batches(resumed))


def _batch(batch: tuple) -> tuple:
    x, y, info = batch
    return x, y, info["key"], info["structure_cls"], info["texture_cls"]


@pytest.mark.parametrize("shuffle", [{"shuffle": "global"},
                                     {"shuffle": "blocks", "shuffle_window": 2}])
def test_a_cache_smaller_than_the_split_evicts_and_keeps_the_epoch_exact(
        s3_server, folders, tmp_path, shuffle):
    local, url = folders["offsets"]
    sizes = [(local / s.name).stat().st_size for s in read_manifest(local).shards("train")]
    limit = 2 * max(sizes)  # a third of the split: each worker reads one shard at a time
    expected = batches(make_loader(local, **LOADER, **shuffle))
    loader = remote_loader(s3_server, url, tmp_path, num_workers=2, cache_limit=limit,
                           **shuffle)
    got = batches(loader)
    assert_same(expected, got)
    keys = [key for batch in got for key in batch[2]]
    assert sorted(keys) == sorted(split_keys(local, "train"))
    cache = loader.dataset.remote.cache
    assert cache.used_bytes() <= limit
    assert len(cache.cached()) < len(sizes)  # some were evicted


def test_a_server_gone_mid_epoch_gives_an_error_naming_the_shard(s3_server, folders, tmp_path):
    local, url = folders["offsets"]
    proxy = CuttableProxy(s3_server.s3_port)
    options = {**s3_server.storage_options, "client_kwargs": {"endpoint_url": proxy.endpoint}}
    sizes = [(local / s.name).stat().st_size for s in read_manifest(local).shards("train")]
    loader = make_loader(url, **LOADER, storage_options=options, cache_dir=tmp_path / "cache",
                         cache_limit=2 * max(sizes), shuffle=False)
    cache = loader.dataset.remote.cache
    cache.retries, cache.backoff = 2, 0.05  # fast in a test
    iterator = iter(loader)
    next(iterator)  # shards come from the server
    proxy.close()  # ... and then it goes away
    started = time.monotonic()
    with pytest.raises(ShardFetchError, match=r"could not fetch shard train-00000\d\.tar from "
                       f"{url}/train-00000\\d\\.tar after 3 tries"):
        for _ in iterator:
            pass
    assert time.monotonic() - started < 20
    # nothing half-written is left in the cache for a later run to use
    assert not list(cache.folder.glob("shards/*.partial"))


@pytest.mark.parametrize("kind", ["clean", "conflict"])
def test_the_eval_loader_from_s3_gives_the_local_batches(s3_server, folders, tmp_path, kind):
    local, url = folders["offsets"]
    options = {"kind": kind, "batch_size": 4, "image_size": 16}
    expected = batches(make_eval_loader(local, **options))
    got = batches(make_eval_loader(url, **options, num_workers=2, cache_dir=tmp_path / "c",
                                   storage_options=s3_server.storage_options))
    assert_same(expected, got)


def test_each_process_prefetches_the_shards_of_its_own_batches_in_order(monkeypatch):
    sampler = EpochSampler(40, batch_size=4, seed=1, rank=1, world_size=2)
    indices = [t.index for t in copy.deepcopy(sampler)]  # rank 1's tickets
    assert process_order(sampler, 0).tolist() == indices
    sampler.resume_at(0, 12)  # a resumed epoch: the order from its slot on
    rank_tickets = list(copy.deepcopy(sampler))
    assert rank_tickets[0].slot == 13
    assert process_order(sampler, 0).tolist() == [t.index for t in rank_tickets]
    # worker 1 of 2 gets batches 1, 3, ... of the rank's
    monkeypatch.setattr(torch.utils.data, "get_worker_info",
                        lambda: SimpleNamespace(id=1, num_workers=2))
    batches_of_rank = [rank_tickets[i:i + 4] for i in range(0, len(rank_tickets), 4)]
    assert process_order(sampler, 0).tolist() == [
        t.index for batch in batches_of_rank[1::2] for t in batch]


def test_the_cache_keeps_a_shard_read_again_until_its_last_read(s3_server, tmp_path):
    from test_shard_cache import make_cache
    from test_shard_cache import upload as upload_blobs

    root, (x, y, z), _ = upload_blobs(s3_server, 3, 100 * 1024, seed=7)
    cache = make_cache(s3_server, root, tmp_path, cache_limit=250 * 1024)
    # x is read, then y, then x again (interleaved, as in a block), then z
    cache.prefetch([x, y, z], ahead=0, until={x.name: 2})
    cache.local_path(x.name, x.sha256, x.size)
    time.sleep(0.05)
    cache.local_path(y.name, y.sha256, y.size)  # y is the most recently used, but done
    cache.local_path(z.name, z.sha256, z.size)  # room for z: y goes, not x
    assert sorted(cache.cached()) == sorted([x.name, z.name])
