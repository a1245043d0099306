"""The sample offsets file (issue 27): written by decompose, equal to an independent scan of
the shards, read by the loaders instead of the shards' headers, resumed byte for byte,
checked against the shards when they are first read, and optional (older folders load by
their headers)."""

import gc
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_data import make_image_folder, write_quietly
from shardfactory import make_shard_dir

from stexture import make_eval_loader, make_loader
from stexture.loader.index import locate_split, manifest_of
from stexture.shards import engine
from stexture.shards.format import (
    MANIFEST_NAME,
    OFFSETS_MANIFEST_KEY,
    SampleOffsetsError,
    encode_image,
    encode_sample,
    offsets_name,
    write_tar,
)
from stexture.shards.format.offsets import ShardCheck, decode_offsets, scan_tar_bytes
from stexture.shards.output import write_sample_offsets


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A folder written by decompose (12 images, 3 a shard) and the images it came from."""
    root = tmp_path_factory.mktemp("offsets")
    make_image_folder(root / "src", per_class=4)
    write_quietly(root / "src", root / "out")
    return root


def copy_of(folder, to):
    shutil.copytree(folder, to)
    return to


def manifest_json(folder):
    return json.loads((folder / MANIFEST_NAME).read_text())


def save_manifest(folder, manifest):
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))


def without_offsets(folder):
    """``folder`` as stexture wrote it before offsets files existed."""
    manifest = manifest_json(folder)
    for entry in manifest.pop(OFFSETS_MANIFEST_KEY).values():
        (folder / entry["name"]).unlink()
    save_manifest(folder, manifest)
    return folder


def with_offsets(folder):
    """``folder`` (made without offsets) with them added, as decompose writes them."""
    manifest = manifest_json(folder)
    entries = {p.name: scan_tar_bytes(p.name, p.read_bytes()) for p in folder.glob("*.tar")}
    manifest[OFFSETS_MANIFEST_KEY] = write_sample_offsets(folder, manifest, entries)
    save_manifest(folder, manifest)
    return folder


def tarfile_scan(path):
    """(key, {field: (offset, size)}, class) of each sample, read with the standard library's
    tarfile (not stexture's tar reader)."""
    samples = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, field = member.name.partition(".")
            fields = samples.setdefault(key, [{}, None])[0]
            fields[field] = (member.offset_data, member.size)
            if field == "cls":
                samples[key][1] = int(tar.extractfile(member).read())
    return [(key, fields, cls) for key, (fields, cls) in samples.items()]


def test_the_offsets_file_equals_an_independent_scan_of_the_shards(written):
    out = written / "out"
    manifest = manifest_json(out)
    index_cls = {line.split(",")[0]: int(line.split(",")[3])
                 for line in (out / "index.csv").read_text().splitlines()[1:]}
    for split, entry in manifest["splits"].items():
        record = manifest[OFFSETS_MANIFEST_KEY][split]
        data = (out / record["name"]).read_bytes()
        assert record == {"name": offsets_name(split),
                          "sha256": hashlib.sha256(data).hexdigest()}
        shards = decode_offsets(data, split, record["name"])
        assert [s.name for s in shards] == [s["name"] for s in entry["shards"]]
        for shard, listed in zip(shards, entry["shards"], strict=True):
            path = out / shard.name
            assert (shard.size, shard.sha256) == (
                path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            assert shard.sha256 == listed["sha256"]
            assert [(s.key, s.fields, s.cls) for s in shard.samples] == tarfile_scan(path)
            assert all(s.cls == index_cls[s.key] for s in shard.samples)
            assert len(shard.samples) == listed["count"] == 3
            # every field of the sample: the image, the structure, the class, the record
            assert all(set(s.fields) == {"jpg", "structure.dzst", "cls", "json"}
                       for s in shard.samples)


def batches(loader):
    return [(x.clone(), y.clone()) for x, y, *_ in loader]


def train_batches(folder, workers):
    loader = make_loader(folder, k=0.6, batch_size=4, image_size=16, p_conflict=0.5, seed=3,
                         num_workers=workers)
    return batches(loader)


def same(a, b):
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb)
                                    for (xa, ya), (xb, yb) in zip(a, b, strict=True))


def test_loaders_give_the_same_pixels_and_labels_with_and_without_the_file(written,
                                                                              tmp_path):
    out = written / "out"
    older = without_offsets(copy_of(out, tmp_path / "older"))
    assert located_by_file(out) and not located_by_file(older)
    reference = train_batches(older, 0)
    assert len(reference) == 3 and reference[0][0].shape == (4, 3, 16, 16)
    assert same(train_batches(out, 0), reference)
    assert same(train_batches(out, 2), reference)
    assert same(train_batches(older, 2), reference)
    for workers in (0, 2):
        evaluated = [batches(make_eval_loader(f, batch_size=2, image_size=16,
                                              num_workers=workers)) for f in (out, older)]
        assert same(*evaluated) and len(evaluated[0]) == 2


def located_by_file(folder):
    """Whether the loaders locate the train split of ``folder`` by its offsets file."""
    return all(s.check is not None for s in locate_split(manifest_of(folder), "train"))


def test_an_interrupted_decompose_resumes_to_the_same_offsets_file(written, tmp_path,
                                                                   monkeypatch):
    calls = []
    original = engine.record_shard

    def interrupt_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "record_shard", interrupt_after_two)
    out = tmp_path / "out"
    with pytest.raises(engine.DecomposeInterrupted):
        write_quietly(written / "src", out)
    assert not (out / MANIFEST_NAME).exists() and not (out / offsets_name("train")).exists()
    monkeypatch.undo()
    summary = write_quietly(written / "src", out)
    assert summary.skipped == 2  # these two shards' offsets were read back from them
    for name in [offsets_name("train"), offsets_name("val"), MANIFEST_NAME]:
        assert (out / name).read_bytes() == (written / "out" / name).read_bytes(), name


def rewrite_shard_reversed(path):
    """The shard with its samples in the opposite order: the same bytes in other places."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(len(members) - 4, -1, -4):
            for member, data in members[i:i + 4]:
                tar.addfile(member, io.BytesIO(data))


def first_batch(folder, workers=0):
    return next(iter(make_loader(folder, k=1.0, batch_size=2, image_size=16,
                                 num_workers=workers)))


def test_a_shard_changed_after_its_offsets_stops_the_loader_naming_it(written, tmp_path):
    folder = copy_of(written / "out", tmp_path / "changed")
    shard = folder / "train-000001.tar"
    size = shard.stat().st_size
    rewrite_shard_reversed(shard)
    assert shard.stat().st_size == size  # the same size: only the headers tell
    for workers in (0, 2):
        with pytest.raises(SampleOffsetsError, match="train-000001.tar does not match"):
            for _ in make_loader(folder, k=1.0, batch_size=2, image_size=16, seed=0,
                                 num_workers=workers):
                pass
    with shard.open("ab") as f:  # a size the offsets do not describe
        f.write(b"\0" * 512)
    with pytest.raises(SampleOffsetsError, match=rf"train-000001.tar .* has {size + 512} "
                                                 rf"bytes, the offsets describe {size}"):
        for _ in make_eval_loader(folder, split="train", batch_size=2, image_size=16):
            pass


def test_an_edited_offsets_file_is_refused_or_caught_at_the_shard(written, tmp_path):
    folder = copy_of(written / "out", tmp_path / "edited")
    path = folder / offsets_name("train")
    document = json.loads(path.read_text())
    document["shards"][0]["members"][0] += 512  # the first sample's image moved a block
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"train.offsets.json is not the sample offsets file "
                                         r"the manifest records"):
        first_batch(folder)
    manifest = manifest_json(folder)  # the manifest made to agree: the shard check catches it
    manifest[OFFSETS_MANIFEST_KEY]["train"]["sha256"] = hashlib.sha256(
        path.read_bytes()).hexdigest()
    save_manifest(folder, manifest)
    with pytest.raises(SampleOffsetsError, match=r"shard .*train-000000.tar does not match "
                                                 r"its sample offsets in .*train.offsets.json"):
        for _ in make_eval_loader(folder, split="train", batch_size=2, image_size=16):
            pass


def test_locate_split_keeps_its_checks_on_the_offsets_path(written, tmp_path):
    folder = copy_of(written / "out", tmp_path / "checks")
    manifest = manifest_json(folder)
    with pytest.raises(ValueError, match="not in split 'train'"):
        locate_split(manifest_of(folder), "train", keys=["no_such_key"])
    manifest["classes"] = manifest["classes"][:2]  # one class fewer than the samples use
    save_manifest(folder, manifest)
    with pytest.raises(ValueError, match="has class 2, outside the manifest's 2 classes"):
        locate_split(manifest_of(folder), "train")
    manifest = manifest_json(written / "out")
    manifest["splits"]["train"]["shards"][1]["count"] = 4
    save_manifest(folder, manifest)
    with pytest.raises(ValueError, match=r"train-000001.tar holds 3 samples according to "
                                         r".*train.offsets.json but the manifest says 4"):
        locate_split(manifest_of(folder), "train")


def test_a_key_in_two_shards_is_refused_on_the_offsets_path(tmp_path):
    folder = make_shard_dir(tmp_path / "twice", per_class=2, shard_size=2)
    first, second = sorted(folder.glob("train-*.tar"))[:2]
    shutil.copy(first, second)
    manifest = manifest_json(folder)
    for shard in manifest["splits"]["train"]["shards"]:
        shard["sha256"] = hashlib.sha256((folder / shard["name"]).read_bytes()).hexdigest()
    save_manifest(folder, manifest)
    with_offsets(folder)
    with pytest.raises(ValueError, match=r"is in two shards, .*train-000000.tar and "
                                         r".*train-000001.tar"):
        locate_split(manifest_of(folder), "train")


def test_older_folders_load_by_their_headers(tmp_path):
    older = make_shard_dir(tmp_path / "older")  # as written before offsets files existed
    assert OFFSETS_MANIFEST_KEY not in manifest_json(older)
    indexed = with_offsets(copy_of(older, tmp_path / "indexed"))
    by_headers = locate_split(manifest_of(older), "train")
    by_file = locate_split(manifest_of(indexed), "train")
    assert [(s.key, s.cls, s.fields) for s in by_headers] == [
        (s.key, s.cls, s.fields) for s in by_file]
    assert all(s.check is None for s in by_headers)
    assert same(train_batches(older, 0), train_batches(indexed, 0))
    # named by the manifest but gone: the headers are read, with a warning that says so
    (indexed / offsets_name("train")).unlink()
    with pytest.warns(UserWarning, match="train.offsets.json, which the manifest names, is "
                                         "missing: reading the headers"):
        again = locate_split(manifest_of(indexed), "train")
    assert [(s.key, s.fields) for s in again] == [(s.key, s.fields) for s in by_headers]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        locate_split(manifest_of(older), "train")  # an older folder is no reason to warn


def test_an_offsets_file_or_manifest_that_is_no_regular_file_is_refused(written, tmp_path):
    # a FIFO by the offsets file's name is not a missing file: refused, named, before a
    # byte is read (a read would block), rather than quietly falling back to the headers
    folder = copy_of(written / "out", tmp_path / "fifo")
    offsets = folder / offsets_name("train")
    offsets.unlink()
    os.mkfifo(offsets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "missing: reading the headers" warning either
        with pytest.raises(OSError, match=r"train.offsets.json: a FIFO, not a regular file"):
            locate_split(manifest_of(folder), "train")
    offsets.unlink()
    offsets.mkdir()
    with pytest.raises(OSError, match=r"train.offsets.json: a folder, not a regular file"):
        locate_split(manifest_of(folder), "train")
    # the manifest read the same way: a FIFO is named, a missing one said to be missing
    manifest = folder / MANIFEST_NAME
    manifest.unlink()
    with pytest.raises(FileNotFoundError, match=r"no manifest.json in .*fifo: is it a "
                                                r"directory written by `stexture decompose`"):
        manifest_of(folder)
    os.mkfifo(manifest)
    with pytest.raises(OSError, match=r"manifest.json: a FIFO, not a regular file"):
        manifest_of(folder)


def test_long_and_non_ascii_keys_are_located_and_checked(tmp_path):
    image = encode_image(np.full((8, 8, 3), 90, np.uint8), "png")
    keys = ["k" * 150, "stühl_öl", "plain"]  # a PAX name (long; not ASCII) and a plain one
    samples = [encode_sample(key, image, "png", np.full((8, 8, 3), 80, np.uint8), i, {})
               for i, key in enumerate(keys)]
    path = tmp_path / "train-000000.tar"
    with path.open("wb") as f:
        write_tar(f, samples)
    entries = scan_tar_bytes(path.name, path.read_bytes())
    assert [(s.key, s.fields, s.cls) for s in entries.samples] == tarfile_scan(path)
    for last in (entries.samples[1], entries.samples[0]):  # checked as a first and last
        check = ShardCheck.of(type(entries)(path.name, entries.size, entries.sha256,
                                            (entries.samples[2], last)), "offsets")
        with path.open("rb") as f:
            check.verify(f.fileno(), str(path))
    wrong = ShardCheck.of(type(entries)(path.name, entries.size, entries.sha256,
                                        (entries.samples[1]._replace(key="stühl_ol"),)), "o")
    with path.open("rb") as f, pytest.raises(SampleOffsetsError, match="stühl_ol.png"):
        wrong.verify(f.fileno(), str(path))


def odd_first_shard(folder):
    """``folder`` with its first train shard rewritten (as many samples, the same classes):
    one sample without its ``json`` record, one with its members in reverse order."""
    manifest = manifest_json(folder)
    listed = manifest["splits"]["train"]["shards"][0]
    path = folder / listed["name"]
    with tarfile.open(path) as tar:  # the classes the manifest's count and index rely on
        classes = [int(tar.extractfile(m).read()) for m in tar if m.name.endswith(".cls")]
    image = encode_image(np.full((8, 8, 3), 90, np.uint8), "png")
    samples = [encode_sample(f"odd_{i}", image, "png", np.full((8, 8, 3), 80, np.uint8), c, {})
               for i, c in enumerate(classes)]
    del samples[1]["json"]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:  # not write_tar: its order
        for i, sample in enumerate(samples):
            key = sample.pop("__key__")
            for field, payload in (reversed(sample.items()) if i == 2 else sample.items()):
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    listed["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    save_manifest(folder, manifest)
    return folder


def test_the_index_from_the_file_equals_the_header_scan_element_by_element(tmp_path):
    older = odd_first_shard(make_shard_dir(tmp_path / "older", per_class=4, shard_size=5))
    indexed = with_offsets(copy_of(older, tmp_path / "indexed"))
    by_headers = locate_split(manifest_of(older), "train")
    by_file = locate_split(manifest_of(indexed), "train")
    scanned = [(key, list(fields.items()), cls) for p in sorted(older.glob("train-*.tar"))
               for key, fields, cls in tarfile_scan(p)]  # independent: the standard library
    assert len(by_headers) == len(by_file) == len(scanned) == 12
    for a, b, (key, fields, cls) in zip(by_headers, by_file, scanned, strict=True):
        # the same sample, fields in tar order (a dict compares without order: the lists do)
        assert (a.key, a.cls, list(a.fields.items())) == (b.key, b.cls, list(b.fields.items()))
        assert (a.key, a.cls, list(a.fields.items())) == (key, cls, fields)
        assert (a.path, b.path) == (str(older / Path(a.path).name),
                                    str(indexed / Path(a.path).name))
        assert a.check is None and b.check is not None
    assert "json" not in by_file[1].fields and list(by_file[2].fields)[0] == "json"
    # the sequence as the loaders use it: negative items, slices, selection, pickling
    assert by_file[-1] == list(by_file)[-1] and list(by_file[3:9:2]) == list(by_file)[3:9:2]
    with pytest.raises(IndexError):
        by_file[12]
    assert by_file.sample_paths() == [s.path for s in by_file]
    chosen = locate_split(manifest_of(indexed), "train", keys=[scanned[7][0], scanned[2][0]])
    assert list(chosen) == [by_file[2], by_file[7]]  # manifest order
    again = pickle.loads(pickle.dumps(by_file))
    assert list(again) == list(by_file)
    assert [s.check for s in again] == [s.check for s in by_file]


def test_the_index_makes_no_object_per_sample(tmp_path):
    """Located from the offsets file, a split's index is a few arrays: building it makes no
    object per sample for the garbage collector to track (in a process that imported torch,
    tens of thousands of them bring a full collection that costs more than the index)."""
    folder = with_offsets(make_shard_dir(tmp_path / "many", per_class=100, val_per_class=1,
                                         size=8, shard_size=50))
    manifest = manifest_of(folder)
    gc.collect()
    gc.disable()  # this test's own process: to count, not to speed anything
    try:
        before = gc.get_count()[0]
        index = locate_split(manifest, "train")
        made = gc.get_count()[0] - before  # tracked objects made and still alive
    finally:
        gc.enable()
    assert len(index) == 300 and index[0].check is not None
    assert made < 100, made  # a header scan's index holds ~6 per sample
