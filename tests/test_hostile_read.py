"""Hostile input on the reading side, round two (issue 29, README section Reliability).

A reader trusts only what it can check: its limits are its own, not the manifest's; a
manifest of a format version or method it does not know is refused by name; every reader
(both loaders, ``inspect``, ``sweep``, wids through the index) groups a shard's members the
same way and refuses what WebDataset would read silently wrong; loader arguments are checked
before any work; and what went wrong is a message, not a traceback.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import zstandard
from pipeline_data import fast_settings, make_image_folder
from pipeline_data import write_quietly as run
from shardfactory import make_shard_dir

from stexture.cli import main
from stexture.loader import make_eval_loader, make_loader
from stexture.shards import storage
from stexture.shards.format import (
    MANIFEST_NAME,
    STRUCTURE_FIELD,
    iter_tar_samples,
    read_manifest,
)
from stexture.shards.sources import list_sources
from stexture.shards.validate import validate_dataset


def rewrite_shard(root: Path, shard: str, members: list[tuple[str, bytes]]) -> None:
    """Write ``members`` (name, payload) as ``root/shard`` in this order and record the new
    SHA-256 in the manifest: a shard whose checksum is right and whose content is hostile."""
    with tarfile.open(root / shard, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    edit_manifest(root, lambda m: [s.update(sha256=hashlib.sha256(
        (root / shard).read_bytes()).hexdigest()) for entry in m["splits"].values()
        for s in entry["shards"] if s["name"] == shard])


def edit_manifest(root: Path, change) -> None:
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    change(manifest)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


def members_of(path: Path) -> list[tuple[str, bytes]]:
    return [(f"{sample['__key__']}.{field}", payload) for sample in iter_tar_samples(path)
            for field, payload in sample.items() if field != "__key__"]


def inspect(root: Path, *extra: str) -> int:
    return main(["inspect", str(root), "--recompute", "0", "--per-class", "0", *extra])


@pytest.fixture
def shards(tmp_path):
    return make_shard_dir(tmp_path / "s", per_class=2, val_per_class=2, size=16)


# ------------------------------------------------------------------ 4. trust in the manifest


def dzst_stream(height: int, width: int) -> bytes:
    """A real 2-D ``structure.dzst`` layer of ``height x width`` zeros, compressed in 1 MB
    pieces (never held whole), about 100 KB for 10^8 pixels."""
    compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj(
        size=height * width)
    chunk, left, frame = bytes(1 << 20), height * width, []
    while left:
        frame.append(compressor.compress(chunk[:min(left, len(chunk))]))
        left -= min(left, len(chunk))
    frame.append(compressor.flush())
    return b"SXD1" + height.to_bytes(4, "little") + width.to_bytes(4, "little") + b"\0" + \
        b"".join(frame)


def test_a_max_pixels_raised_in_the_manifest_does_not_raise_inspects_limit(shards, capsys):
    # a layer just over the reader's 10^8 pixels: 100 MB to decode, 200 MB with its delta
    members = members_of(shards / "train-000000.tar")
    key = members[0][0].split(".")[0]
    members = [(name, dzst_stream(10_001, 10_000) if name == f"{key}.{STRUCTURE_FIELD}"
                else payload) for name, payload in members]
    rewrite_shard(shards, "train-000000.tar", members)
    edit_manifest(shards, lambda m: m.update(settings={"max_pixels": 10**15}))
    tracemalloc.start()
    try:
        result = validate_dataset(shards, recompute=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak  # refused from its header: nothing of its size decoded
    assert any(key in p and "outside 1..100000000" in p for p in result.problems)
    assert inspect(shards) == 1
    assert "decompression bomb" in capsys.readouterr().err
    # the reader's own limit, raised on the command line, lets the layer through to decoding
    assert not any("bomb" in p for p in validate_dataset(
        shards, recompute=0, max_pixels=2 * 10**8).problems)


@pytest.mark.parametrize(("field", "value"), [("format_version", 99), ("method", "nope")])
def test_an_unknown_format_version_or_method_is_refused_by_every_reader(
        shards, tmp_path, capsys, field, value):
    edit_manifest(shards, lambda m: m.update({field: value}))
    message = f"{field} {value!r} is unknown to this stexture"
    for read in (read_manifest, lambda r: make_loader(r, k=1.0),
                 lambda r: make_eval_loader(r)):
        with pytest.raises(ValueError, match=message):
            read(shards)
    assert inspect(shards) == 1
    assert message in capsys.readouterr().err
    runs = tmp_path / "runs"
    assert main(["sweep", str(shards), "--out", str(runs), "--epochs", "1", "--seeds", "1",
                 "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not runs.exists()


def test_a_gzip_shard_the_loaders_refuse_is_a_problem_for_inspect(shards, capsys):
    import gzip

    shard = shards / "val-000000.tar"
    shard.write_bytes(gzip.compress(shard.read_bytes()))
    edit_manifest(shards, lambda m: m["splits"]["val"]["shards"][0].update(
        sha256=hashlib.sha256(shard.read_bytes()).hexdigest()))
    with pytest.raises(ValueError, match="compressed; random access"):
        make_eval_loader(shards)
    assert inspect(shards) == 1
    err = capsys.readouterr().err
    assert "val-000000.tar: compressed; random access needs an uncompressed tar" in err


# ------------------------------------------------------------------ 5. labels


@pytest.mark.parametrize("hostile", ["trailing", "repeated"])
def test_a_member_out_of_its_sample_is_refused_by_every_reader(shards, capsys, hostile):
    path = shards / "train-000000.tar"
    members = members_of(path)
    first_key = members[0][0].split(".")[0]
    other = b"1" if dict(members)[f"{first_key}.cls"] == b"0" else b"0"
    if hostile == "trailing":  # after sample 1: WebDataset would relabel sample 0
        members.append((f"{first_key}.cls", other))
        message = f"sample '{first_key}' has member '{first_key}.cls' after another sample's"
    else:  # the same field twice in a row: the last one would win
        at = next(i for i, (name, _) in enumerate(members) if name.endswith(".cls"))
        members.insert(at + 1, (f"{first_key}.cls", other))
        message = f"sample '{first_key}' holds the member '{first_key}.cls' twice"
    rewrite_shard(shards, "train-000000.tar", members)
    for read in (lambda r: make_loader(r, k=1.0), lambda r: make_eval_loader(r, split="train"),
                 lambda r: list(iter_tar_samples(path))):
        with pytest.raises(ValueError, match=message) as info:
            read(shards)
        assert str(path) in str(info.value)
    assert inspect(shards) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("hostile", ["trailing", "repeated"])
def test_a_member_out_of_its_sample_is_refused_by_the_tar_source(shards, hostile):
    """Shards as the source of a new run are grouped as the loaders group them: a trailing
    ``KEY.cls`` does not relabel sample KEY, the tar is left out with the reason."""
    path = shards / "train-000000.tar"
    members = members_of(path)
    first_key = members[0][0].split(".")[0]
    other = b"1" if dict(members)[f"{first_key}.cls"] == b"0" else b"0"
    if hostile == "trailing":
        members.append((f"{first_key}.cls", other))
        message = f"sample '{first_key}' has member '{first_key}.cls' after another sample's"
    else:
        at = next(i for i, (name, _) in enumerate(members) if name.endswith(".cls"))
        members.insert(at + 1, (f"{first_key}.cls", other))
        message = f"sample '{first_key}' holds the member '{first_key}.cls' twice"
    rewrite_shard(shards, "train-000000.tar", members)
    listing = list_sources(shards)
    assert [(source, reason) for source, reason, _ in listing.problems] == [
        ("train-000000.tar", "unreadable")]
    assert message in listing.problems[0][2]
    assert not any(item.path == str(path) for item in listing.items)
    # the other shards are listed whole: every sample of theirs, nothing of the bad one
    others = sorted(p for p in shards.glob("*.tar") if p != path)
    assert len(others) == 3
    assert len(listing.items) == sum(len(list(iter_tar_samples(p))) for p in others)

def test_the_same_key_in_two_shards_is_refused_by_the_loaders(shards, capsys):
    first, second = (members_of(shards / f"train-00000{i}.tar") for i in (0, 1))
    key = first[0][0].split(".")[0]
    victim = second[0][0].split(".")[0]
    # the second shard's first sample becomes a copy of the first shard's (same count)
    copied = [(name, payload) for name, payload in first if name.startswith(key + ".")]
    rewrite_shard(shards, "train-000001.tar",
                  copied + [m for m in second if not m[0].startswith(victim + ".")])
    message = f"sample '{key}' of split 'train' is in two shards"
    for read in (lambda r: make_loader(r, k=1.0), lambda r: make_eval_loader(r, split="train")):
        with pytest.raises(ValueError, match=message) as info:
            read(shards)
        assert "train-000000.tar" in str(info.value) and "train-000001.tar" in str(info.value)
    assert inspect(shards) == 1
    assert f"sample '{key}' is also in train-000000.tar" in capsys.readouterr().err


# ------------------------------------------------------------------ 6. loader arguments


@pytest.mark.parametrize("samples", [10**12, 10**8, 10**7])
def test_an_epoch_too_long_to_draw_is_refused_before_any_work(shards, deadline,  # noqa: F811
                                                               samples):
    deadline(20)
    started = time.monotonic()
    with pytest.raises(ValueError, match="samples_per_epoch"):
        make_loader(shards, k=1.0, batch_size=2, image_size=8, samples_per_epoch=samples)
    assert time.monotonic() - started < 5
    # the longest epoch allowed (1000 passes over the 6 samples) yields its first batch at once
    loader = make_loader(shards, k=1.0, batch_size=2, image_size=8, samples_per_epoch=6000)
    started = time.monotonic()
    x, y = next(iter(loader))
    assert time.monotonic() - started < 5 and len(loader) == 3000 and x.shape[0] == 2


@pytest.mark.parametrize(("mean", "std"), [((0.5, 0.5, 0.5), (1e-40, 1, 1)),
                                           ((1e38, 0.5, 0.5), (0.2, 0.2, 0.2))])
def test_a_normalisation_that_overflows_is_refused(shards, mean, std):
    for make in (make_loader, make_eval_loader):
        options = {"k": 1.0} if make is make_loader else {}
        with pytest.raises(ValueError, match=r"take values in \[0, 1\] to .* past 65504"):
            make(shards, mean=mean, std=std, **options)
    # the largest allowed still gives finite values
    x, _ = next(iter(make_loader(shards, k=1.0, batch_size=2, image_size=8,
                                 mean=(0.0, 0.0, 0.0), std=(1 / 65504,) * 3)))
    assert np.isfinite(x.numpy()).all()


# ------------------------------------------------------------------ 7. messages


def test_inspect_on_a_path_over_the_system_limit_is_a_message(tmp_path, capsys):
    long = tmp_path / "/".join(["x" * 250] * 20)  # over PATH_MAX (4096)
    assert inspect(long) == 1
    err = capsys.readouterr().err
    assert "File name too long" in err and "Traceback" not in err


@pytest.mark.parametrize("how", ["read-only file system", "folder mode 0555"])
def test_inspect_prints_the_table_and_skips_a_sheet_it_cannot_write(shards, monkeypatch,
                                                                      capsys, how):
    if how == "read-only file system":
        def read_only(path, payload):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        monkeypatch.setattr(storage, "write_atomically", read_only)
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a folder of mode 0555")
        shards.chmod(0o555)
    try:
        code = main(["inspect", str(shards), "--recompute", "0", "--per-class", "1"])
    finally:
        shards.chmod(0o755)
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err
    assert "armchair" in out and "total" in out and "consistent with its manifest" in out
    assert "contact sheet skipped: cannot write" in err
    assert not [p.name for p in shards.iterdir() if p.name.startswith("contact-sheet")]


def stexture_command() -> list[str]:
    script = Path(sys.executable).with_name("stexture")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "stexture"]


def wait_for_imports(pid: int, limit: float = 30.0) -> None:
    """Until the process has numpy's core mapped: it is then in stexture's imports. Before
    that, Python itself starts (tens of ms unloaded, more on a busy machine), and a Ctrl-C
    there is Python's own traceback, before any line of stexture runs."""
    maps, end = Path(f"/proc/{pid}/maps"), time.monotonic() + limit
    while "_multiarray_umath" not in maps.read_text() and time.monotonic() < end:
        time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux's /proc")
def test_ctrl_c_while_inspect_starts_ends_quietly_with_130(shards):
    interrupted = 0
    for delay in (0.0, 0.5, 1.2, 2.5):  # after its imports began
        child = subprocess.Popen(
            [*stexture_command(), "inspect", str(shards), "--per-class", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_imports(child.pid)
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        assert "Traceback" not in err, (delay, err)
        if "problem(s) in" in err or "consistent with" in out:
            continue  # it had finished its work: nothing left to interrupt
        interrupted += 1
        assert child.returncode == 130, (delay, child.returncode, err)
        assert err.strip() == "stexture: interrupted", (delay, err)
    assert interrupted >= 2  # at least the signals during its imports


def test_sweep_init_weights_that_are_no_weights_file_is_a_message(shards, tmp_path, capsys):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    runs = tmp_path / "runs"
    assert main(["sweep", str(shards), "--out", str(runs), "--init-weights", str(text),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--init-weights {text}: not a weights file torch can load" in err
    assert not runs.exists()


def test_sweep_out_an_existing_file_is_a_message(shards, tmp_path, capsys):
    taken = tmp_path / "results.txt"
    taken.write_text("the user's notes")
    assert main(["sweep", str(shards), "--out", str(taken), "--quiet"]) == 2
    assert f"--out {taken} is a file" in capsys.readouterr().err
    assert taken.read_text() == "the user's notes"


# ------------------------------------------------------------------ 9. stale data through wids


def wids_image_sides(index: Path, **options) -> set[int]:
    wids = pytest.importorskip("wids")
    from stexture.shards.interop import layer_dict

    dataset = wids.ShardListDataset(str(index), transformations=layer_dict, **options)
    return {min(dataset[i]["image"].shape[:2]) for i in range(len(dataset))}


@pytest.mark.parametrize("cache", ["WIDS_CACHE", "default"])
def test_wids_sees_a_folder_decomposed_again(tmp_path, monkeypatch, cache):
    pytest.importorskip("wids")
    src = tmp_path / "src"
    make_image_folder(src, per_class=2)
    out = tmp_path / "sh"
    if cache == "WIDS_CACHE":
        monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids-cache"))
        cache_dir = tmp_path / "wids-cache"
    else:  # wids' own default; the copies of this test's shards are removed afterwards
        monkeypatch.delenv("WIDS_CACHE", raising=False)
        cache_dir = Path("/tmp/_wids_cache")
    try:
        run(src, out, fast_settings(size=24))
        assert wids_image_sides(out / "train.wids.json") == {24}
        run(src, out, fast_settings(size=32), overwrite=True)
        assert wids_image_sides(out / "train.wids.json") == {32}
    finally:
        if cache == "default" and cache_dir.is_dir():
            mine = quote(str(out), safe="+-")
            for copy in cache_dir.iterdir():
                if mine in copy.name:
                    copy.unlink()


def test_ctrl_c_inside_a_callback_python_cannot_raise_from_still_ends_the_command():
    # a KeyboardInterrupt in a weakref callback (where an import lock's cleanup runs) is
    # "unraisable": Python prints it and goes on, so the user's Ctrl-C would be lost
    script = (
        "import sys; sys.argv[0] = 'stexture'\n"
        "import gc, weakref, stexture, time\n"
        "class Box: pass\n"
        "def interrupted(_):\n"
        "    raise KeyboardInterrupt\n"
        "box = Box(); ref = weakref.ref(box, interrupted); del box; gc.collect()\n"
        "time.sleep(30)\n"
        "print('not interrupted')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr.strip() == "stexture: interrupted"
    assert "not interrupted" not in done.stdout
