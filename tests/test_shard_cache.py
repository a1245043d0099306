"""The shard cache against a real S3 server (SeaweedFS, the session fixture ``s3_server``):
downloads checked against the manifest's SHA-256, hits without a request, corrupt and
half-downloaded copies never used, one download per shard across processes, eviction
within the limit that spares pinned and soon-needed shards, retries and clear errors."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import pickle
import socket
import threading
import time
import uuid

import numpy as np
import pytest

from stexture.shards.cache import (
    CacheFolderError,
    ShardCache,
    ShardChecksumError,
    ShardFetchError,
    ShardRef,
    StorageUnreachableError,
)
from stexture.shards.cache import fetch as cache_module  # its _CHUNK_BYTES is patched

pytest.importorskip("s3fs")

KB = 1024


def upload(server, count: int, size: int, seed: int = 0) -> tuple[str, list[ShardRef],
                                                                  dict[str, bytes]]:
    """``count`` random shards of ``size`` bytes under a fresh prefix of the bucket."""
    prefix = f"shards-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(seed)
    fs = server.filesystem()
    refs, blobs = [], {}
    for i in range(count):
        name = f"train-{i:06d}.tar"
        blob = rng.bytes(size)
        fs.pipe_file(f"{server.bucket}/{prefix}/{name}", blob)
        refs.append(ShardRef(name, hashlib.sha256(blob).hexdigest(), size))
        blobs[name] = blob
    return server.url(prefix), refs, blobs


def make_cache(server, root, tmp_path, endpoint=None, **kwargs) -> ShardCache:
    options = dict(server.storage_options)
    if endpoint is not None:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    kwargs.setdefault("backoff", 0.05)
    return ShardCache(root, cache_dir=tmp_path / "cache", storage_options=options, **kwargs)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CuttableProxy:
    """A TCP proxy in front of the S3 server: ``close()`` is the server going away (open
    connections reset, new ones refused); ``drop_after`` cuts the first response that
    passes that many bytes (a connection lost mid-download)."""

    def __init__(self, port: int, drop_after: int | None = None) -> None:
        self.target = port
        self.drop_after = drop_after
        self.drops = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        passed = 0
        try:
            while data := source.recv(65536):
                passed += len(data)
                if (from_server and self.drop_after is not None and not self.drops
                        and passed > self.drop_after):
                    self.drops += 1
                    sink.sendall(data[:len(data) // 2])
                    raise OSError("dropped")
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self.closed = True
        try:  # wakes the accepting thread (a plain close leaves the port listening)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_a_download_matches_the_manifest_and_a_second_call_makes_no_request(
        s3_server, tmp_path):
    root, refs, blobs = upload(s3_server, 2, 300 * KB)
    cache = make_cache(s3_server, root, tmp_path)
    first = cache.local_path(refs[0].name, refs[0].sha256, refs[0].size)
    assert first.read_bytes() == blobs[refs[0].name]
    # without a size, the storage is asked for it
    assert cache.local_path(refs[1].name, refs[1].sha256).read_bytes() == blobs[refs[1].name]
    assert cache.downloads == 2 and cache.used_bytes() == 600 * KB
    stamp = os.stat(first)
    # a hit needs no request: it works with the endpoint pointing nowhere
    offline = make_cache(s3_server, root, tmp_path, endpoint=f"http://127.0.0.1:{unused_port()}")
    again = offline.local_path(refs[0].name, refs[0].sha256, refs[0].size)
    assert again == first and offline.downloads == 0
    assert (os.stat(again).st_ino, os.stat(again).st_mtime_ns) == (stamp.st_ino,
                                                                   stamp.st_mtime_ns)
    assert sorted(cache.cached()) == [refs[0].name, refs[1].name]
    # a pickled copy (a DataLoader worker's) finds the same copies
    assert pickle.loads(pickle.dumps(offline)).local_path(refs[1].name, refs[1].sha256) \
        .read_bytes() == blobs[refs[1].name]


def test_a_corrupt_cached_copy_is_never_used_and_fetched_again(s3_server, tmp_path):
    root, refs, blobs = upload(s3_server, 1, 200 * KB, seed=1)
    ref = refs[0]
    cache = make_cache(s3_server, root, tmp_path)
    path = cache.local_path(ref.name, ref.sha256, ref.size)
    before = os.stat(path)
    with open(path, "r+b") as f:  # one flipped byte, the modification time put back
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.warns(UserWarning, match="does not match the manifest's sha256"):
        path = cache.local_path(ref.name, ref.sha256, ref.size)
    assert path.read_bytes() == blobs[ref.name] and cache.downloads == 2
    # a copy cut short is refetched too
    os.truncate(path, 1000)
    with pytest.warns(UserWarning, match="does not match"):
        assert cache.local_path(ref.name, ref.sha256).read_bytes() == blobs[ref.name]


def _download_and_hang(cache: ShardCache, ref: ShardRef, started) -> None:
    """In a forked child: download in 64 KiB chunks, say so after the first, then crawl."""
    cache_module._CHUNK_BYTES = 64 * KB
    fs, _ = cache._filesystem()
    cat = fs.cat_file

    def slow_cat(*args, **kwargs):
        data = cat(*args, **kwargs)
        if started.is_set():
            time.sleep(10)
        started.set()
        return data

    fs.cat_file = slow_cat
    cache.local_path(ref.name, ref.sha256, ref.size)


def test_a_download_killed_half_way_is_never_used(s3_server, tmp_path):
    root, refs, blobs = upload(s3_server, 1, 512 * KB, seed=2)
    ref = refs[0]
    cache = make_cache(s3_server, root, tmp_path)
    context = multiprocessing.get_context("fork")
    started = context.Event()
    child = context.Process(target=_download_and_hang, args=(cache, ref, started))
    child.start()
    assert started.wait(30)
    time.sleep(0.2)  # the first chunk is written
    child.kill()
    child.join()
    partial = cache.path(ref.name).with_name(ref.name + ".partial")
    assert partial.is_file() and not cache.path(ref.name).exists()
    assert cache.cached() == {}
    path = cache.local_path(ref.name, ref.sha256, ref.size)
    assert path.read_bytes() == blobs[ref.name] and not partial.exists()
    assert cache.used_bytes() == ref.size


def _fetch_all(cache: ShardCache, refs: list[ShardRef], go, results) -> None:
    go.wait(30)
    try:
        digests = [hashlib.sha256(cache.local_path(r.name, r.sha256, r.size).read_bytes())
                   .hexdigest() for r in refs]
    except Exception as exc:  # noqa: BLE001 - shown by the parent's assertion
        results.put((0, repr(exc)))
        return
    results.put((cache.downloads, digests))


def test_two_processes_asking_for_the_same_shards_download_each_once(s3_server, tmp_path):
    root, all_refs, _ = upload(s3_server, 8, 256 * KB, seed=3)
    refs, before, after = all_refs[:6], all_refs[6], all_refs[7]
    cache = make_cache(s3_server, root, tmp_path)
    # the parent has pooled connections when it forks (as a loader's main process does)
    cache.local_path(before.name, before.sha256, before.size)
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    children = [context.Process(target=_fetch_all, args=(cache, refs, go, results))
                for _ in range(2)]
    for child in children:
        child.start()
    go.set()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join()
    assert [digests for _, digests in outcomes] == [[r.sha256 for r in refs]] * 2
    assert sum(downloads for downloads, _ in outcomes) == len(refs)
    # the children left the parent's connections working (fsspec's fork handling alone
    # let a child unregister them from the shared epoll: the next request hung 15 s)
    started = time.monotonic()
    assert cache.local_path(after.name, after.sha256, after.size).is_file()
    assert time.monotonic() - started < 5


def test_eviction_keeps_the_limit_and_never_evicts_a_pinned_shard(s3_server, tmp_path):
    root, refs, blobs = upload(s3_server, 7, 100 * KB, seed=4)
    cache = make_cache(s3_server, root, tmp_path, cache_limit=350 * KB)
    with cache.pinned(refs[0].name, refs[0].sha256, refs[0].size) as pinned:
        for ref in refs[1:]:
            path = cache.local_path(ref.name, ref.sha256, ref.size)
            assert path.read_bytes() == blobs[ref.name]
            assert cache.used_bytes() <= 350 * KB
            assert refs[0].name in cache.cached()
        assert pinned.read_bytes() == blobs[refs[0].name]
        # least recently used goes first: the two newest stay beside the pinned one
        assert sorted(cache.cached()) == sorted(r.name for r in (refs[0], *refs[-2:]))
        # nothing more can be evicted when everything left is pinned
        with cache.pinned(refs[5].name, refs[5].sha256), \
                cache.pinned(refs[6].name, refs[6].sha256), \
                pytest.raises(CacheFolderError, match=r"cache_limit=358400 bytes is too small"):
            cache.local_path(refs[1].name, refs[1].sha256, refs[1].size)
    assert cache.used_bytes() <= 350 * KB
    with pytest.raises(CacheFolderError, match="more than the whole cache_limit"):
        make_cache(s3_server, root, tmp_path, cache_limit=50 * KB).local_path(
            refs[1].name, refs[1].sha256, refs[1].size)


def test_eviction_spares_the_shard_the_epoch_needs_next(s3_server, tmp_path):
    root, refs, _ = upload(s3_server, 3, 100 * KB, seed=5)
    x, y, z = refs
    cache = make_cache(s3_server, root, tmp_path, cache_limit=250 * KB)
    cache.local_path(x.name, x.sha256, x.size)
    time.sleep(0.05)
    cache.local_path(y.name, y.sha256, y.size)  # y is the most recently used ...
    cache.prefetch([z, x], ahead=0)  # ... but x is needed next, y not at all
    cache.local_path(z.name, z.sha256, z.size)
    assert sorted(cache.cached()) == sorted([x.name, z.name])


def test_prefetch_downloads_ahead_within_the_limit(s3_server, tmp_path):
    root, refs, blobs = upload(s3_server, 8, 100 * KB, seed=6)
    with make_cache(s3_server, root, tmp_path, cache_limit=350 * KB) as cache:
        cache.prefetch(refs, ahead=8)
        deadline = time.monotonic() + 20
        while len(cache.cached()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        # the first three fill the limit; nothing later evicts them
        assert sorted(cache.cached()) == [r.name for r in refs[:3]]
        assert cache.downloads == 3
        for ref in refs:
            assert cache.local_path(ref.name, ref.sha256, ref.size).read_bytes() == \
                blobs[ref.name]
            assert cache.used_bytes() <= 350 * KB
        assert cache.downloads == len(refs)  # each once, by the prefetcher or the request


def test_threads_reading_beside_the_prefetcher_get_the_right_bytes_within_the_limit(
        s3_server, tmp_path):
    root, refs, _ = upload(s3_server, 10, 100 * KB, seed=12)
    limit = 400 * KB
    errors, over = [], []
    with make_cache(s3_server, root, tmp_path, cache_limit=limit) as cache:
        cache.prefetch(refs, ahead=4)

        def read_all() -> None:
            try:
                for ref in refs:
                    with cache.pinned(ref.name, ref.sha256, ref.size) as path:
                        if hashlib.sha256(path.read_bytes()).hexdigest() != ref.sha256:
                            errors.append(ref.name)
                        if cache.used_bytes() > limit:
                            over.append(cache.used_bytes())
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=read_all) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == [] and over == []
        # every shard fetched, and shared: fewer downloads than the 30 reads (a shard is
        # fetched again only when evicted before a lagging thread's turn)
        assert len(refs) <= cache.downloads < 3 * len(refs)


def test_a_dropped_connection_is_retried_and_the_download_resumes(
        s3_server, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "_CHUNK_BYTES", 64 * KB)
    root, refs, blobs = upload(s3_server, 1, 512 * KB, seed=7)
    ref = refs[0]
    proxy = CuttableProxy(s3_server.s3_port, drop_after=200 * KB)
    try:
        cache = make_cache(s3_server, root, tmp_path, endpoint=proxy.endpoint)
        assert cache.local_path(ref.name, ref.sha256, ref.size).read_bytes() == \
            blobs[ref.name]
        assert proxy.drops == 1
    finally:
        proxy.close()


def test_a_server_that_goes_away_gives_an_error_naming_the_shard(s3_server, tmp_path):
    root, refs, _ = upload(s3_server, 2, 100 * KB, seed=8)
    proxy = CuttableProxy(s3_server.s3_port)
    cache = make_cache(s3_server, root, tmp_path, endpoint=proxy.endpoint, retries=3)
    cache.local_path(refs[0].name, refs[0].sha256, refs[0].size)
    proxy.close()
    started = time.monotonic()
    with pytest.raises(ShardFetchError) as caught:
        cache.local_path(refs[1].name, refs[1].sha256, refs[1].size)
    message = str(caught.value)
    assert f"shard {refs[1].name} from {root}/{refs[1].name} after 4 tries" in message
    assert "\n" not in message and "s3:/" + s3_server.bucket not in message
    assert time.monotonic() - started >= 0.05 + 0.1 + 0.2  # the backoff was waited
    assert sorted(os.listdir(cache.folder / "shards")) == [refs[0].name]


def test_an_unreachable_endpoint_fails_fast_in_one_line(s3_server, tmp_path):
    root, refs, _ = upload(s3_server, 1, 10 * KB, seed=9)
    endpoint = f"http://127.0.0.1:{unused_port()}"
    cache = make_cache(s3_server, root, tmp_path, endpoint=endpoint)
    started = time.monotonic()
    with pytest.raises(StorageUnreachableError) as caught:
        cache.local_path(refs[0].name, refs[0].sha256)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot reach the storage of {root} (endpoint {endpoint})")


def test_a_missing_object_and_a_wrong_checksum_fail_at_once(s3_server, tmp_path):
    root, refs, blobs = upload(s3_server, 1, 50 * KB, seed=10)
    cache = make_cache(s3_server, root, tmp_path)
    started = time.monotonic()
    with pytest.raises(FileNotFoundError, match=f"shard train-000009.tar is not at "
                                                f"{root}/train-000009.tar"):
        cache.local_path("train-000009.tar", refs[0].sha256, 10)
    assert time.monotonic() - started < 2  # not retried
    wrong = hashlib.sha256(b"another shard").hexdigest()
    with pytest.raises(ShardChecksumError, match=f"{root}/{refs[0].name} has sha256 "
                                                 f"{refs[0].sha256}, the manifest says {wrong}"):
        cache.local_path(refs[0].name, wrong, refs[0].size)
    assert os.listdir(cache.folder / "shards") == []


def test_a_full_or_unwritable_cache_folder_is_named(s3_server, tmp_path, monkeypatch):
    root, refs, _ = upload(s3_server, 1, 50 * KB, seed=11)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CacheFolderError,
                       match=r"cannot be created: Not a directory \(a file is in the way\)"):
        ShardCache(root, cache_dir=tmp_path / "a-file" / "cache")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    with monkeypatch.context() as patch:
        patch.setattr(os, "mkdir", read_only)
        with pytest.raises(CacheFolderError, match="cannot be written .*Read-only file system"
                                                   ".* pass cache_dir="):
            ShardCache(root, cache_dir=tmp_path / "read-only")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    cache = make_cache(s3_server, root, tmp_path)
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(CacheFolderError, match=r"is full \(reserving 51200 bytes"):
        cache.local_path(refs[0].name, refs[0].sha256, refs[0].size)
    assert os.listdir(cache.folder / "shards") == []


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="is not a URL"):
        ShardCache(str(tmp_path), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cache_limit must be"):
        ShardCache("s3://bucket/shards", cache_dir=tmp_path, cache_limit=0)
    cache = ShardCache("s3://bucket/shards/", cache_dir=tmp_path)
    assert cache.url("a.tar") == "s3://bucket/shards/a.tar"
    with pytest.raises(ValueError, match="plain file name"):
        cache.local_path("../a.tar", "0" * 64)
    with pytest.raises(ValueError, match="64 hex digits"):
        cache.local_path("a.tar", "abc")
