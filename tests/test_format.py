"""The shard format: the structure-layer encoding (``structure.dzst``), the reading of format
version 1's ``structure.webp``, and the tar reader."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile

import numpy as np
import pytest
import webdataset as wds
import zstandard
from skimage import data

from stexture.shards.format import (
    LEGACY_STRUCTURE_FIELD,
    STRUCTURE_FIELD,
    decode_sample,
    decode_structure,
    encode_image,
    encode_legacy_structure,
    encode_sample,
    encode_structure,
    iter_tar_samples,
    structure_field,
    write_tar,
)
from stexture.shards.format.codecs import _undo_vertical_delta

SHAPES = [(1, 1), (1, 7, 3), (9, 1, 3), (13, 17, 3), (13, 17), (5, 6, 1), (2, 3, 4)]


def smooth_layer(height: int = 48, width: int = 40) -> np.ndarray:
    """A subsampled photo crop, ``height x width x 3``: smooth regions and sharp edges."""
    crop = data.astronaut()[100:100 + 4 * height:4, 150:150 + 4 * width:4]
    return crop.astype(np.uint8)


@pytest.mark.parametrize("shape", SHAPES)
def test_random_layers_of_any_shape_round_trip_exactly(shape):
    layer = np.random.default_rng(len(shape) * 100 + shape[0]).integers(0, 256, shape,
                                                                          dtype=np.uint8)
    decoded = decode_structure(encode_structure(layer))
    assert decoded.dtype == np.uint8 and decoded.shape == shape
    assert np.array_equal(decoded, layer)


def test_a_gray_and_an_rgb_photo_layer_round_trip_exactly():
    rgb = smooth_layer(37, 29)  # odd sizes
    gray = np.ascontiguousarray(rgb[:, :, 1])
    for layer in (rgb, gray, rgb[::-1, ::2]):  # a non-contiguous view too
        assert np.array_equal(decode_structure(encode_structure(layer)), layer)


def test_the_bytes_are_a_header_and_a_zstd_frame_of_the_vertical_delta():
    layer = smooth_layer(21, 11)
    encoded = encode_structure(layer)
    magic, height, width, channels = struct.unpack_from("<4sIIB", encoded)
    assert (magic, height, width, channels) == (b"SXD1", 21, 11, 3)
    rows = layer.reshape(21, 33).astype(np.int16)
    expected = np.concatenate([rows[:1], np.diff(rows, axis=0) % 256]).astype(np.uint8)
    frame = zstandard.ZstdDecompressor().decompress(encoded[13:])
    assert frame == expected.tobytes()
    # the delta is what makes a smooth layer small: a ramp is almost free
    ramp = np.repeat(np.repeat(np.arange(64, dtype=np.uint8)[:, None], 64, 1)[:, :, None], 3, 2)
    assert len(encode_structure(ramp)) < 0.01 * ramp.nbytes


def test_undo_kernel_matches_a_running_sum_mod_256():
    delta = np.random.default_rng(3).integers(0, 256, (31, 45), dtype=np.uint8)
    expected = (np.cumsum(delta.astype(np.int64), axis=0) % 256).astype(np.uint8)
    delta.flags.writeable = False  # as np.frombuffer gives it
    assert np.array_equal(_undo_vertical_delta(delta), expected)


@pytest.mark.parametrize(("layer", "message"), [
    (np.zeros((4, 4, 3), np.float32), "uint8"),
    (np.zeros((2, 4, 4, 3), np.uint8), "HxW or HxWxC"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
])
def test_bad_layers_are_refused(layer, message):
    with pytest.raises(ValueError, match=message):
        encode_structure(layer)


def corruptions(encoded: bytes) -> dict[str, bytes]:
    flipped = bytearray(encoded)
    flipped[len(encoded) // 2 + 7] ^= 0x5A
    return {
        "truncated": encoded[: len(encoded) // 2],
        "header only": encoded[:13],
        "bad magic": b"XXXX" + encoded[4:],
        "a flipped byte": bytes(flipped),
        "wrong height in header": encoded[:4] + struct.pack("<I", 40) + encoded[8:],
        "empty": b"",
    }


@pytest.mark.parametrize("step", [1, 3])
@pytest.mark.parametrize("kind", list(corruptions(b"0" * 200)))
def test_corrupt_bytes_raise_value_error(kind, step):
    encoded = encode_structure(smooth_layer(), step=step)
    with pytest.raises(ValueError):
        decode_structure(corruptions(encoded)[kind])


def sample_with(image: np.ndarray, structure: np.ndarray) -> dict:
    return encode_sample("k1", encode_image(image, "png"), "png", structure, 2, {"a": 1})


def test_decode_sample_reads_either_structure_field():
    image = smooth_layer()
    structure = (image // 2).astype(np.uint8)
    new = sample_with(image, structure)
    assert STRUCTURE_FIELD in new and LEGACY_STRUCTURE_FIELD not in new
    old = {name: value for name, value in new.items() if name != STRUCTURE_FIELD}
    old[LEGACY_STRUCTURE_FIELD] = encode_legacy_structure(structure)
    for sample in (new, old):
        decoded = decode_sample(sample)
        assert np.array_equal(decoded.structure, structure)
        assert np.array_equal(decoded.texture, image.astype(np.int16) - structure)
    assert structure_field(new) == STRUCTURE_FIELD
    assert structure_field(old) == LEGACY_STRUCTURE_FIELD
    assert np.array_equal(decode_structure(old[LEGACY_STRUCTURE_FIELD], LEGACY_STRUCTURE_FIELD),
                          structure)


def test_a_sample_with_no_or_two_structure_fields_is_an_error():
    image = smooth_layer()
    sample = sample_with(image, image)
    both = {**sample, LEGACY_STRUCTURE_FIELD: encode_legacy_structure(image)}
    with pytest.raises(ValueError, match="exactly one structure field.*has structure.dzst and "
                                         "structure.webp"):
        decode_sample(both)
    with pytest.raises(ValueError, match="has none"):
        structure_field({"__key__": "k"})
    none = {name: value for name, value in sample.items() if name != STRUCTURE_FIELD}
    with pytest.raises(ValueError, match="'k1' lacks field.*structure.dzst/structure.webp"):
        decode_sample(none)
    with pytest.raises(ValueError, match="unknown structure field 'structure.png'"):
        decode_structure(sample[STRUCTURE_FIELD], "structure.png")


def test_a_corrupt_or_mis_shaped_structure_in_a_sample_names_the_sample():
    image = smooth_layer()
    sample = sample_with(image, image)
    broken = {**sample, STRUCTURE_FIELD: sample[STRUCTURE_FIELD][:-9]}
    with pytest.raises(ValueError, match="sample 'k1' cannot be decoded"):
        decode_sample(broken)
    other_shape = {**sample, STRUCTURE_FIELD: encode_structure(image[:-1])}
    with pytest.raises(ValueError, match="differ in shape"):
        decode_sample(other_shape)


# --------------------------------------------------------------------------- tar reading


def tarfile_samples(path) -> list[dict]:
    """The reference: tarfile's members grouped WebDataset-style."""
    samples: list[dict] = []
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, _, base = member.name.rpartition("/")
            stem, _, field = base.partition(".")
            key = f"{folder}/{stem}" if folder else stem
            if not samples or samples[-1]["__key__"] != key:
                samples.append({"__key__": key})
            samples[-1][field] = tar.extractfile(member).read()
    return samples


def write_members(path, tar_format, members) -> None:
    with tarfile.open(path, "w", format=tar_format) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            if payload is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


MEMBERS = [
    ("a1.jpg", b"x" * 512), ("a1.cls", b"3"), ("a1.json", b""),
    ("dir", None),
    ("dir/" + "d" * 120 + "/b2.structure.dzst", bytes(range(256)) * 5),  # long name
    ("dir/" + "d" * 120 + "/b2.cls", b"1"),
    ("caf\u00e9/c3.png", b"\x89PNG" + b"y" * 1000),  # non-ASCII: a PAX header in PAX format
    ("caf\u00e9/c3.cls", b"0"),
]


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT,
                                        tarfile.USTAR_FORMAT])
def test_tar_reader_gives_tarfiles_members(tmp_path, tar_format):
    members = MEMBERS if tar_format != tarfile.USTAR_FORMAT else [
        (name.replace("\u00e9", "e"), payload) for name, payload in MEMBERS]
    path = tmp_path / "s.tar"
    write_members(path, tar_format, members)
    ours = list(iter_tar_samples(path))
    assert ours == tarfile_samples(path)
    assert [s["__key__"] for s in ours][0] == "a1" and len(ours) == 3


def test_tar_reader_reads_the_writers_and_webdatasets_tars_and_gzip(tmp_path):
    image = smooth_layer()
    samples = [encode_sample(f"k{i}", encode_image(image, "png"), "png", image, i, {"i": i})
               for i in range(3)]
    ours = tmp_path / "ours.tar"
    with open(ours, "wb") as f:
        write_tar(f, samples)
    theirs = tmp_path / "wds.tar"
    with wds.TarWriter(str(theirs)) as sink:
        for sample in samples:
            sink.write(sample)
    packed = tmp_path / "s.tar.gz"
    packed.write_bytes(gzip.compress(ours.read_bytes()))
    for path in (ours, theirs, packed):
        assert list(iter_tar_samples(path)) == tarfile_samples(ours) == samples


def test_damaged_tars_are_named_in_a_value_error(tmp_path):
    path = tmp_path / "s.tar"
    write_members(path, tarfile.PAX_FORMAT, MEMBERS)
    whole = path.read_bytes()
    bad_sum = bytearray(whole)
    bad_sum[10] ^= 0x01  # a byte of the first member's name
    # cut in a payload, cut in a header, a wrong header checksum
    for damaged in (whole[:700], whole[:2048 + 100], bytes(bad_sum)):
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match=r"s\.tar: damaged tar file"):
            list(iter_tar_samples(path))


@pytest.mark.parametrize("step", [2, 3, 4, 5, 255])  # 4: the writer's default
def test_a_quantised_layer_decodes_within_half_a_step(step):
    rng = np.random.default_rng(step)
    layer = np.concatenate([smooth_layer(37, 29).reshape(-1),  # and every value, 255 too
                            np.arange(256, dtype=np.uint8), rng.integers(0, 256, 100,
                                                                         dtype=np.uint8)])
    layer = layer[: (layer.size // 3) * 3].reshape(-1, 3).astype(np.uint8)
    encoded = encode_structure(layer, step=step)
    decoded = decode_structure(encoded)
    assert encoded[:4] == b"SXD2" and encoded[13] == step
    assert decoded.dtype == np.uint8 and decoded.shape == layer.shape
    expected = np.minimum((layer.astype(np.int64) + step // 2) // step * step, 255)
    assert np.array_equal(decoded, expected)
    assert np.abs(decoded.astype(np.int16) - layer).max() <= step // 2


def test_step_1_writes_layout_1_bytes_and_a_smooth_layer_shrinks_with_the_step():
    layer = smooth_layer()
    assert encode_structure(layer, step=1) == encode_structure(layer)
    assert len(encode_structure(layer, step=3)) < 0.9 * len(encode_structure(layer))


@pytest.mark.parametrize("bad", [0, 256, -3, 2.5, True])
def test_a_bad_step_is_refused(bad):
    with pytest.raises(ValueError, match=r"quantisation step must be an integer in 1\.\.255"):
        encode_structure(smooth_layer(), step=bad)


@pytest.mark.parametrize("step", [2, 3, 4, 7, 255])
def test_the_stated_bound_is_reached_by_some_level(step):
    # step // 2 is the bound the docs state: tight, not just an upper bound
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    error = decode_structure(encode_structure(levels, step=step)).astype(np.int16) - levels
    assert np.abs(error).max() == step // 2


def test_a_sample_stores_its_structure_at_the_step_given():
    layer = smooth_layer()
    image = encode_image(layer, "png")
    exact = encode_sample("k", image, "png", layer, 0, {})
    quantised = encode_sample("k", image, "png", layer, 0, {}, step=4)
    assert exact[STRUCTURE_FIELD] == encode_structure(layer)
    assert quantised[STRUCTURE_FIELD] == encode_structure(layer, step=4)
    assert {k: v for k, v in quantised.items() if k != STRUCTURE_FIELD} == {
        k: v for k, v in exact.items() if k != STRUCTURE_FIELD}
    assert np.abs(decode_sample(quantised).texture - decode_sample(exact).texture).max() == 2


def test_a_quantised_layer_declaring_step_0_or_1_is_corrupt():
    encoded = bytearray(encode_structure(smooth_layer(), step=3))
    for step in (0, 1):
        encoded[13] = step
        with pytest.raises(ValueError, match="quantisation step"):
            decode_structure(bytes(encoded))
