"""`stexture --help` and `stexture inspect` do not import torch (issue 21): each runs in a
fresh interpreter, which then reports what it imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shardfactory import make_shard_dir

# what each command imports is the fresh interpreter's sys.modules after main() returns
_PROBE = """
import json, sys
from stexture.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
heavy = ("torch", "numba", "cv2", "scipy", "skimage")
print(json.dumps({{"code": code, "loaded": sorted(m for m in heavy if m in sys.modules),
                   "commands": sorted(m for m in sys.modules
                                      if m.startswith("stexture.commands."))}}))
"""


def _imports_of(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_imports_no_command_and_none_of_the_heavy_libraries():
    result = _imports_of(["--help"])
    assert result["code"] == 0
    assert result["loaded"] == []
    assert result["commands"] == []


def test_inspect_does_not_import_torch(tmp_path: Path):
    shards = make_shard_dir(tmp_path / "shards")
    result = _imports_of(["inspect", str(shards), "--recompute", "0", "--per-class", "1",
                          "--sheet", str(tmp_path / "sheet.png")])
    assert result["code"] == 0
    assert (tmp_path / "sheet.png").is_file()  # the whole command ran
    assert "torch" not in result["loaded"]
    assert result["commands"] == ["stexture.commands._output",
                                  "stexture.commands._storage_args",
                                  "stexture.commands.inspect"]


def test_a_command_s_help_imports_only_that_command():
    result = _imports_of(["synth", "--help"])
    assert result["code"] == 0
    assert "torch" not in result["loaded"]
    assert result["commands"] == ["stexture.commands.synth"]
