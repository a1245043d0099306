"""Hostile cases on the write side (issue 29; README, section Reliability): the commands
that write and delete (``decompose``, ``synth``) under a dying or stuck worker, a second run
on the same folder, a folder holding the user's files, parameters out of range, odd class
names and a source that changes while the command runs.

Every case that could hang runs under a deadline (SIGALRM), so a regression fails instead of
blocking CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
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

from stexture._lifecycle import LOCK_NAME, OutputInUse, hold_output
from stexture.cli import main
from stexture.commands._params import parse_params
from stexture.shards import engine
from stexture.shards.engine import DecomposeFailed
from stexture.shards.format import MANIFEST_NAME, decode_rgb, iter_tar_samples
from stexture.shards.local import write_dataset
from stexture.shards.plan import ShardSettings, plan_dataset
from stexture.shards.write import PROGRESS_NAME, open_output

psutil = pytest.importorskip("psutil")


@pytest.fixture
def src(tmp_path):
    make_image_folder(tmp_path / "src", per_class=4)
    return tmp_path / "src"


def _photos(root: Path, per_class: int) -> Path:
    """``root/class<c>/p<i>.png``: distinct crops of two skimage textures."""
    for c, name in enumerate(("brick", "grass")):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(texture_crop(name, i)).save(root / f"class{c}" / f"p{i}.png")
    return root


def _children() -> set[int]:
    """This process's children, multiprocessing's resource tracker aside (it stays)."""
    return {p.pid for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())}


def _held(out: Path) -> bool:
    try:
        return (out / LOCK_NAME).stat().st_size > 0
    except FileNotFoundError:
        return False


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stexture", *args], capture_output=True,
                          text=True, timeout=240, **kwargs)


# ---------------------------------------------------------------- 1. no hang with workers


def test_an_error_after_the_scan_with_two_workers_never_hangs(tmp_path, deadline):
    """Issue 29 finding 1, ten times: a foreign file at a shard name, and a re-run with
    another size over a killed run's progress file, each found after a two-worker scan.
    Both used to hang in ``ProcessPoolExecutor.shutdown`` about half the time."""
    photos = _photos(tmp_path / "photos", 30)
    before = _children()
    deadline(240)  # ten runs take 30-70 s on 2 shared cores; a hang takes forever
    for attempt in range(10):
        out = tmp_path / f"o{attempt}"
        out.mkdir()
        if attempt % 2 == 0:
            (out / "train-000000.tar").write_text("x\n")  # the user's file, not ours
            message = "train-000000.tar, which no stexture manifest or progress file"
            settings = fast_settings()
        else:
            # what a run killed right after opening its folder leaves: a progress file
            open_output(out, fast_settings(), plan_dataset(photos, fast_settings()))
            message = "written with other settings"
            settings = fast_settings(size=32)
        with pytest.raises(ValueError, match=message):
            run(photos, out, settings, workers=2)
        assert _children() <= before, "a worker outlived the run"
        if attempt % 2 == 0:
            assert (out / "train-000000.tar").read_text() == "x\n"
        else:
            assert json.loads((out / PROGRESS_NAME).read_text())["settings"]["size"] == 24
        assert not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------- 2. synth --overwrite


def test_synth_overwrite_keeps_a_users_file_and_says_why(tmp_path, capsys):
    """Issue 29 finding 2: ``synth --overwrite`` on a folder no synth run wrote deleted
    ``train/``; now it deletes nothing and says why."""
    out = tmp_path / "s"
    (out / "train" / "chair").mkdir(parents=True)
    (out / "train" / "chair" / "my.jpg").write_text("x\n")
    assert main(["synth", str(out), "--overwrite", "--per-class", "1", "--size", "32",
                 "--classes", "chair", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no record of an earlier synth run" in err and "nothing was deleted" in err
    assert (out / "train" / "chair" / "my.jpg").read_text() == "x\n"
    assert sorted(p.name for p in out.iterdir()) == ["train"]


def test_synth_overwrite_removes_its_own_run_and_refuses_a_file_it_did_not_write(
        tmp_path, capsys):
    out = tmp_path / "s"
    args = ["synth", str(out), "--size", "32", "--quiet", "--test-per-class", "0",
            "--shifted-per-class", "0"]
    assert main([*args, "--per-class", "2", "--classes", "chair,sofa"]) == 0
    (out / "notes.txt").write_text("mine\n")  # beside the splits: never touched
    assert main([*args, "--per-class", "1", "--classes", "chair", "--overwrite"]) == 0
    assert "removed the 4 images of the earlier synth run" in capsys.readouterr().out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "dataset.json", "notes.txt", "records.csv", "train/chair/chair-00000.jpg"]
    # a file of the user's inside a split folder would join the data set: refused whole
    (out / "train" / "chair" / "my.jpg").write_text("x\n")
    assert main([*args, "--per-class", "1", "--classes", "chair", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "train/chair/my.jpg" in err and "nothing was deleted" in err
    assert (out / "train" / "chair" / "my.jpg").read_text() == "x\n"
    assert (out / "train" / "chair" / "chair-00000.jpg").is_file()
    assert (out / "dataset.json").is_file()


def test_synth_overwrite_after_a_killed_run_removes_what_its_progress_file_names(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    # a run killed after its first image: the progress file names what it would write
    (out / ".stexture-synth.json").write_text(json.dumps({
        "generator": "stexture.datasets.make_furniture_dataset", "classes": ["lamp"],
        "splits": {"train": {"per_class": 3}}}))
    (out / "train" / "lamp").mkdir(parents=True)
    (out / "train" / "lamp" / "lamp-00000.jpg").write_bytes(b"half")
    (out / "records.csv").write_text("split\n")
    assert main(["synth", str(out), "--per-class", "1", "--test-per-class", "0",
                 "--shifted-per-class", "0", "--size", "32", "--classes", "bed",
                 "--overwrite", "--quiet"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "dataset.json", "records.csv", "train/bed/bed-00000.jpg"]


# ---------------------------------------------------------------- 3. a lock on OUT


def test_a_second_run_on_the_same_folder_fails_fast_naming_the_first(tmp_path):
    """Issue 29 finding 3 with two real ``stexture decompose`` processes: the second fails
    at once naming the first (PID, host, start time); the first, held still meanwhile,
    then finishes a complete folder."""
    photos = _photos(tmp_path / "photos", 20)
    out = tmp_path / "o"
    args = ["decompose", str(photos), str(out), *FAST_ARGS, "--shard-size", "5"]
    first = subprocess.Popen([sys.executable, "-m", "stexture", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        give_up = time.monotonic() + 120
        while not _held(out):
            assert first.poll() is None and time.monotonic() < give_up, first.stderr.read()
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # still holding the folder, for certain
        started = time.monotonic()
        second = _cli(*args)
        took = time.monotonic() - started
        first.send_signal(signal.SIGCONT)
        assert second.returncode == 2, second.stderr
        assert f"is in use by `stexture decompose` (pid {first.pid} on " \
               f"{socket.gethostname()}, started 20" in second.stderr
        assert "Traceback" not in second.stderr
        assert took < 30  # before any scan: the start-up of Python and the imports
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
    assert first.returncode == 0, stderr
    assert "40 samples" in stdout
    names = sorted(p.name for p in out.iterdir())
    assert MANIFEST_NAME in names and PROGRESS_NAME not in names and LOCK_NAME not in names
    assert not [n for n in names if n.endswith(".partial")]


def test_a_lock_left_by_a_dead_run_is_taken_over(src, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps({
        "pid": dead.pid, "host": socket.gethostname(), "command": "stexture decompose",
        "started": "2026-01-01 00:00:00 UTC"}))
    lines = []
    write_dataset(src, out, fast_settings(), show_progress=False, log=lines.append)
    assert any(f"taking over the lock of `stexture decompose` (pid {dead.pid}" in line
               for line in lines)
    assert (out / MANIFEST_NAME).is_file() and not (out / LOCK_NAME).exists()


def test_a_link_at_the_lock_name_is_refused_and_its_target_kept(src, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("mine\n")
    (out / LOCK_NAME).symlink_to(target)
    with pytest.raises(ValueError, match="is a symbolic link"):
        run(src, out)
    assert target.read_text() == "mine\n" and (out / LOCK_NAME).is_symlink()


def test_a_held_folder_is_refused_by_decompose_and_synth(src, tmp_path, capsys):
    with hold_output(tmp_path / "o", "stexture synth"):
        with pytest.raises(OutputInUse, match=rf"`stexture synth` \(pid {os.getpid()} on"):
            run(src, tmp_path / "o")
    with hold_output(tmp_path / "s", "stexture decompose"):
        assert main(["synth", str(tmp_path / "s"), "--per-class", "1", "--size", "32",
                     "--quiet"]) == 2
    assert "is in use by `stexture decompose`" in capsys.readouterr().err
    assert list((tmp_path / "s").iterdir()) == []


# ---------------------------------------------------------------- 6. parameters up front


@pytest.mark.parametrize(("param", "message"), [
    ("lam=1e4", r"lam must lie in \(0, 2\.09715\], got 10000\.0"),
    ("lam=nan", r"lam must be a finite number > 0, got nan"),
    ("n_iter=0", r"n_iter must be an integer in 1\.\.1000000, got 0"),
])
def test_a_bad_parameter_is_refused_before_the_scan_and_the_good_one_then_runs(
        src, tmp_path, capsys, monkeypatch, param, message):
    """Issue 29 finding 6: ``lam=1e4`` ran the whole scan, failed every shard, and left a
    progress file that refused the corrected command as "written with other settings"."""
    out = tmp_path / "o"
    scanned = []
    monkeypatch.setattr(engine, "plan_dataset",
                        lambda *a, **k: scanned.append(1) or plan_dataset(*a, **k))
    assert main(["decompose", str(src), str(out), *FAST_ARGS, "--param", param]) == 2
    assert capsys.readouterr().err.startswith("stexture decompose: error: ")
    assert not scanned and not out.exists()
    with pytest.raises(ValueError, match=message):
        ShardSettings(params=parse_params("rtv", [param]))  # the API checks the same, up front
    assert main(["decompose", str(src), str(out), *FAST_ARGS]) == 0
    assert scanned == [1]


def test_a_size_over_the_pixel_limit_is_refused_before_resizing(src, tmp_path, capsys):
    """``--size 12000 --max-pixels 1000000`` resized every image to 12000^2 (1.4 GB) before
    failing as a decompression bomb; the limit now holds for the output, up front."""
    out = tmp_path / "o"
    tracemalloc.start()
    try:
        code = main(["decompose", str(src), str(out), "--size", "12000", "--max-pixels",
                     "1000000", "--quiet"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2
    assert ("size 12000 makes images of at least 144000000 pixels, over max pixels 1000000: "
            "size must lie in [2, 1000]") in capsys.readouterr().err
    assert peak < 20 << 20 and not out.exists()


def test_an_image_whose_resized_output_passes_the_limit_is_rejected_unread(tmp_path):
    """A long panorama within the limit as a source, over it once its shorter side is
    ``size``: rejected at the scan, never resized."""
    src = tmp_path / "src"
    make_image_folder(src, per_class=2, classes=("brick",))
    Image.fromarray(np.tile(texture_crop("grass", 0, (20, 48)), (1, 12, 1))).save(
        src / "brick" / "wide.png")  # 20 x 576: 11,520 pixels; 24 x 691 once resized
    summary = run(src, tmp_path / "o", fast_settings(max_pixels=12_000, val_fraction=0.0))
    assert summary.accepted == 2 and summary.rejected == {"too_many_pixels": 1}
    rows = [json.loads(line) for line in (tmp_path / "o" / "rejected.jsonl").open()]
    assert "691x24 once resized to a shorter side of 24, over --max-pixels 12000" in \
        rows[0]["detail"]


def test_synth_refuses_a_huge_size_before_allocating(tmp_path, capsys):
    """``stexture synth --size 100000`` allocated 18.6 GiB."""
    tracemalloc.start()
    try:
        code = main(["synth", str(tmp_path / "s"), "--size", "100000", "--quiet"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2
    assert "size must lie in [32, 2048] pixels, got 100000" in capsys.readouterr().err
    assert peak < 20 << 20 and not (tmp_path / "s").exists()


# ---------------------------------------------------------------- 5. class names


def test_a_class_name_with_a_newline_is_rejected_not_printed_as_a_row(tmp_path, capsys):
    """Issue 29 finding 5 (source side): a JSONL label ``"a\\nb"`` and a class folder
    ``dog\\nnewline`` printed fake class rows."""
    src = tmp_path / "src"
    make_image_folder(src, per_class=3, classes=("brick",))
    odd = src / "dog\nnewline"
    odd.mkdir()
    Image.fromarray(texture_crop("grass", 0)).save(odd / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"path": str(src / "brick" / "0" / "img_0.png"), "label": "a\nb"}) + "\n"
        + json.dumps({"path": str(src / "brick" / "1" / "img_1.png"), "label": "ok"}) + "\n")
    for source, out in ((src, tmp_path / "o1"), (manifest, tmp_path / "o2")):
        assert main(["decompose", str(source), str(out), *FAST_ARGS,
                     "--val-fraction", "0"]) == 0
        printed = capsys.readouterr().out
        assert "1 bad_label" in printed
        assert not any(line.startswith(("b ", "newline ")) for line in printed.splitlines())
        rows = [json.loads(line) for line in (out / "rejected.jsonl").open()]
        assert [r["reason"] for r in rows] == ["bad_label"]
        assert "holds the control character '\\n'" in rows[0]["detail"]
        assert "\n" not in "".join(json.loads((out / MANIFEST_NAME).read_text())["classes"])


def test_a_linked_class_folder_is_named_a_link_not_empty(tmp_path):
    src = tmp_path / "src"
    make_image_folder(src, per_class=2, classes=("brick",))
    make_image_folder(tmp_path / "elsewhere", per_class=2, classes=("grass",))
    (src / "grass").symlink_to(tmp_path / "elsewhere" / "grass")
    run(src, tmp_path / "o", fast_settings(val_fraction=0.0))
    rows = [json.loads(line) for line in (tmp_path / "o" / "rejected.jsonl").open()]
    assert [(r["path"], r["reason"]) for r in rows] == [("grass", "linked_folder")]
    assert "is a symbolic link" in rows[0]["detail"] and "no image files" not in \
        rows[0]["detail"]


# ---------------------------------------------------------------- 8. a source that changes


def test_a_source_changed_after_the_scan_is_never_written_unchecked(tmp_path, monkeypatch):
    """Issue 29 finding 8: every ``class1`` photo replaced by one image between the scan
    and the write gave 30 identical stored images; the write now checks what it decodes
    against the scan, and the re-run's duplicate check sees them."""
    photos = _photos(tmp_path / "photos", 6)
    out = tmp_path / "o"
    real_open = engine.open_output

    def replace_after_the_scan(*args, **kwargs):
        for path in (photos / "class1").iterdir():
            shutil.copyfile(photos / "class0" / "p0.png", path)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(engine, "open_output", replace_after_the_scan)
    settings = fast_settings(val_fraction=0.0)
    with pytest.raises(DecomposeFailed, match="changed after the scan") as failed:
        run(photos, out, settings)
    assert failed.value.failures  # every shard with a class1 photo
    monkeypatch.setattr(engine, "open_output", real_open)
    # the advice of the failure works: the same command plans anew, and says --overwrite
    with pytest.raises(ValueError, match="use --overwrite to start over"):
        run(photos, out, settings)
    summary = run(photos, out, settings, overwrite=True)
    assert summary.accepted == 6 and summary.rejected == {"duplicate": 6, "empty_class": 1}
    stored = [decode_rgb(s["png" if "png" in s else "jpg"]).tobytes()
              for shard in sorted(out.glob("train-*.tar"))
              for s in iter_tar_samples(shard)]
    assert len(stored) == 6 == len(set(stored))


def test_the_advice_of_inspect_sources_works_when_followed(tmp_path, capsys):
    """``inspect --sources`` said "run stexture decompose again", which refused with "use
    --overwrite"; following its words now works."""
    photos = _photos(tmp_path / "photos", 4)
    out = tmp_path / "o"
    args = ["decompose", str(photos), str(out), *FAST_ARGS, "--val-fraction", "0"]
    assert main(args) == 0
    for path in (photos / "class1").iterdir():
        shutil.copyfile(photos / "class0" / "p0.png", path)
    capsys.readouterr()
    assert main(["inspect", str(out), "--sources", "--per-class", "0", "--recompute", "0",
                 "--quiet"]) != 0
    printed = capsys.readouterr()
    assert "again with the same arguments and --overwrite" in printed.out + printed.err
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((out / MANIFEST_NAME).read_text())["inputs"]["rejected"] == {
        "duplicate": 4, "empty_class": 1}
