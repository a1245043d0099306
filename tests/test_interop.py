"""webdataset, wids and Hugging Face ``datasets`` read a folder written by ``stexture
decompose`` and get the same image, structure, texture and class name per sample as
``stexture.shards`` decodes (pixels compared exactly)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pipeline_data import FAST_ARGS, make_image_folder

from stexture import cli
from stexture.shards import (
    add_texture,
    decode_sample,
    hf_dataset,
    layer_dict,
    read_manifest,
    wds_handlers,
)
from stexture.shards.format import MANIFEST_NAME, iter_tar_samples
from stexture.shards.interop import wids_index_name


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A folder of 3 classes x 4 images, train and val splits, 2 samples per shard."""
    root = tmp_path_factory.mktemp("interop")
    make_image_folder(root / "photos", per_class=4)
    out = root / "shards"
    code = cli.main(["decompose", str(root / "photos"), str(out), *FAST_ARGS,
                     "--shard-size", "2", "--val-fraction", "0.25"])
    assert code == 0
    return out


def reference(shards, split):
    """What stexture.shards decodes: key -> (image, structure, texture, class name)."""
    manifest = read_manifest(shards)
    samples = {}
    for path in manifest.shard_paths(split):
        for raw in iter_tar_samples(path):
            s = decode_sample(raw)
            samples[s.key] = (s.image, s.structure, s.texture, manifest.classes[s.cls])
    assert len(samples) == manifest.count(split) > 0
    return samples


def assert_same(got, want):
    """``got``: key -> (image, structure, texture, class name) read by a client."""
    assert sorted(got) == sorted(want)
    for key, (image, structure, texture, class_name) in got.items():
        w_image, w_structure, w_texture, w_name = want[key]
        for name, a, b in (("image", image, w_image), ("structure", structure, w_structure),
                           ("texture", texture, w_texture)):
            a = np.asarray(a)
            assert a.dtype == b.dtype and a.shape == b.shape, (key, name)
            np.testing.assert_array_equal(a, b, err_msg=f"{key} {name}")
        assert class_name == w_name, key
        # the texture is the residual of the two decoded layers, whoever decoded them
        np.testing.assert_array_equal(
            np.asarray(texture), np.asarray(image, np.int16) - np.asarray(structure, np.int16))


@pytest.mark.parametrize("split", ["train", "val"])
def test_webdataset_decodes_with_stextures_handlers(shards, split):
    wds = pytest.importorskip("webdataset")
    urls = read_manifest(shards).shard_paths(split)
    dataset = (wds.WebDataset(urls, shardshuffle=False, empty_check=False)
               .decode(*wds_handlers()).map(add_texture))
    got = {s["__key__"]: (s["jpg"], s["structure.dzst"], s["texture"], s["json"]["class_name"])
           for s in dataset}
    classes = read_manifest(shards).classes
    assert all(isinstance(s["cls"], int) for s in
               wds.WebDataset(urls, shardshuffle=False).decode(*wds_handlers()))
    assert_same(got, reference(shards, split))
    assert {name for *_, name in got.values()} <= set(classes)


def test_webdataset_raw_samples_through_layer_dict(shards):
    wds = pytest.importorskip("webdataset")
    urls = read_manifest(shards).shard_paths("train")
    got = {s["__key__"]: (s["image"], s["structure"], s["texture"], s["class_name"])
           for s in wds.WebDataset(urls, shardshuffle=False).map(layer_dict)}
    assert_same(got, reference(shards, "train"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_wids_opens_the_index_the_writer_put_beside_the_manifest(shards, split, tmp_path):
    wids = pytest.importorskip("wids")
    index = shards / wids_index_name(split)
    description = json.loads(index.read_text())
    manifest = read_manifest(shards)
    assert description["wids_version"] == 1
    assert [(s["url"], s["nsamples"]) for s in description["shardlist"]] == [
        (f"{s.name}#sha256={s.sha256[:16]}", s.count) for s in manifest.shards(split)]
    # cache_dir: wids copies shards into a cache; keep the copies in this test's folder
    dataset = wids.ShardListDataset(str(index), cache_dir=str(tmp_path / "wids-cache"),
                                    transformations=layer_dict)
    assert len(dataset) == manifest.count(split)
    samples = [dataset[i] for i in range(len(dataset))]
    got = {s["__key__"]: (s["image"], s["structure"], s["texture"], s["class_name"])
           for s in samples}
    assert_same(got, reference(shards, split))
    assert all(s["cls"] == manifest.classes.index(s["class_name"]) for s in samples)


def test_hugging_face_datasets_gets_layers_and_a_class_label(shards, tmp_path):
    datasets = pytest.importorskip("datasets")
    dataset = hf_dataset(shards, "train", cache_dir=tmp_path / "hf-cache")
    manifest = read_manifest(shards)
    label = dataset.features["cls"]
    assert isinstance(label, datasets.ClassLabel) and label.names == manifest.classes
    assert len(dataset) == manifest.count("train")
    rows = [dataset[i] for i in range(len(dataset))]
    got = {r["__key__"]: (r["image"], r["structure"], r["texture"], label.int2str(r["cls"]))
           for r in rows}
    assert_same(got, reference(shards, "train"))
    assert all(r["class_name"] == label.int2str(r["cls"]) for r in rows)
    batch = dataset[:3]  # batched access decodes too
    np.testing.assert_array_equal(batch["image"][1], rows[1]["image"])


def test_hf_dataset_names_a_missing_folder_and_split(shards, tmp_path):
    with pytest.raises(FileNotFoundError, match=MANIFEST_NAME):
        hf_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split 'test'"):
        hf_dataset(shards, "test")


def test_add_texture_refuses_an_image_decoded_to_float(shards):
    raw = next(iter_tar_samples(read_manifest(shards).shard_paths("train")[0]))
    sample = decode_sample(raw)
    with pytest.raises(ValueError, match="uint8"):
        add_texture({"__key__": sample.key, "jpg": sample.image / 255.0,
                     "structure.dzst": sample.structure})
    with pytest.raises(ValueError, match="no image field"):
        add_texture({"__key__": sample.key, "structure.dzst": sample.structure})


def test_overwrite_removes_a_wids_index_the_new_run_does_not_write(shards, tmp_path):
    """The index is the writer's own file: --overwrite removes it with the rest of what
    decompose wrote, and a split without shards gets none."""
    out = tmp_path / "again"
    photos = shards.parent / "photos"
    assert cli.main(["decompose", str(photos), str(out), *FAST_ARGS,
                     "--val-fraction", "0.25"]) == 0
    assert (out / wids_index_name("val")).is_file()
    assert cli.main(["decompose", str(photos), str(out), *FAST_ARGS, "--val-fraction", "0",
                     "--overwrite"]) == 0
    assert (out / wids_index_name("train")).is_file()
    assert not (out / wids_index_name("val")).exists()
    assert read_manifest(out).count("train") == 12
