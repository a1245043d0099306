"""The training loader's fast decode path (issue 23): a JPEG decoded at a reduced DCT scale
when the crop is at least twice the output side, each layer box-averaged on the same grid;
and ``mix_device="cpu"`` composed by the workers' fused kernel. The pixels are checked
against an independent computation (full decode, OpenCV's exact block average, area resize):
the structure layer exactly, the JPEG image within the scaled DCT's stated bound."""

from __future__ import annotations

import hashlib
import io
import json

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from stexture.imageio import JPEG_REDUCTIONS, decode_jpeg_reduced, decode_jpeg_whole, jpeg_size
from stexture.loader import crop_layers, make_loader
from stexture.loader.train import (
    PlannedBatch,
    compose_float,
    compose_on_device,
    crop_reduced,
    reduction_for,
    snap_box,
)
from stexture.shards.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_NAME,
    MANIFEST_NAME,
    decode_rgb,
    decode_structure,
    encode_image,
    encode_sample,
    iter_tar_samples,
    shard_name,
    write_tar,
)

RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # x un-normalised, in [0, 1]
SIDE = 64
#: the most a pixel of the reduced JPEG decode (q95, 4:4:4) is from the block average of the
#: full decode, in levels (measured at most 5 on scikit-image's photos)
JPEG_BOUND = 8
#: OpenCV's integer-factor area resize is fixed-point: within 1 level of the exact block mean
BLOCK_BOUND = 1
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def block_average(pixels: np.ndarray, factor: int) -> np.ndarray:
    """The exact ``factor x factor`` block mean, rounded (sides a multiple of ``factor``)."""
    h, w, c = pixels.shape
    blocks = pixels.reshape(h // factor, factor, w // factor, factor, c).astype(np.float64)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def photo(name: str, side: int) -> np.ndarray:
    image = getattr(data, name)()
    s = min(image.shape[:2])
    return cv2.resize(image[:s, :s], (side, side), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("factor", JPEG_REDUCTIONS)
def test_reduced_decode_is_within_the_bound_of_the_block_average(factor):
    for name in PHOTOS:
        stored = encode_image(photo(name, 256), "jpg", 95)
        assert jpeg_size(stored) == (256, 256)
        reduced = decode_jpeg_reduced(stored, factor, 10**8)
        want = block_average(decode_rgb(stored), factor)
        assert reduced.shape == want.shape == (256 // factor, 256 // factor, 3)
        error = np.abs(reduced.astype(int) - want.astype(int))
        assert error.max() <= JPEG_BOUND and error.mean() < 1.0, (name, factor)


def test_reduced_decode_refuses_what_it_cannot_do():
    stored = encode_image(photo("coffee", 64), "jpg", 95)
    with pytest.raises(ValueError, match="factor"):
        decode_jpeg_reduced(stored, 3, 10**8)
    with pytest.raises(ValueError, match="over the limit"):
        decode_jpeg_reduced(stored, 2, 64 * 64 - 1)
    with pytest.raises(ValueError):
        decode_jpeg_reduced(stored[:200], 2, 10**8)
    assert jpeg_size(encode_image(photo("coffee", 64), "png")) is None
    exif = b"\xff\xe1\x00\x10Exif\x00\x00" + bytes(8)  # an APP1 segment of 16 bytes
    assert jpeg_size(stored[:2] + exif + stored[2:]) is None
    assert jpeg_size(stored[:2] + b"\xff\xe1\x00\x10Other\x00" + bytes(8) + stored[2:]) == (
        64, 64)


@pytest.mark.parametrize("quality", [60, 95])
def test_the_whole_jpeg_decode_gives_decode_rgbs_pixels(quality):
    # the training set decodes a crop that allows no reduction this way (no Pillow header
    # parse): the very pixels of decode_rgb, and the same refusals
    for name in PHOTOS:
        for side in (64, 77):
            stored = encode_image(photo(name, side), "jpg", quality)
            assert np.array_equal(decode_jpeg_whole(stored, 10**8), decode_rgb(stored))
    with pytest.raises(ValueError, match="too many pixels: 77x77 declared, over the limit"):
        decode_jpeg_whole(stored, 77 * 77 - 1)
    with pytest.raises(ValueError):
        decode_jpeg_whole(stored[:200], 10**8)


def test_reduction_and_snapped_box():
    assert reduction_for((0, 0, 191, 300), 96) == 1
    assert reduction_for((0, 0, 192, 300), 96) == 2
    assert reduction_for((0, 0, 400, 390), 96) == 4
    assert reduction_for((3, 5, 800, 801), 96) == 8
    assert snap_box((3, 5, 193, 200), 2) == (2, 4, 192, 200)
    assert snap_box((7, 9, 389, 390), 4) == (4, 8, 388, 388)


def test_crop_reduced_of_a_full_layer_is_block_average_then_area_resize():
    layer = photo("astronaut", 128)
    box = (8, 4, 96, 112)
    for flip in (False, True):
        got = crop_reduced(layer, box, 2, 24, flip)
        small = block_average(layer[8:104, 4:116], 2)
        want = crop_layers((small,), (0, 0, 48, 56), 24, flip)[0]
        assert np.abs(got.astype(int) - want).max() <= BLOCK_BOUND
    assert np.array_equal(crop_reduced(layer, box, 1, 24, True),
                          crop_layers((layer,), box, 24, True)[0])


@pytest.fixture(scope="module")
def jpeg_shards(tmp_path_factory):
    """16 training samples of 64 px photo crops stored as JPEG q95, 4 classes, in 4 shards;
    the structure a Gaussian blur of the decoded stored image (any smooth layer will do)."""
    root = tmp_path_factory.mktemp("jpeg_shards")
    rng = np.random.default_rng(0)
    shards, rows = [], []
    for s in range(4):
        chunk = []
        for i in range(4 * s, 4 * s + 4):
            big = photo(PHOTOS[i % 4], 256)
            top, left = (int(v) for v in rng.integers(0, 256 - 128, 2))
            image = cv2.resize(big[top:top + 128, left:left + 128], (SIDE, SIDE),
                               interpolation=cv2.INTER_AREA)
            stored = encode_image(image, "jpg", 95)
            structure = cv2.GaussianBlur(decode_rgb(stored), (7, 7), 2.0)
            key, cls = f"s{i:03d}", i % 4
            chunk.append(encode_sample(key, stored, "jpg", structure, cls, {"source": key},
                                       step=4))
            rows.append(f"{key},train,{shard_name('train', s)},{cls}")
        buffer = io.BytesIO()
        write_tar(buffer, chunk)
        (root / shard_name("train", s)).write_bytes(buffer.getvalue())
        shards.append({"name": shard_name("train", s), "count": 4,
                       "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()})
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "classes": ["a", "b", "c", "d"], "method": "rtv", "params": {},
                "splits": {"train": {"count": 16, "shards": shards}}}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    (root / INDEX_NAME).write_text("key,split,shard,cls\n" + "\n".join(rows) + "\n")
    return root


def stored(root):
    layers = {}
    for path in sorted(root.glob("train-*.tar")):
        for sample in iter_tar_samples(path):
            layers[sample["__key__"]] = (decode_rgb(sample["jpg"]),
                                         decode_structure(sample["structure.dzst"]))
    return layers


def expected(layer, factor, size, flip):
    """The reference: the whole layer (min_scale=1, square), block-averaged by ``factor``
    (exactly), area-resized to ``size``, flipped."""
    small = block_average(layer, factor) if factor > 1 else layer
    return crop_layers((small,), (0, 0, *small.shape[:2]), size, flip)[0]


def as_levels(x):
    return np.rint(x.permute(1, 2, 0).numpy() * 255).astype(int)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(("size", "factor"), [(16, 4), (24, 2), (40, 1)])
def test_loader_layers_against_an_independent_decode(jpeg_shards, workers, size, factor):
    """Whole-image crops (min_scale=1): factor 4 at 16 px, 2 at 24 px, none at 40 px. Without
    a reduction both layers are exact; with one the structure is within OpenCV's rounding of
    the block mean and the image within the JPEG bound (and so its texture, image -
    structure, within the sum of the two of the reference's)."""
    layers = stored(jpeg_shards)
    seen = 0
    for view in ("structure", "image"):
        loader = make_loader(jpeg_shards, k=1.0, p_conflict=0.0, batch_size=4, image_size=size,
                             min_scale=1.0, view=view, with_info=True, num_workers=workers,
                             **RAW)
        for x, _, info in loader:
            for i, key in enumerate(info["key"]):
                layer = layers[key][0 if view == "image" else 1]
                got = as_levels(x[i])
                errors = [np.abs(got - expected(layer, factor, size, flip)).max()
                          for flip in (False, True)]
                bound = 0 if factor == 1 else JPEG_BOUND if view == "image" else BLOCK_BOUND
                assert min(errors) <= bound, (view, key, errors)
                seen += 1
    assert seen == 32


def test_random_crops_give_the_same_batches_at_0_and_2_workers(jpeg_shards):
    options = {"k": 0.7, "p_conflict": 0.5, "batch_size": 4, "image_size": 16, "seed": 3,
               "with_info": True}
    alone = list(make_loader(jpeg_shards, **options))
    workers = list(make_loader(jpeg_shards, num_workers=2, **options))
    assert len(alone) == len(workers) == 4
    for (x0, y0, info0), (x1, y1, info1) in zip(alone, workers, strict=True):
        assert info0["key"] == info1["key"] and torch.equal(x0, x1) and torch.equal(y0, y1)


def test_mix_device_cpu_gives_the_batches_mixed_in_the_workers_exactly(jpeg_shards):
    options = {"k": 0.3, "p_conflict": 0.5, "batch_size": 4, "image_size": 16, "seed": 5,
               "with_info": True}
    in_workers = list(make_loader(jpeg_shards, **options))
    in_main = list(make_loader(jpeg_shards, mix_device="cpu", num_workers=2, **options))
    for (x0, y0, info0), (x1, y1, info1) in zip(in_workers, in_main, strict=True):
        assert info0["texture_key"] == info1["texture_key"]
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_the_float_path_takes_channels_last_planned_batches(jpeg_shards):
    """What a GPU's ``mix_device`` runs (the float path), here on the CPU, on the planned
    batches the workers send (channels last): the fused kernel's values within 1e-5."""
    loader = make_loader(jpeg_shards, k=0.3, p_conflict=0.5, batch_size=4, image_size=16,
                         seed=5, mix_device="cpu", texture_scale=0.5)
    cpu = torch.device("cpu")
    planned = list(torch.utils.data.DataLoader.__iter__(loader))
    assert planned and all(isinstance(b, PlannedBatch) for b in planned)
    for batch in planned:
        assert batch.image.shape[1] == 3 and batch.image.stride()[1] == 1  # channels last
        x0, y0 = compose_float(batch, loader.collate_fn, cpu)
        x1, y1 = compose_on_device(batch, loader.collate_fn, cpu)  # the fused kernel
        torch.testing.assert_close(x0, x1, rtol=0, atol=1e-5)
        assert torch.equal(y0, y1)
