"""A `stexture decompose` process killed with SIGKILL part-way, then run again, gives
byte-identical shards and manifest to a run that was never interrupted."""

import os
import signal
import subprocess
import sys
import time

from pipeline_data import FAST_ARGS, make_image_folder

from stexture.cli import main


def files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_sigkill_then_resume_is_byte_identical(tmp_path):
    src = tmp_path / "src"
    make_image_folder(src, per_class=4)
    args = [*FAST_ARGS, "--shard-size", "1", "--workers", "1"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "stexture", "decompose", str(src),
                                str(killed), *args], stderr=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(killed.glob("*.tar")) and time.monotonic() < deadline:
            assert process.poll() is None, "the run ended before it wrote a shard"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    written = {p.name for p in killed.glob("*.tar")}
    assert 1 <= len(written) < 12, written
    assert not (killed / "manifest.json").exists()

    assert main(["decompose", str(src), str(killed), *args]) == 0
    reference = tmp_path / "reference"
    assert main(["decompose", str(src), str(reference), *args]) == 0
    assert files(killed) == files(reference)
    assert not list(killed.glob("*.partial"))


def test_two_worker_processes_write_the_same_bytes_as_one(tmp_path):
    from pipeline_data import fast_settings

    from stexture.shards.local import write_dataset

    make_image_folder(tmp_path / "src", per_class=3)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"workers{workers}"
        summary = write_dataset(tmp_path / "src", out, fast_settings(), workers=workers,
                                show_progress=False, log=lambda line: None)
        assert summary.written == 3 and summary.skipped == 0
        outs.append(files(out))
    assert outs[0] == outs[1]
