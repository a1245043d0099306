"""The writer's structure quantisation (format version 3, ``ShardSettings.structure_step``)
and the folders of versions 1 and 2, which still read as they did."""

import hashlib
import io
import json
import shutil

import numpy as np
import pytest
import torch
from pipeline_data import FAST_ARGS, fast_settings, make_image_folder
from pipeline_data import write_quietly as run
from shardfactory import as_format_version_1

from stexture.cli import main
from stexture.loader import make_loader
from stexture.shards import validate_dataset
from stexture.shards.format import (
    LEGACY_STRUCTURE_FIELD,
    MANIFEST_NAME,
    STRUCTURE_FIELD,
    decode_sample,
    iter_tar_samples,
    read_manifest,
    write_tar,
)
from stexture.shards.plan import ShardSettings


def decoded(out):
    """{key: DecodedSample} of every shard of a folder."""
    manifest = read_manifest(out)
    return {s.key: s for split in manifest.splits for path in manifest.shard_paths(split)
            for s in map(decode_sample, iter_tar_samples(path))}


def batches(out):
    loader = make_loader(out, k=0.5, p_conflict=1.0, batch_size=4, image_size=16,
                         with_info=True)
    return [(x, y, info["key"], info["texture_key"]) for x, y, info in loader]


def set_version(out, version, rewrite_sample=None):
    """Make ``out`` a folder of format ``version`` as that version wrote it: no
    ``structure_step`` in the settings, no offsets files (nor, for 1, a structure.dzst
    field: each sample
    passed through ``rewrite_sample``, the manifest's SHA-256 updated)."""
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["format_version"] = version
    del manifest["settings"]["structure_step"]
    # nor the sample offsets files, which came after version 2
    for entry in manifest.pop("sample_offsets", {}).values():
        (out / entry["name"]).unlink()
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            if rewrite_sample is not None:
                buffer = io.BytesIO()
                write_tar(buffer, [rewrite_sample(s)
                                   for s in iter_tar_samples(out / shard["name"])])
                (out / shard["name"]).write_bytes(buffer.getvalue())
                shard["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The same source written lossless (step 1) and with the default step."""
    root = tmp_path_factory.mktemp("steps")
    make_image_folder(root / "src", per_class=3)
    run(root / "src", root / "lossless", fast_settings(structure_step=1))
    run(root / "src", root / "default", fast_settings())
    return root


def test_the_writer_stores_the_structure_quantised_by_the_default_step(folders):
    step = ShardSettings.__dataclass_fields__["structure_step"].default
    assert step == 4
    manifest = read_manifest(folders / "default").raw
    assert manifest["format_version"] == 3 and manifest["settings"]["structure_step"] == step
    lossless, quantised = decoded(folders / "lossless"), decoded(folders / "default")
    assert lossless.keys() == quantised.keys() and len(lossless) >= 6
    for key, exact in lossless.items():
        sample = quantised[key]
        assert np.array_equal(sample.image, exact.image)  # the stored photo is untouched
        levels = exact.structure.astype(np.int64)
        expected = np.minimum((levels + step // 2) // step * step, 255)
        assert np.array_equal(sample.structure, expected)
        assert np.abs(sample.structure - levels).max() <= step // 2
        # the texture is still exactly image - structure of what is stored
        assert np.array_equal(sample.texture + sample.structure, sample.image)


def test_a_quantised_folder_validates_within_the_steps_bound(folders):
    manifest = read_manifest(folders / "default")
    result = validate_dataset(folders / "default", recompute=4)
    assert result.recomputed == sum(min(4, manifest.count(split)) for split in manifest.splits)
    assert result.problems == []


@pytest.mark.parametrize("version", [1, 2])
def test_folders_of_versions_1_and_2_read_pixel_identically(folders, tmp_path, version):
    out = tmp_path / f"v{version}"
    shutil.copytree(folders / "lossless", out)
    set_version(out, version, as_format_version_1 if version == 1 else None)
    first = next(iter_tar_samples(next(iter(read_manifest(out).shard_paths("train")))))
    assert (LEGACY_STRUCTURE_FIELD in first) == (version == 1) != (STRUCTURE_FIELD in first)
    old, exact = decoded(out), decoded(folders / "lossless")
    assert old.keys() == exact.keys()
    for key, sample in old.items():
        assert np.array_equal(sample.image, exact[key].image)
        assert np.array_equal(sample.structure, exact[key].structure)
    for (x, y, keys, texture_keys), (x0, y0, keys0, texture_keys0) in zip(
            batches(out), batches(folders / "lossless"), strict=True):
        assert keys == keys0 and texture_keys == texture_keys0
        assert torch.equal(x, x0) and torch.equal(y, y0)
    assert validate_dataset(out, recompute=2).problems == []


def test_the_command_line_sets_the_step_and_refuses_a_bad_one(tmp_path, capsys):
    make_image_folder(tmp_path / "src", per_class=1)
    out = tmp_path / "out"
    assert main(["decompose", str(tmp_path / "src"), str(out), *FAST_ARGS,
                 "--structure-step", "1"]) == 0
    assert read_manifest(out).raw["settings"]["structure_step"] == 1
    capsys.readouterr()
    for bad in ("0", "256"):
        assert main(["decompose", str(tmp_path / "src"), str(tmp_path / "bad"), *FAST_ARGS,
                     "--structure-step", bad]) == 2
        assert f"structure step must be an integer in 1..255 (1: lossless), got {bad}" in (
            capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("bad", [0, 256, 2.5, True, "4"])
def test_settings_refuse_a_step_that_is_not_an_integer_in_range(bad):
    with pytest.raises(ValueError, match=r"structure step must be an integer in 1\.\.255"):
        ShardSettings(structure_step=bad)
