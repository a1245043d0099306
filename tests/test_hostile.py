"""Hostile files, foreign files and dying parents (README, section Reliability).

One test per case, grouped by the class of failure they guard against:

1. files stexture did not write are never destroyed or written through;
2. no read hangs or runs without bound;
3. no layer read back from a shard allocates more than it may (decompression bombs);
4. a manifest cannot send a reader outside its folder or read a shard twice;
5. a resumed run notices changed sources;
6. worker processes end with their parent;
7. a clear message where a traceback or silent nonsense was.

Every case that could hang runs under a deadline (SIGALRM), so a regression fails instead
of blocking CI.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pipeline_data import FAST_ARGS, fast_settings, make_image_folder, texture_crop
from pipeline_data import write_quietly as run
from shardfactory import make_shard_dir

from stexture.cli import main
from stexture.imageio import decode_rgb_bytes
from stexture.loader import CorruptSampleWarning, make_eval_loader, make_loader
from stexture.shards import storage
from stexture.shards.format import (
    MANIFEST_NAME,
    STRUCTURE_FIELD,
    decode_sample,
    decode_structure,
    encode_image,
    encode_sample,
    iter_tar_samples,
    read_manifest,
    tar_member_offsets,
    write_tar,
)
from stexture.shards.local import write_dataset
from stexture.shards.write import PROGRESS_NAME
from stexture.smoothing import get_method

psutil = pytest.importorskip("psutil")


@pytest.fixture
def src(tmp_path):
    make_image_folder(tmp_path / "src", per_class=2)
    return tmp_path / "src"


def tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ 1. foreign files


def test_inspect_refuses_a_contact_sheet_link_and_leaves_its_target(src, tmp_path, capsys):
    out = tmp_path / "out"
    run(src, out)
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"the user's file")
    (out / "contact-sheet.png").symlink_to(victim)
    assert main(["inspect", str(out), "--recompute", "0"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_bytes() == b"the user's file"


def test_a_users_partial_file_in_out_is_kept(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.partial").write_text("mine")
    run(src, out)
    assert (out / "notes.partial").read_text() == "mine"
    assert read_manifest(out).count("train") + read_manifest(out).count("val") == 6


def test_overwrite_removes_only_what_the_record_names(src, tmp_path):
    out = tmp_path / "out"
    run(src, out)
    (out / "train-final.tar").write_bytes(b"a user's shard")
    (out / "val-notes.tar").write_bytes(b"another")
    run(src, out, fast_settings(quality=80), overwrite=True)
    assert (out / "train-final.tar").read_bytes() == b"a user's shard"
    assert (out / "val-notes.tar").read_bytes() == b"another"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_foreign_file_under_one_of_our_names_is_refused_by_name(src, tmp_path, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-000000.tar").write_bytes(b"not ours")
    (out / "index.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"holds index\.csv, train-000000\.tar.*did not write"):
        run(src, out, overwrite=overwrite)
    assert (out / "train-000000.tar").read_bytes() == b"not ours"
    assert (out / "index.csv").read_text() == "a,b\n"


def test_a_link_planted_at_a_partial_name_is_not_written_through(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "train-000000.tar.partial").symlink_to(victim)
    with pytest.raises(ValueError, match=r"holds train-000000\.tar\.partial.*did not write"):
        run(src, out)
    run(src, tmp_path / "resumed")
    (tmp_path / "resumed" / "train-000000.tar.partial").symlink_to(victim)
    (tmp_path / "resumed" / "train-000000.tar").unlink()
    with pytest.raises(OSError, match="a link, not a file stexture left"):
        run(src, tmp_path / "resumed")
    assert victim.read_text() == "keep"


def test_a_link_at_an_output_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    storage.write_atomically(link, b"new")
    assert victim.read_text() == "keep" and not link.is_symlink()
    assert link.read_bytes() == b"new"


def test_overwrite_never_removes_what_a_record_names_outside_out(src, tmp_path):
    out = tmp_path / "out"
    run(src, out)
    victim = tmp_path / "victim.tar"
    victim.write_bytes(b"keep")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["splits"]["train"]["shards"][0]["name"] = "../victim.tar"
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"names '\.\./victim\.tar'"):
        run(src, out, overwrite=True)
    assert victim.read_bytes() == b"keep"


# ------------------------------------------------------------------ 2. hangs, unbounded reads


def test_a_fifo_named_like_an_image_is_rejected_without_blocking(src, tmp_path, deadline):
    os.mkfifo(src / "brick" / "x.jpg")
    deadline(60)
    out = tmp_path / "out"
    run(src, out)
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["path"], r["reason"]) for r in rejected] == [("brick/x.jpg", "unreadable")]
    assert "a FIFO" in rejected[0]["detail"]


def test_a_link_to_dev_zero_is_rejected_without_reading(src, tmp_path, deadline):
    (src / "brick" / "zero.jpg").symlink_to("/dev/zero")
    deadline(60)
    out = tmp_path / "out"
    run(src, out)
    assert "a character device" in (out / "rejected.jsonl").read_text()


def test_a_file_over_the_byte_cap_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\0" * 5000)
    with pytest.raises(OSError, match="5000 bytes, over the limit of 4096"):
        storage.read_bytes(big, max_bytes=4096)
    assert storage.read_bytes(big, max_bytes=5000) == b"\0" * 5000


def test_a_symlink_loop_in_the_source_ends_the_listing(src, tmp_path, deadline):
    (src / "brick" / "loop").symlink_to(src / "brick")
    deadline(60)
    summary = run(src, tmp_path / "out")
    assert summary.accepted == 6


def negative_size_shard(path: Path, size: int = -512) -> Path:
    """A two-sample shard whose second member declares ``size`` bytes (GNU base-256): a
    negative one sends a naive reader back to an earlier header, forever."""
    rng = np.random.default_rng(0)
    layers = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    with open(path, "wb") as f:
        write_tar(f, [encode_sample(f"k{i}", encode_image(layer, "png"), "png", layer, i,
                                    {"class_name": f"c{i}"})
                      for i, layer in enumerate(layers)])
    header = list(tar_member_offsets(path))[1][1] - 512
    data = bytearray(path.read_bytes())
    field = (b"\xff" + (256**11 + size).to_bytes(11, "big") if size < 0
             else b"\x80" + size.to_bytes(11, "big"))
    data[header + 124:header + 136] = field
    data[header + 148:header + 156] = b" " * 8
    data[header + 148:header + 156] = b"%06o\0 " % sum(data[header:header + 512])
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("size", [-512, -1024, -(1 << 40), 1 << 40])
def test_a_member_with_an_absurd_size_is_a_damaged_tar_not_a_loop(tmp_path, deadline, size):
    shard = negative_size_shard(tmp_path / "train-000000.tar", size)
    deadline(30)
    with pytest.raises(ValueError, match="damaged tar file.*(negative size|declares)"):
        list(iter_tar_samples(shard))
    with pytest.raises(ValueError, match="unreadable tar file.*(negative size|declares)"):
        list(tar_member_offsets(shard))


def test_the_loaders_and_decompose_stop_on_a_negative_size_member(tmp_path, deadline):
    root = make_shard_dir(tmp_path / "shards", per_class=2, val_per_class=2, size=16)
    negative_size_shard(root / "val-000000.tar")
    deadline(60)
    with pytest.raises(ValueError, match="val-000000.tar: unreadable tar file"):
        make_eval_loader(root, batch_size=2, image_size=8)
    (root / "train-000000.tar").write_bytes((root / "val-000000.tar").read_bytes())
    with pytest.raises(ValueError, match="unreadable tar file"):
        list(make_loader(root, k=1.0, batch_size=2, image_size=8))
    summary = run(root, tmp_path / "out", fast_settings(min_side=8, size=0))
    rejected = (tmp_path / "out" / "rejected.jsonl").read_text()
    assert "val-000000.tar" in rejected and "negative size" in rejected
    assert summary.accepted > 0


def test_a_pax_record_of_length_zero_is_a_damaged_tar(tmp_path, deadline):
    path = tmp_path / "pax.tar"
    path.write_bytes(b"")
    payload = b"0 path=x\n"
    header = bytearray(512)
    header[:9] = b"PaxHeader"
    header[124:136] = b"%011o\0" % len(payload)
    header[156:157] = b"x"
    header[257:263] = b"ustar\0"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    path.write_bytes(bytes(header) + payload.ljust(512, b"\0") + b"\0" * 1024)
    deadline(30)
    with pytest.raises(ValueError, match="PAX record"):
        list(iter_tar_samples(path))


# ------------------------------------------------------------------ 3. bombs inside shards


def dzst_declaring(height: int, width: int, channels: int = 3) -> bytes:
    """A 13-byte dzst header declaring a huge layer, then a small zstd frame."""
    import zstandard

    return struct.pack("<4sIIB", b"SXD1", height, width, channels) + \
        zstandard.ZstdCompressor().compress(b"\0" * 36_000)


@pytest.mark.parametrize(("height", "width"), [(20_000, 20_000), (4_000_000_000, 4_000_000_000)])
def test_a_structure_declaring_a_huge_size_is_refused_before_allocating(height, width):
    tracemalloc.start()
    with pytest.raises(ValueError, match="decompression bomb"):
        decode_structure(dzst_declaring(height, width))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10_000_000


def jpeg_declaring(height: int, width: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``height x width``."""
    data = bytearray(encode_image(texture_crop("brick", 0, (16, 16)), "jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def replace_field(root: Path, shard: str, field: str, payload: bytes) -> str:
    """Replace ``field`` of the first sample of ``shard``; returns its key."""
    samples = list(iter_tar_samples(root / shard))
    samples[0] = {**{k: v for k, v in samples[0].items() if k not in ("png", "jpg")}, field:
                  payload} if field in ("png", "jpg") else {**samples[0], field: payload}
    with open(root / shard, "wb") as f:
        write_tar(f, samples)
    return samples[0]["__key__"]


@pytest.mark.parametrize("side", [20_000, 60_000])
def test_a_huge_jpeg_in_a_shard_is_skipped_and_counted_by_both_loaders(tmp_path, side):
    root = make_shard_dir(tmp_path / "s", per_class=2, val_per_class=2, size=16)
    victim = replace_field(root, "train-000000.tar", "jpg", jpeg_declaring(side, side))
    with pytest.raises(ValueError, match="too many pixels"):
        decode_sample(next(iter_tar_samples(root / "train-000000.tar")))
    loader = make_loader(root, k=0.5, batch_size=2, image_size=8, with_info=True)
    with pytest.warns(CorruptSampleWarning, match="too many pixels"):
        keys = [key for _, _, info in loader for key in info["key"]]
    assert victim not in keys and len(keys) == 5 and loader.skipped_samples == 1
    eval_victim = replace_field(root, "val-000000.tar", "jpg", jpeg_declaring(side, side))
    with pytest.warns(CorruptSampleWarning, match="too many pixels"):
        batches = list(make_eval_loader(root, batch_size=2, image_size=8))
    assert eval_victim not in {key for _, _, info in batches for key in info["key"]}


def test_a_structure_bomb_in_a_shard_is_skipped_and_counted(tmp_path):
    root = make_shard_dir(tmp_path / "s", per_class=2, val_per_class=2, size=16)
    victim = replace_field(root, "train-000000.tar", STRUCTURE_FIELD,
                           dzst_declaring(20_000, 20_000))
    loader = make_loader(root, k=0.5, batch_size=2, image_size=8, with_info=True,
                         p_conflict=1.0)
    with pytest.warns(CorruptSampleWarning, match="decompression bomb"):
        keys = [key for _, _, info in loader for key in info["key"]]
    assert victim not in keys and loader.skipped_samples == 1


# ------------------------------------------------------------------ 4. manifest trust


@pytest.mark.parametrize("name", ["../other/x.tar", "/etc/passwd", "sub/../../x.tar", ""])
def test_a_manifest_naming_a_file_outside_its_folder_is_refused(tmp_path, name, capsys):
    root = make_shard_dir(tmp_path / "s", per_class=2, val_per_class=2, size=16)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["splits"]["train"]["shards"][0]["name"] = name
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    for read in (read_manifest, lambda r: make_eval_loader(r, split="train"),
                 lambda r: make_loader(r, k=1.0)):
        with pytest.raises(ValueError, match="plain file name") as info:
            read(root)
        assert "root:" not in str(info.value)  # no bytes of /etc/passwd in the message
    assert main(["inspect", str(root), "--recompute", "0", "--per-class", "0"]) == 1
    assert "plain file name" in capsys.readouterr().err


def test_a_shard_listed_twice_is_refused(tmp_path):
    root = make_shard_dir(tmp_path / "s", per_class=2, val_per_class=2, size=16)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    shards = manifest["splits"]["train"]["shards"]
    shards.append(dict(shards[0]))
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="lists shard 'train-000000.tar' twice"):
        make_loader(root, k=1.0)


# ------------------------------------------------------------------ 5. stale output


def test_a_source_replaced_after_a_finished_run_is_rewritten(src, tmp_path):
    out = tmp_path / "out"
    run(src, out)
    before = tree(out)
    Image.fromarray(texture_crop("gravel", 11)).save(src / "brick" / "0" / "img_0.png")
    lines = []
    summary = write_dataset(src, out, fast_settings(), show_progress=False, log=lines.append)
    assert summary.written == 1 and summary.skipped == len(read_manifest(out).raw[
        "splits"]["train"]["shards"]) + len(read_manifest(out).shards("val")) - 1
    assert any("source images changed" in line for line in lines)
    fresh = tmp_path / "fresh"
    run(src, fresh)
    assert tree(out) == tree(fresh) != before


def test_inspect_names_a_shard_whose_source_changed(src, tmp_path, capsys):
    out = tmp_path / "out"
    run(src, out)
    args = ["inspect", str(out), "--recompute", "0", "--per-class", "0", "--sources"]
    assert main(args) == 0
    Image.fromarray(texture_crop("gravel", 11)).save(src / "brick" / "0" / "img_0.png")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("its sources changed") == 1 and "1 problem(s)" in err


# ------------------------------------------------------------------ 6. orphans


def test_workers_end_when_the_parent_is_killed(tmp_path):
    src = tmp_path / "src"
    make_image_folder(src, per_class=4)
    out = tmp_path / "out"
    parent = subprocess.Popen(
        [sys.executable, "-m", "stexture", "decompose", str(src), str(out), "--method", "rtv",
         "--size", "64", "--min-side", "16", "--quiet", "--shard-size", "1", "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the progress file is written after the workers scanned the source, as the shard
        # jobs go out to them
        deadline = time.monotonic() + 120
        while not (out / PROGRESS_NAME).exists() and time.monotonic() < deadline:
            assert parent.poll() is None, "the run ended before it decomposed"
            time.sleep(0.02)
        children = psutil.Process(parent.pid).children(recursive=True)
        assert len(children) >= 2
        os.kill(parent.pid, signal.SIGKILL)
    finally:
        parent.wait()
    gone, alive = psutil.wait_procs(children, timeout=5)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    assert not (out / MANIFEST_NAME).exists() and (out / PROGRESS_NAME).exists()


# ------------------------------------------------------------------ 7. messages


def test_out_being_a_file_is_a_message_before_the_scan(src, tmp_path, monkeypatch):
    import stexture.shards.engine as engine

    (tmp_path / "out").write_text("x")
    monkeypatch.setattr(engine, "plan_dataset", lambda *a, **k: pytest.fail("scanned"))
    with pytest.raises(ValueError, match="is a file"):
        run(src, tmp_path / "out")
    assert (tmp_path / "out").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_out_is_refused_before_the_scan(src, tmp_path, monkeypatch):
    import stexture.shards.engine as engine

    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    monkeypatch.setattr(engine, "plan_dataset", lambda *a, **k: pytest.fail("scanned"))
    with pytest.raises(ValueError, match="not writable"):
        run(src, out)


def test_a_full_disk_and_a_name_too_long_are_messages(src, tmp_path, monkeypatch, capsys):
    long_out = tmp_path / ("x" * 300) / "out"
    assert main(["decompose", str(src), str(long_out), *FAST_ARGS]) == 1
    assert "File name too long" in capsys.readouterr().err

    def full(loc, payload):
        raise OSError(errno.ENOSPC, "No space left on device", str(loc))

    monkeypatch.setattr(storage, "write_atomically", full)
    assert main(["decompose", str(src), str(tmp_path / "out"), *FAST_ARGS]) == 1
    assert "No space left on device" in capsys.readouterr().err


@pytest.mark.parametrize(("line", "message"), [
    ('["a.png", "cat"]', "a JSON list, not an object"),
    ('{"path": "a.png", "label": ["cat"]}', r'label must be a string, got \["cat"\]'),
    ('{"path": {"x": 1}, "label": "cat"}', "path must be a string"),
])
def test_a_jsonl_line_of_the_wrong_shape_is_named(tmp_path, line, message):
    (tmp_path / "list.jsonl").write_text(line + "\n")
    with pytest.raises(ValueError, match=f"line 1: {message}"):
        run(tmp_path / "list.jsonl", tmp_path / "out")


def test_a_run_that_accepts_nothing_fails(tmp_path, capsys):
    (tmp_path / "src" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "cat" / "a.jpg").write_text("not an image")
    assert main(["decompose", str(tmp_path / "src"), str(tmp_path / "out"), *FAST_ARGS]) == 2
    err = capsys.readouterr().err
    assert "no image of" in err and "1 not_an_image" in err and "cat/a.jpg: cannot" in err


def test_max_pixels_above_pillows_own_limit_is_honoured(monkeypatch):
    data = encode_image(texture_crop("brick", 1, (20, 30)), "png")  # 600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses past 200 pixels
    assert decode_rgb_bytes(data, max_pixels=1000).shape == (20, 30, 3)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_a_non_utf8_class_name_prints_under_a_strict_utf8_stdout(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_image_folder(src, per_class=2)
    os.rename(src / "brick", os.fsencode(src) + b"/br\xffck")
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["decompose", str(src), str(tmp_path / "out"), *FAST_ARGS]) == 0
    stdout.flush()
    assert b"br\\udcffck" in stdout.buffer.getvalue()


@pytest.mark.parametrize(("method", "params", "name"), [
    ("rtv", {"lam": 1e8}, "lam"), ("rtv", {"sigma": 1e12}, "sigma"),
    ("rtv", {"sharpness": 1e-9}, "sharpness"), ("rtv", {"n_iter": 10**9}, "n_iter"),
    ("rgf", {"sigma_s": 1e6}, "sigma_s"), ("rgf", {"sigma_r": 1e-30}, "sigma_r"),
    ("tv", {"max_num_iter": 10**12}, "max_num_iter"),
])
def test_a_parameter_out_of_what_the_kernels_compute_is_named(method, params, name):
    batch = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match=rf"^{name} must"):
        get_method(method)(batch, **params)


def test_a_gzip_shard_is_a_clear_error_for_random_access(tmp_path):
    import gzip

    root = make_shard_dir(tmp_path / "s", per_class=2, val_per_class=2, size=16)
    shard = root / "val-000000.tar"
    shard.write_bytes(gzip.compress(shard.read_bytes()))
    assert len(list(iter_tar_samples(shard))) == 4  # in order, it reads
    with pytest.raises(ValueError, match="compressed; random access needs an uncompressed"):
        make_eval_loader(root)


def test_a_jpeg_cut_short_with_an_end_marker_is_rejected_as_corrupt(src, tmp_path):
    photo = texture_crop("gravel", 3)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=90)
    whole = buffer.getvalue()
    cut = whole[: len(whole) // 2] + b"\xff\xd9"  # decodes without error, its lower half grey
    with pytest.raises(ValueError, match="ends early") as error:
        decode_rgb_bytes(cut, "cut.jpg")
    assert error.value.reason == "corrupt"
    # bytes after the end marker (some cameras and editors add them) still read
    assert np.array_equal(decode_rgb_bytes(whole + b"trailing"), decode_rgb_bytes(whole))
    (src / "brick" / "0" / "cut.jpg").write_bytes(cut)
    summary = run(src, tmp_path / "out")
    rejected = [json.loads(line) for line in
                (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected if r["path"].endswith("cut.jpg")] == ["corrupt"]
    assert summary.written > 0
