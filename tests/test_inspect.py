"""`stexture inspect`: a clean folder passes, every kind of damage is named, exit codes."""

import json

import numpy as np
import pytest
from PIL import Image
from pipeline_data import fast_settings, make_image_folder
from shardfactory import make_shard_dir

from stexture.cli import main
from stexture.shards.format import INDEX_NAME, MANIFEST_NAME
from stexture.shards.local import write_dataset
from stexture.shards.validate import validate_dataset


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    make_image_folder(root / "src", per_class=3)
    write_dataset(root / "src", root / "out", fast_settings(), show_progress=False,
                  log=lambda line: None)
    return root / "out"


@pytest.fixture
def copy_of(written, tmp_path):
    import shutil

    return shutil.copytree(written, tmp_path / "copy")


def test_a_clean_folder_passes_with_table_and_sheet(written, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["inspect", str(written), "--sheet", str(sheet), "--per-class", "2"]) == 0
    out = capsys.readouterr().out
    assert "consistent" in out and "matched on" in out
    assert "brick" in out and "total" in out
    pixels = np.asarray(Image.open(sheet))
    assert pixels.ndim == 3 and pixels.shape[0] > 6 * 24  # 3 classes x 2 rows


def test_the_recomputed_structure_matches(written):
    result = validate_dataset(written, recompute=3)
    assert result.ok and result.recomputed == 6  # 3 per split


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_shard_fails_and_is_named(copy_of, capsys, damage):
    shard = copy_of / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[2000:2010] = bytes(b ^ 0xFF for b in data[2000:2010])
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[: len(data) // 2]))
    else:
        shard.unlink()
    assert main(["inspect", str(copy_of), "--per-class", "0", "--recompute", "0"]) == 1
    assert "train-000001.tar" in capsys.readouterr().err


def test_a_manifest_that_lies_about_counts_fails(copy_of):
    manifest = json.loads((copy_of / MANIFEST_NAME).read_text())
    manifest["splits"]["train"]["shards"][0]["count"] += 1
    (copy_of / MANIFEST_NAME).write_text(json.dumps(manifest))
    problems = validate_dataset(copy_of, recompute=0).problems
    assert any("the manifest says" in p for p in problems)


def test_a_wrong_index_row_fails(copy_of):
    lines = (copy_of / INDEX_NAME).read_text().splitlines()
    key, split, shard, cls = lines[1].split(",")
    lines[1] = ",".join([key, split, shard, str((int(cls) + 1) % 3)])
    (copy_of / INDEX_NAME).write_text("\n".join(lines) + "\n")
    problems = validate_dataset(copy_of, recompute=0).problems
    assert any(INDEX_NAME in p and key in p for p in problems)


def test_no_manifest_is_an_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_hand_made_loader_fixtures_validate(tmp_path):
    # recompute=0: the fixture's layers are hand-made, not its manifest's method's output
    result = validate_dataset(make_shard_dir(tmp_path / "shards"), recompute=0)
    assert result.ok, result.problems
    assert result.recomputed == 0
