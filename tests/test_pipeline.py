"""`stexture decompose`: bad inputs, duplicates, splits, sources, settings checks, resume."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from pipeline_data import fast_settings, make_image_folder, texture_crop

from stexture.cli import main
from stexture.shards.format import (
    INDEX_NAME,
    MANIFEST_NAME,
    REJECTED_NAME,
    decode_sample,
    iter_tar_samples,
    read_manifest,
)
from stexture.shards.local import DecomposeInterrupted, write_dataset
from stexture.shards.plan import plan_dataset
from stexture.shards.write import PROGRESS_NAME


def run(src, out, settings=None, **kwargs):
    return write_dataset(src, out, settings or fast_settings(), show_progress=False,
                         log=lambda line: None, **kwargs)


def index_rows(out):
    with open(out / INDEX_NAME, newline="") as f:
        return list(csv.DictReader(f))


def rejected(out):
    return {r["path"]: r["reason"]
            for r in map(json.loads, (out / REJECTED_NAME).read_text().splitlines())}


def tree_bytes(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "contact-sheet.png"}


def add_bad_inputs(root):
    """The zoo of bad inputs beside good ones; returns {relative path: expected reason}."""
    chair = root / "chair"
    chair.mkdir()
    Image.fromarray(texture_crop("gravel", 7)).save(chair / "good.png")
    (chair / "empty.jpg").write_bytes(b"")
    noisy = Image.effect_noise((64, 64), 60).convert("RGB")
    noisy.save(chair / "whole.jpg")
    (chair / "truncated.jpg").write_bytes((chair / "whole.jpg").read_bytes()[:1500])
    (chair / "whole.jpg").unlink()
    (chair / "letter.png").write_text("Dear customer, this is not a picture.")
    Image.new("L", (400, 300)).save(chair / "bomb.png")  # 120,000 pixels > --max-pixels
    Image.new("RGB", (40, 8)).save(chair / "thin.png")  # shorter side 8 < --min-side 16
    (chair / "gone.png").symlink_to(root / "nowhere.png")  # cannot be opened
    (chair / "notes.txt").write_text("not an image extension: ignored")
    (root / "empty_class").mkdir()
    Image.fromarray(texture_crop("grass", 9)).save(root / "stray.png")
    (root / "brick" / "copy").mkdir()
    (root / "brick" / "copy" / "again.png").write_bytes((root / "brick/0/img_0.png").read_bytes())
    return {"chair/empty.jpg": "empty", "chair/truncated.jpg": "corrupt",
            "chair/letter.png": "not_an_image", "chair/bomb.png": "too_many_pixels",
            "chair/thin.png": "too_small", "chair/gone.png": "unreadable",
            "empty_class": "empty_class", "stray.png": "no_class",
            "brick/copy/again.png": "duplicate"}


def test_every_good_image_arrives_and_every_bad_one_is_named(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    good = make_image_folder(src)
    bad = add_bad_inputs(src)
    good["chair/good.png"] = "chair"
    summary = run(src, out, fast_settings(max_pixels=100_000))
    rows = index_rows(out)
    manifest = read_manifest(out)
    keys = {r["key"] for r in rows}
    assert keys == {path.replace("/", "_").replace(".", "_") for path in good}
    assert rejected(out) == bad
    assert summary.accepted == len(good) == manifest.count("train") + manifest.count("val")
    assert summary.rejected["duplicate"] == 1 and summary.ignored == 1
    assert manifest.classes == ["brick", "chair", "grass", "gravel"]
    samples = [decode_sample(s) for info in manifest.shards("train") + manifest.shards("val")
               for s in iter_tar_samples(out / info.name)]
    for sample in samples:
        assert manifest.classes[sample.cls] == good[sample.record["source"]]
        assert sample.image.shape == sample.structure.shape
        assert min(sample.image.shape[:2]) == 24
    assert not (out / PROGRESS_NAME).exists()


def test_split_is_stratified_deterministic_and_stable(tmp_path):
    make_image_folder(tmp_path, per_class=8)
    settings = fast_settings(val_fraction=0.25, shard_size=4)
    plan = plan_dataset(tmp_path, settings)
    assert plan.digest == plan_dataset(tmp_path, settings).digest
    counts = plan.split_counts()
    assert all(counts["val"][name] == 2 and counts["train"][name] == 6 for name in plan.classes)
    shard_classes = [{cls for _, cls in job.entries} for job in plan.jobs if job.split == "train"]
    assert any(len(classes) > 1 for classes in shard_classes), "shards should mix classes"
    val_keys = {item.key for job in plan.jobs if job.split == "val" for item, _ in job.entries}
    # a new image in one class leaves the other classes' splits alone
    Image.fromarray(texture_crop("brick", 30)).save(tmp_path / "brick" / "new.png")
    later = plan_dataset(tmp_path, settings)
    later_val = {item.key for job in later.jobs if job.split == "val" for item, _ in job.entries}
    assert {k for k in val_keys if not k.startswith("brick")} == {
        k for k in later_val if not k.startswith("brick")}


def test_csv_and_jsonl_manifests_are_sources(tmp_path):
    made = make_image_folder(tmp_path / "photos", per_class=2)
    with open(tmp_path / "list.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows((f"photos/{path}", label.upper()) for path, label in made.items())
        writer.writerow(["photos/missing.png", "BRICK"])
    (tmp_path / "list.jsonl").write_text("".join(
        json.dumps({"path": f"photos/{p}", "label": label}) + "\n" for p, label in made.items()))
    from_csv = plan_dataset(tmp_path / "list.csv", fast_settings())
    from_jsonl = plan_dataset(tmp_path / "list.jsonl", fast_settings())
    assert from_csv.classes == ["BRICK", "GRASS", "GRAVEL"]
    assert [(r.path, r.reason) for r in from_csv.rejected] == [("photos/missing.png",
                                                                "unreadable")]
    assert from_jsonl.classes == ["brick", "grass", "gravel"]
    assert sum(len(job.entries) for job in from_jsonl.jobs) == len(made)


def test_shards_are_a_source_and_keep_class_names(tmp_path):
    make_image_folder(tmp_path / "src", per_class=2)
    run(tmp_path / "src", tmp_path / "first", fast_settings(val_fraction=0.0))
    second = tmp_path / "second"
    run(tmp_path / "first", second, fast_settings(val_fraction=0.0, size=0))
    assert read_manifest(second).classes == ["brick", "grass", "gravel"]
    assert read_manifest(second).count("train") == 6
    sources = {decode_sample(s).record["source"]
               for info in read_manifest(second).shards("train")
               for s in iter_tar_samples(second / info.name)}
    assert all(s.startswith("train-00000") and ":" in s for s in sources)


def test_other_settings_on_an_existing_output_are_refused(tmp_path):
    make_image_folder(tmp_path / "src", per_class=2)
    out = tmp_path / "out"
    run(tmp_path / "src", out)
    with pytest.raises(ValueError, match=r"quality: 95 there, 80 now"):
        run(tmp_path / "src", out, fast_settings(quality=80))
    run(tmp_path / "src", out, fast_settings(quality=80), overwrite=True)
    assert read_manifest(out).raw["settings"]["quality"] == 80


@pytest.mark.parametrize("version", [1, 2])  # WebP structure; lossless delta-zstd structure
def test_a_folder_of_another_format_version_is_not_resumed(tmp_path, version):
    make_image_folder(tmp_path / "src", per_class=2)
    out = tmp_path / "out"
    run(tmp_path / "src", out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = version
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError,
                       match=f"format version {version}; this stexture writes version 3"):
        run(tmp_path / "src", out)
    run(tmp_path / "src", out, overwrite=True)
    assert read_manifest(out).raw["format_version"] == 3


def test_a_damaged_shard_is_written_again_on_resume(tmp_path):
    make_image_folder(tmp_path / "src", per_class=2)
    out = tmp_path / "out"
    run(tmp_path / "src", out)
    before = tree_bytes(out)
    shard = out / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-100])
    summary = run(tmp_path / "src", out)
    assert summary.written == 1
    assert tree_bytes(out) == before


def test_ctrl_c_leaves_no_partial_shard_and_resumes(tmp_path, monkeypatch):
    import stexture.shards.local as local

    make_image_folder(tmp_path / "src", per_class=2)
    reference = tmp_path / "reference"
    run(tmp_path / "src", reference)
    calls = []

    def interrupted_on_second_shard(job, settings, out, progress=None):
        calls.append(job.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return local.write_shard.__wrapped__(job, settings, out, progress)

    interrupted_on_second_shard.__wrapped__ = local.write_shard
    out = tmp_path / "out"
    monkeypatch.setattr(local, "write_shard", interrupted_on_second_shard)
    with pytest.raises(DecomposeInterrupted, match="run the same command again"):
        run(tmp_path / "src", out)
    monkeypatch.undo()
    assert not list(out.glob("*.partial")) and not (out / MANIFEST_NAME).exists()
    assert len(json.loads((out / PROGRESS_NAME).read_text())["done"]) == 1
    assert run(tmp_path / "src", out).skipped == 1
    assert tree_bytes(out) == tree_bytes(reference)


def test_cli_decompose_prints_a_summary(tmp_path, capsys):
    from pipeline_data import FAST_ARGS

    make_image_folder(tmp_path / "src", per_class=2)
    assert main(["decompose", str(tmp_path / "src"), str(tmp_path / "out"), *FAST_ARGS]) == 0
    text = capsys.readouterr().out
    assert "6 samples" in text and "gravel" in text
    assert np.isclose(read_manifest(tmp_path / "out").raw["settings"]["params"]["tol"], 0.1)


def test_an_output_inside_the_source_is_refused(tmp_path):
    make_image_folder(tmp_path, per_class=1)
    with pytest.raises(ValueError, match="inside the source folder"):
        run(tmp_path, tmp_path / "brick" / "shards")
