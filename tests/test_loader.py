"""make_loader / make_eval_loader on hand-made shards whose layers are known exactly."""

from __future__ import annotations

import copy
import io
import json
import tarfile
import warnings

import numpy as np
import pytest
import shardfactory
import torch
from PIL import Image
from shardfactory import make_shard_dir

from stexture import CudaUnavailableError
from stexture.loader import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptSampleWarning,
    center_crop_box,
    crop_layers,
    make_eval_loader,
    make_loader,
    random_resized_crop_box,
)
from stexture.shards.format import (
    LEGACY_STRUCTURE_FIELD,
    MANIFEST_NAME,
    STRUCTURE_FIELD,
    decode_rgb,
    decode_sample,
    encode_image,
    iter_tar_samples,
    read_manifest,
)

SIZE = 24
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # x un-normalised, in [0, 1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """3 classes, 24 train samples in 6 shards of 4, 9 val samples in 3 shards."""
    return make_shard_dir(tmp_path_factory.mktemp("shards"), per_class=8, val_per_class=3,
                          size=SIZE, shard_size=4)


def stored_layers(root, split="train"):
    """key -> (image, structure, cls) decoded with the format module (the reference)."""
    layers = {}
    for path in sorted(root.glob(f"{split}-*.tar")):
        with tarfile.open(path) as tar:
            raw: dict[str, dict] = {}
            for m in tar.getmembers():
                key, _, field = m.name.partition(".")
                raw.setdefault(key, {"__key__": key})[field] = tar.extractfile(m).read()
        for key, sample in raw.items():
            d = decode_sample(sample)
            layers[key] = (d.image, d.structure, d.cls)
    return layers


def epoch_keys(loader):
    return [key for _, _, info in loader for key in info["key"]]


def as_float(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float()


# --------------------------------------------------------------------------- batches


def test_batches_have_the_contract_shapes_and_rows_sum_to_one(shards):
    loader = make_loader(shards, k=0.6, batch_size=5, image_size=16, with_info=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 5  # 24 samples: 4 x 5 + 4
    for x, y, info in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 16, 16) and x.is_contiguous()
        assert y.dtype == torch.float32 and y.shape == (len(x), 3)
        torch.testing.assert_close(y.sum(dim=1), torch.ones(len(x)), rtol=0, atol=1e-6)
        conflict = info["is_conflict"]
        a, b = info["structure_cls"], info["texture_cls"]
        assert torch.equal(a[~conflict], b[~conflict])
        rows = torch.arange(len(x))
        for cls, weight in ((a, 0.6), (b, 0.4)):
            picked = y[rows[conflict & (a != b)], cls[conflict & (a != b)]]
            assert torch.equal(picked, torch.full_like(picked, weight))


def test_x_is_normalised_with_mean_and_std(shards):
    raw = next(iter(make_loader(shards, k=0.5, batch_size=8, image_size=16, **RAW)))[0]
    norm = next(iter(make_loader(shards, k=0.5, batch_size=8, image_size=16)))[0]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm, (raw - mean) / std)


def test_conflict_fraction_of_every_full_batch_is_p_conflict(shards):
    loader = make_loader(shards, k=0.5, batch_size=8, p_conflict=0.25, image_size=8,
                         with_info=True)
    counts = [int(info["is_conflict"].sum()) for _, _, info in loader]
    assert counts == [2, 2, 2]
    assert loader.conflict_pairs == 6 and loader.same_class_pairs == 0


def test_composed_x_is_structure_a_plus_texture_b_of_the_stored_layers(shards):
    # full-image crop (min_scale=1, square images, image_size = stored size): only the
    # flip remains random, and the stored layers give the expected x exactly
    stored = stored_layers(shards)
    loader = make_loader(shards, k=0.5, batch_size=6, image_size=SIZE, min_scale=1.0,
                         p_conflict=0.5, with_info=True, **RAW)
    seen = 0
    for x, _, info in loader:
        for i, (key_a, key_b) in enumerate(zip(info["key"], info["texture_key"], strict=True)):
            image_b, structure_b, cls_b = stored[key_b]
            structure_a = as_float(stored[key_a][1]) / 255
            texture_b = (as_float(image_b) - as_float(structure_b)) / 255
            candidates = [(structure_a + t).clamp(0, 1) for t in (texture_b, texture_b.flip(2))]
            assert any(torch.allclose(x[i], c, rtol=0, atol=1e-6) for c in candidates), key_a
            assert int(info["texture_cls"][i]) == cls_b
            assert int(info["structure_cls"][i]) == stored[key_a][2]
            seen += 1
    assert seen == 24


def test_texture_scale_scales_only_the_donor_texture(shards):
    stored = stored_layers(shards)
    loader = make_loader(shards, k=0.5, batch_size=8, image_size=SIZE, min_scale=1.0,
                         texture_scale=0.5, with_info=True, **RAW)
    for x, _, info in loader:
        for i, (key_a, key_b) in enumerate(zip(info["key"], info["texture_key"], strict=True)):
            scale = 0.5 if info["is_conflict"][i] else 1.0
            image_b, structure_b, _ = stored[key_b]
            texture_b = scale * (as_float(image_b) - as_float(structure_b)) / 255
            structure_a = as_float(stored[key_a][1]) / 255
            assert any(torch.allclose(x[i], (structure_a + t).clamp(0, 1), atol=1e-6)
                       for t in (texture_b, texture_b.flip(2)))


def ramp_layers(cls, size, rng):
    """image == structure, a random ramp: after a shared crop the texture is exactly 0."""
    yy, xx = np.mgrid[0:size, 0:size]
    ramp = (rng.integers(1, 5) * xx + rng.integers(1, 5) * yy + cls * 40) % 256
    layer = np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint8)
    return layer, layer.copy()


def test_crop_and_flip_are_shared_by_image_and_structure(tmp_path, monkeypatch):
    monkeypatch.setattr(shardfactory, "class_layers", ramp_layers)
    root = make_shard_dir(tmp_path / "ramps", per_class=4, val_per_class=1, size=40)
    options = {"k": 0.5, "batch_size": 4, "image_size": 12, "seed": 7, "with_info": True, **RAW}
    originals = list(make_loader(root, p_conflict=0.0, **options))
    conflicts = list(make_loader(root, p_conflict=1.0, **options))
    for (x0, _, info0), (x1, _, info1) in zip(originals, conflicts, strict=True):
        assert info0["key"] == info1["key"]  # the same crops: only the mixing differs
        assert info1["is_conflict"].all()
        # a donor's texture is zero only if its image and structure got the same crop
        torch.testing.assert_close(x1, x0, rtol=0, atol=1e-6)
    # and the crops are really random: the 12 outputs of one class are not all alike
    assert len({tuple(x[0, 0, 0].tolist()) for x, _, _ in originals}) > 1


def test_crop_layers_applies_one_box_and_flip_to_every_layer():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    out_a, out_b = crop_layers((a, a.copy()), (3, 5, 20, 30), 10, flip=True)
    assert out_a.shape == (10, 10, 3) and np.array_equal(out_a, out_b)
    plain = crop_layers((a,), (3, 5, 20, 30), 10, flip=False)[0]
    assert np.array_equal(out_a, plain[:, ::-1])


@pytest.mark.parametrize(("height", "width"), [(40, 40), (30, 90), (90, 30)])
def test_random_resized_crop_box_stays_inside_with_bounded_scale_and_ratio(height, width):
    rng = np.random.default_rng(1)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(height, width, rng, 0.35)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
        assert h * w >= 0.3 * height * width or (height, width) != (40, 40)
    assert center_crop_box(30, 90) == (0, 30, 30, 30)


@pytest.mark.parametrize("image_format", ["jpg", "png"])
def test_the_one_rgb_decoder_gives_pillows_pixels(image_format):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    data = encode_image(image, image_format, 90)
    with Image.open(io.BytesIO(data)) as img:
        reference = np.asarray(img.convert("RGB"))
    assert np.array_equal(decode_rgb(data), reference)
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_rgb(data[:10])


def test_shards_of_format_version_1_give_the_same_batches(tmp_path):
    # the same layers stored with structure.webp (version 1) and structure.dzst (version 2)
    new = make_shard_dir(tmp_path / "v2", per_class=4, val_per_class=2, size=20)
    old = make_shard_dir(tmp_path / "v1", per_class=4, val_per_class=2, size=20,
                         format_version=1)
    first = next(iter_tar_samples(old / "train-000000.tar"))
    assert LEGACY_STRUCTURE_FIELD in first and STRUCTURE_FIELD not in first
    options = {"k": 0.5, "batch_size": 4, "image_size": 12, "p_conflict": 1.0,
               "with_info": True}
    for make in (lambda root: make_loader(root, **options),
                 lambda root: make_eval_loader(root, kind="conflict", batch_size=4,
                                               image_size=12)):
        batches = [list(make(root)) for root in (new, old)]
        assert len(batches[0]) == len(batches[1]) > 0
        for (x2, y2, info2), (x1, y1, info1) in zip(*batches, strict=True):
            assert info2["key"] == info1["key"] and info2["texture_key"] == info1["texture_key"]
            assert torch.equal(x2, x1) and torch.equal(y2, y1)


def test_a_sample_with_two_structure_fields_is_skipped_with_a_warning(tmp_path):
    root = make_shard_dir(tmp_path / "s", per_class=2, val_per_class=1, size=8, shard_size=6)
    victim = rewrite_first_sample(
        root / "train-000000.tar",
        lambda field, data: [(field, data)] + ([(LEGACY_STRUCTURE_FIELD, data)]
                                               if field == STRUCTURE_FIELD else []))
    loader = make_loader(root, k=0.5, batch_size=6, image_size=8, with_info=True)
    with pytest.warns(CorruptSampleWarning, match=f"{victim}.*exactly one structure field"):
        keys = epoch_keys(loader)
    assert len(keys) == 5 and victim not in keys


# --------------------------------------------------------------------------- epochs


def test_epochs_differ_and_the_same_seed_repeats(shards):
    options = {"k": 0.5, "batch_size": 6, "image_size": 8, "with_info": True, "seed": 3}
    loader = make_loader(shards, **options)
    first, second = epoch_keys(loader), epoch_keys(loader)  # epochs 0 and 1
    assert sorted(first) == sorted(second) and first != second
    again = make_loader(shards, **options)
    assert epoch_keys(again) == first
    again.set_epoch(1)
    assert epoch_keys(again) == second
    assert epoch_keys(make_loader(shards, **{**options, "seed": 4})) != first


def test_epoch_length_is_for_the_whole_loader_not_per_worker(shards):
    loader = make_loader(shards, k=0.5, batch_size=4, image_size=8, num_workers=2,
                         samples_per_epoch=40)
    batches = list(loader)
    assert len(loader) == len(batches) == 10  # reads its shards again past 24 samples
    assert all(len(x) == 4 for x, _ in batches)


def test_ranks_split_every_sample_once_with_the_same_number_of_batches(shards):
    per_rank = [epoch_keys(make_loader(shards, k=0.5, batch_size=4, image_size=8,
                                       with_info=True, rank=r, world_size=2)) for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 12
    assert sorted(per_rank[0] + per_rank[1]) == sorted(stored_layers(shards))


def test_keys_select_a_subset(shards):
    wanted = {"bed_train_0001", "chair_train_0005", "armchair_train_0000"}
    loader = make_loader(shards, k=0.5, batch_size=2, image_size=8, keys=wanted,
                         with_info=True)
    assert sorted(epoch_keys(loader)) == sorted(wanted) and len(loader) == 2
    with pytest.raises(ValueError, match="not in split 'train'"):
        make_loader(shards, k=0.5, keys={"bed_val_0000"})


def test_mixing_on_a_device_in_the_main_process(shards):
    loader = make_loader(shards, k=0.2, batch_size=8, image_size=SIZE, min_scale=1.0,
                         mix_device="cpu", with_info=True, **RAW)
    stored = stored_layers(shards)
    for x, y, info in loader:
        torch.testing.assert_close(y.sum(1), torch.ones(len(x)))
        assert int(info["is_conflict"].sum()) == 4
        i = int(torch.nonzero(info["is_conflict"])[0])
        structure_a = as_float(stored[info["key"][i]][1]) / 255
        image_b, structure_b, _ = stored[info["texture_key"][i]]
        texture_b = (as_float(image_b) - as_float(structure_b)) / 255
        assert any(torch.allclose(x[i], (structure_a + t).clamp(0, 1), atol=1e-6)
                   for t in (texture_b, texture_b.flip(2)))
    assert loader.conflict_pairs == 12


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU for torch")])],
)
def test_mixing_on_a_device_gives_the_batches_mixed_in_the_workers(shards, device):
    options = {"k": 0.3, "batch_size": 8, "image_size": 12, "seed": 5, "with_info": True}
    in_workers = list(make_loader(shards, **options))
    on_device = list(make_loader(shards, mix_device=device, **options))
    assert len(in_workers) == len(on_device)
    for (x0, y0, info0), (x1, y1, info1) in zip(in_workers, on_device, strict=True):
        assert x1.device.type == device
        assert info0["key"] == info1["key"] and info0["texture_key"] == info1["texture_key"]
        torch.testing.assert_close(x1.cpu(), x0, rtol=0, atol=1e-5)
        assert torch.equal(y1.cpu(), y0)


def test_source_may_be_a_manifest(shards):
    manifest = read_manifest(shards)
    assert sum(len(x) for x, _ in make_loader(manifest, k=0.5, image_size=8)) == 24
    assert sum(len(x) for x, _, _ in make_eval_loader(manifest, image_size=8)) == 9


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("options", "name"),
    [({"k": 1.1}, "k"), ({"k": -0.2}, "k"), ({"p_conflict": 2.0}, "p_conflict"),
     ({"pairing": "same"}, "pairing"), ({"batch_size": 0}, "batch_size"),
     ({"min_scale": 0.0}, "min_scale"), ({"std": (1.0, 0.0, 1.0)}, "std"),
     ({"rank": 2, "world_size": 2}, "rank")],
)
def test_bad_arguments_are_value_errors(shards, options, name):
    with pytest.raises(ValueError, match=name):
        make_loader(shards, **{"k": 0.5, **options})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_mixing_on_cuda_without_a_gpu_is_a_clear_error(shards):
    with pytest.raises(CudaUnavailableError, match="no CUDA GPU"):
        make_loader(shards, k=0.5, mix_device="cuda")


def test_missing_manifest_and_missing_shard_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        make_loader(tmp_path, k=0.5)
    root = make_shard_dir(tmp_path / "s", per_class=2, val_per_class=1)
    (root / "train-000001.tar").unlink()
    with pytest.raises(FileNotFoundError, match="train-000001.tar"):
        make_loader(root, k=0.5)
    with pytest.raises(FileNotFoundError, match="train-000001.tar"):
        make_eval_loader(root, split="train")


def edit_manifest(root, edit):
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    edit(manifest)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_manifest_and_shard_disagreeing_are_errors(tmp_path):
    root = make_shard_dir(tmp_path / "count", per_class=2, val_per_class=1)
    edit_manifest(root, lambda m: m["splits"]["train"]["shards"][0].update(count=5))
    with pytest.raises(ValueError, match="holds 4 samples but the manifest says 5"):
        list(make_loader(root, k=0.5, image_size=8))
    root = make_shard_dir(tmp_path / "classes", per_class=2, val_per_class=1)
    edit_manifest(root, lambda m: m.update(classes=["armchair", "bed"]))
    with pytest.raises(ValueError, match="class 2, outside the manifest's 2 classes"):
        list(make_loader(root, k=0.5, image_size=8))
    with pytest.raises(ValueError, match="class 2, outside"):
        make_eval_loader(root)


def rewrite_first_sample(path, edit):
    """Rewrite the tar at ``path`` with each field of its first sample replaced by the
    ``(field, data)`` pairs of ``edit(field, data)``; returns that sample's key."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    victim = members[0][0].name.partition(".")[0]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            key, _, field = member.name.partition(".")
            for new_field, new_data in edit(field, data) if key == victim else [(field, data)]:
                info = copy.copy(member)
                info.name, info.size = f"{key}.{new_field}", len(new_data)
                tar.addfile(info, io.BytesIO(new_data))
    return victim


def corrupt_one_sample(root, shard="train-000000.tar", field="png"):
    """Truncate a field of the first sample of a shard; returns the sample's key."""
    return rewrite_first_sample(root / shard, lambda name, data: [
        (name, data[: len(data) // 2] if name == field else data)])


@pytest.mark.parametrize(("field", "p_conflict", "version"), [
    ("png", 0.5, 2), (STRUCTURE_FIELD, 1.0, 2), (LEGACY_STRUCTURE_FIELD, 1.0, 1)])
def test_a_corrupt_sample_is_skipped_with_a_warning(tmp_path, field, p_conflict, version):
    # a structure layer is decoded only when the batch needs it: p_conflict=1 needs them all
    root = make_shard_dir(tmp_path / "s", per_class=4, val_per_class=2, size=16,
                          format_version=version)
    victim = corrupt_one_sample(root, field=field)
    loader = make_loader(root, k=0.5, batch_size=4, image_size=8, with_info=True,
                         p_conflict=p_conflict)
    with pytest.warns(CorruptSampleWarning, match=victim):
        batches = list(loader)
    keys = [key for _, _, info in batches for key in info["key"]]
    assert len(keys) == 11 and victim not in keys
    assert victim not in {key for _, _, info in batches for key in info["texture_key"]}
    assert loader.skipped_samples == 1
    # evaluation: clean images need no structure layer, the conflict set needs them all
    eval_victim = corrupt_one_sample(root, "val-000000.tar", field)
    kind = "clean" if field == "png" else "conflict"
    with pytest.warns(CorruptSampleWarning, match=eval_victim):
        batches = list(make_eval_loader(root, kind=kind, batch_size=4, image_size=8))
    pairs = {(a, b) for _, _, info in batches
             for a, b in zip(info["key"], info["texture_key"], strict=True)}
    assert eval_victim not in {key for pair in pairs for key in pair}
    assert len(pairs) == 5 if kind == "clean" else 2 < len(pairs) < 6


# --------------------------------------------------------------------------- evaluation


def test_clean_eval_loader_gives_centre_crops_with_one_hot_targets(shards):
    stored = stored_layers(shards, "val")
    loader = make_eval_loader(shards, batch_size=4, image_size=SIZE, **RAW)
    seen = []
    for x, y, info in loader:
        assert torch.equal(info["structure_cls"], info["texture_cls"])
        assert not info["is_conflict"].any()
        assert torch.equal(y, torch.nn.functional.one_hot(info["structure_cls"], 3).float())
        for i, key in enumerate(info["key"]):
            torch.testing.assert_close(x[i], as_float(stored[key][0]) / 255, rtol=0, atol=1e-6)
        seen += info["key"]
    assert len(loader) == 3 and sorted(seen) == sorted(stored)
    # deterministic: the same order on every pass
    assert seen == [key for _, _, info in loader for key in info["key"]]


def test_conflict_eval_set_is_fixed_for_a_seed_and_pairs_other_classes(shards):
    stored = stored_layers(shards, "val")

    def pairs(seed):
        loader = make_eval_loader(shards, kind="conflict", batch_size=4, image_size=SIZE,
                                  seed=seed, k=0.8, **RAW)
        out = []
        for x, y, info in loader:
            assert info["is_conflict"].all()
            for i, (key_a, key_b) in enumerate(zip(info["key"], info["texture_key"],
                                                   strict=True)):
                a, b = stored[key_a][2], stored[key_b][2]
                assert a != b and int(info["structure_cls"][i]) == a
                expected = torch.zeros(3)
                expected[a], expected[b] = 0.8, torch.tensor(1 - 0.8, dtype=torch.float32)
                assert torch.equal(y[i], expected)
                texture_b = (as_float(stored[key_b][0]) - as_float(stored[key_b][1])) / 255
                composed = (as_float(stored[key_a][1]) / 255 + texture_b).clamp(0, 1)
                torch.testing.assert_close(x[i], composed, rtol=0, atol=1e-6)
                out.append((key_a, key_b))
        return out

    first = pairs(0)
    assert len(first) == 9 and first == pairs(0)
    assert first != pairs(1)


def test_eval_loader_rejects_unknown_kind_and_bad_k(shards):
    with pytest.raises(ValueError, match="kind"):
        make_eval_loader(shards, kind="mixed")
    with pytest.raises(ValueError, match="k must"):
        make_eval_loader(shards, kind="conflict", k=2.0)


def test_warnings_do_not_fire_on_clean_shards(shards):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptSampleWarning)
        list(make_loader(shards, k=0.5, image_size=8))


@pytest.mark.parametrize("view", ["structure", "texture"])
def test_a_layer_view_shows_one_stored_layer(shards, view):
    stored = stored_layers(shards)

    def expected(key):
        image, structure, _ = stored[key]
        if view == "structure":
            return as_float(structure) / 255
        texture = image.astype(np.int16) - structure.astype(np.int16) + 128
        return as_float(np.clip(texture, 0, 255).astype(np.uint8)) / 255

    loader = make_loader(shards, k=0.5, p_conflict=0.0, batch_size=8, image_size=SIZE,
                         min_scale=1.0, with_info=True, view=view, num_workers=1, **RAW)
    seen = 0
    for x, _, info in loader:
        assert not info["is_conflict"].any()
        for i, key in enumerate(info["key"]):
            want = expected(key)
            assert any(torch.allclose(x[i], w, rtol=0, atol=1e-6) for w in (want, want.flip(2)))
            seen += 1
    assert seen == 24
    val = stored_layers(shards, "val")
    for x, _, info in make_eval_loader(shards, batch_size=4, image_size=SIZE, view=view, **RAW):
        for i, key in enumerate(info["key"]):
            stored[key] = val[key]
            torch.testing.assert_close(x[i], expected(key), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="p_conflict=0"):
        make_loader(shards, k=0.5, view=view)
    with pytest.raises(ValueError, match="view"):
        make_loader(shards, k=0.5, view="edges")
