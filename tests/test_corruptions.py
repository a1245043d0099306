import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data as skdata

from stexture.loader import IMAGENET_MEAN, IMAGENET_STD
from stexture.training.corruptions import CORRUPTIONS, CorruptedBatches, corrupt


@pytest.fixture(scope="module")
def photo():
    return np.ascontiguousarray(skdata.astronaut()[::8, ::8])  # 64 x 64 x 3 uint8


def test_blur_matches_scipy_gaussian_filter(photo):
    out = corrupt(photo, "blur", 2, profile="imagenet")  # sigma 2
    ref = np.stack([ndimage.gaussian_filter(photo[..., c].astype(np.float64) / 255, 2.0,
                                            mode="reflect", truncate=4.0)
                    for c in range(3)], axis=-1)
    assert np.abs(out.astype(int) - np.rint(ref * 255).astype(int)).max() <= 1


def test_noise_contrast_and_pixelate_do_what_they_say():
    flat = np.full((64, 64, 3), 128, np.uint8)
    noisy = corrupt(flat, "noise", 1, rng=np.random.default_rng(1)).astype(float)  # sd .08
    assert abs(noisy.mean() - 128) < 1 and abs(noisy.std() - 0.08 * 255) < 0.5
    rng = np.random.default_rng(2)
    image = rng.integers(60, 200, (32, 32, 3)).astype(np.uint8)
    low = corrupt(image, "contrast", 3, profile="cifar").astype(float)  # c = 0.4
    mean = image.reshape(-1, 3).mean(0)
    expected = (image - mean) * 0.4 + mean
    assert np.abs(low - expected).max() <= 0.51
    pix = corrupt(image, "pixelate", 2, profile="imagenet").astype(float)  # f 0.5: 2x2 blocks
    blocks = image.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    assert np.abs(pix - np.repeat(np.repeat(blocks, 2, 0), 2, 1)).max() <= 0.51


def test_jpeg_degrades_with_severity_and_bad_arguments_fail(photo):
    errors = [np.abs(corrupt(photo, "jpeg", s).astype(int) - photo).mean() for s in (1, 5)]
    assert 0 < errors[0] < errors[1]
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(photo, "fog")
    with pytest.raises(ValueError, match="severity"):
        corrupt(photo, "blur", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(photo.astype(np.float32), "blur")


def test_corrupted_batches_corrupt_the_denormalised_images(photo):
    images = np.stack([photo, photo[::-1].copy()])
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    y = torch.eye(2)
    for kind in CORRUPTIONS:
        (xc, yc), = list(CorruptedBatches([(x, y)], kind, 3, seed=5))
        assert torch.equal(yc, y)
        back = ((xc * std + mean) * 255).round().permute(0, 2, 3, 1).numpy().astype(int)
        for i, image in enumerate(images):
            expected = corrupt(image, kind, 3, rng=np.random.default_rng([5, i]))
            assert np.abs(back[i] - expected).max() <= 1
