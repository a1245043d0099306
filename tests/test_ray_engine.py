"""The Ray engine of `stexture decompose` on a local Ray of 2 CPUs: the local engine's bytes,
resume, a slice that keeps failing named with its error, fsspec URLs across processes."""

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from pipeline_data import FAST_ARGS, fast_settings, make_image_folder

from stexture._ray import cancel_unfinished
from stexture.cli import main
from stexture.shards import engine
from stexture.shards.format import MANIFEST_NAME
from stexture.shards.local import write_dataset
from stexture.shards.write import PROGRESS_NAME

ray = pytest.importorskip("ray")

from stexture.shards.ray_engine import write_dataset_ray  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A source folder of 12 images and the local engine's output for it (4 shards)."""
    root = tmp_path_factory.mktemp("ray-engine")
    make_image_folder(root / "src", per_class=4)
    write_dataset(root / "src", root / "local", fast_settings(), workers=1,
                  show_progress=False, log=lambda line: None)
    return root


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def run_ray(src, out, **kwargs):
    return write_dataset_ray(src, out, fast_settings(), show_progress=False,
                             log=lambda line: None, **kwargs)


def test_the_ray_engine_writes_the_local_engines_bytes_and_resumes(dataset, tmp_path):
    out = tmp_path / "ray"
    summary = run_ray(dataset / "src", out)
    assert (summary.written, summary.skipped) == (4, 0)
    reference = files(dataset / "local")
    assert {"index.csv", "rejected.jsonl", MANIFEST_NAME, "val-000000.tar"} <= set(reference)
    assert files(out) == reference

    (out / "train-000001.tar").unlink()
    (out / "train-000002.tar").write_bytes(b"damaged")
    again = run_ray(dataset / "src", out)
    assert (again.written, again.skipped) == (2, 2)
    assert files(out) == reference


def test_a_slice_that_keeps_failing_is_named_and_the_good_shards_resume(
        dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative paths: the workers get them made absolute
    src, out = tmp_path / "src", tmp_path / "out"
    shutil.copytree(dataset / "src", src)
    moved = {}

    def open_output_then_lose_one_shards_images(out, settings, plan, overwrite=False, log=None):
        done = open_output(out, settings, plan, overwrite, log)
        job = next(job for job in plan.jobs if job.name == "train-000001.tar")
        for item, _ in job.entries:  # as if a disk went away after planning
            moved[item.path] = (src / item.source).read_bytes()
            (src / item.source).unlink()
        return done

    # both engines open the output through the one driver, engine.drive
    open_output = engine.open_output
    monkeypatch.setattr(engine, "open_output", open_output_then_lose_one_shards_images)
    code = main(["decompose", "src", "out", *FAST_ARGS, "--shard-size", "3",
                 "--val-fraction", "0.25", "--engine", "ray", "--max-retries", "1"])
    assert code == 1
    error = capsys.readouterr().err
    assert "1 shard job(s) failed after 1 retries; 3 of 4 shard(s) complete" in error
    assert "train-000001.tar: ValueError: train-000001.tar:" in error
    assert "cannot be read any more" in error
    assert not (out / MANIFEST_NAME).exists()
    assert sorted(json.loads((out / PROGRESS_NAME).read_text())["done"]) == [
        "train-000000.tar", "train-000002.tar", "val-000000.tar"]

    monkeypatch.setattr(engine, "open_output", open_output)
    for path, data in moved.items():
        Path(path).write_bytes(data)
    again = run_ray("src", "out")
    assert (again.written, again.skipped) == (1, 3)
    local, ours = files(dataset / "local"), files(out)
    assert json.loads(ours.pop(MANIFEST_NAME))["source"] == "src"
    local.pop(MANIFEST_NAME)
    assert ours == local


def test_file_urls_reach_the_ray_workers(dataset, tmp_path):
    out = tmp_path / "out"
    summary = run_ray(f"file://{dataset / 'src'}", f"file://{out}")
    assert summary.written == 4
    local, ours = files(dataset / "local"), files(out)
    assert json.loads(ours.pop(MANIFEST_NAME))["source"] == f"file://{dataset / 'src'}"
    local.pop(MANIFEST_NAME)
    assert ours == local


def test_stopping_cancels_only_the_tasks_still_running(monkeypatch):
    """Force-cancelling a task whose result was already out crashed the driver (Ray 2.60):
    a run that failed or was interrupted cancels only what has not finished."""
    finished = ray.remote(lambda: 1).remote()
    running = ray.remote(lambda: time.sleep(600)).remote()
    assert ray.get(finished) == 1
    cancelled = []
    cancel = ray.cancel
    monkeypatch.setattr(ray, "cancel", lambda ref, **kw: (cancelled.append(ref), cancel(ref, **kw)))
    cancel_unfinished([finished, running])
    assert cancelled == [running]
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(running, timeout=60)


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'stexture\[ray\]'"):
        write_dataset_ray("src", "out", fast_settings())
