"""Every fenced Python and shell block of README.md, pipelines/README.md and the
documentation's Markdown pages (docs/**/*.md) runs, as written (with the ``test-replace``
markers above it applied: tiny data, one epoch), as a plain script in a folder that looks
like the repository root on a tiny dataset. Blocks marked
``not-run`` (a GPU, a cluster, the network) are reported as skipped with their reason.
See ``readme_blocks.py`` for the markers."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from pipeline_data import texture_crop
from readme_blocks import extract_blocks

from stexture import cli

ROOT = Path(__file__).resolve().parent.parent
# every Markdown file whose code blocks a reader copies: the READMEs and the docs' pages
# (docs/README.md, how to build the docs, has no fenced blocks with a language)
DOCS = ("README.md", "pipelines/README.md",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")
                if not p.relative_to(ROOT / "docs").parts[0].startswith(("_", "auto_"))))
BLOCK_TIMEOUT_S = 600
# the classes of the tiny photo collection (the sweep example's train_fn builds 3 outputs)
CLASSES = ("brick", "grass", "gravel")
PER_CLASS = 5  # the default val fraction (0.1) leaves one image per class for val
SHARD_SIZE = 4


def _blocks():
    params = []
    for doc in DOCS:
        counts: dict[str, int] = {}
        for block in extract_blocks(ROOT / doc):
            if block.runner is None:
                continue
            slug = re.sub(r"[^a-z0-9]+", "-", block.heading.lower()).strip("-") or "top"
            counts[slug] = counts.get(slug, 0) + 1
            marks = []
            if block.not_run:
                marks.append(pytest.mark.skip(reason=f"not-run: {block.not_run}"))
            params.append(pytest.param(block, marks=marks,
                                       id=f"{doc}::{slug}-{counts[slug]}-{block.runner}"))
    return params


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A folder like the repository root for the examples: ``.venv`` and ``pipelines``
    (links), ``photos/<class>/`` (PER_CLASS crops of skimage textures per class),
    ``list.csv`` (a manifest of some of them), ``old-shards/`` (WebDataset tars) and
    ``shards/``, what the README's ``stexture decompose photos/ shards/ --workers 2`` writes
    (with its test-replace: 4 samples per shard, so a loader with 2 workers has a shard for
    each), so that the examples reading ``shards/`` find it and the one writing it resumes."""
    root = tmp_path_factory.mktemp("readme")
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (root / "pipelines").symlink_to(ROOT / "pipelines", target_is_directory=True)
    rows = []
    for name in CLASSES:
        for i in range(PER_CLASS):
            relative = f"photos/{name}/{name}_{i}.jpg"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(texture_crop(name, i, (64, 80))).save(root / relative, quality=95)
            rows.append((relative, name))
    with open(root / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows[::PER_CLASS], *rows[1::PER_CLASS]])
    assert cli.main(["decompose", str(root / "photos"), str(root / "shards"), "--shard-size",
                     str(SHARD_SIZE), "--quiet"]) == 0
    (root / "old-shards").mkdir()  # the val shard: one sample per class
    shutil.copy(root / "shards" / "val-000000.tar", root / "old-shards" / "val-000000.tar")
    return root


@pytest.mark.parametrize("block", _blocks())
def test_readme_block_runs(block, template, tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(template, work, symlinks=True)
    code = block.runnable_code()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "MPLBACKEND": "Agg",
        # the caches of wids and Hugging Face datasets stay in the test's folder
        "WIDS_CACHE": str(work / ".wids-cache"), "HF_HOME": str(work / ".hf")}
    if block.runner == "python":
        (work / "readme_block.py").write_text(code, encoding="utf-8")
        command = [sys.executable, "readme_block.py"]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, (
        f"{block.path.name}:{block.line} ({block.heading}) exited {done.returncode}\n"
        f"--- code\n{code}--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


def test_every_doc_has_blocks_and_markers_fit(tmp_path):
    """The extractor finds the blocks (the READMEs have some; every docs page's markers
    parse), and rejects markers that apply to nothing."""
    assert all(extract_blocks(ROOT / doc) for doc in DOCS[:2])
    assert sum(len(extract_blocks(ROOT / doc)) for doc in DOCS[2:]) > 0
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- not-run: needs a GPU -->\n\ntext\n```bash\necho hi\n```\n")
    with pytest.raises(ValueError, match="not directly above"):
        extract_blocks(doc)
    doc.write_text("# H\n<!-- test-replace: hi => there -->\n```bash\necho hi\n```\n"
                   "```\noutput\n```\n<!-- not-run: needs a GPU -->\n```python\nx = 1\n```\n")
    first, second = extract_blocks(doc)
    assert (first.heading, first.language, first.runnable_code()) == ("H", "bash",
                                                                      "echo there\n")
    assert second.not_run == "needs a GPU" and second.code == "x = 1\n"
    doc.write_text("<!-- test-replace: gone => there -->\n```bash\necho hi\n```\n")
    with pytest.raises(ValueError, match="not in the block any more"):
        extract_blocks(doc)[0].runnable_code()
