"""Launch geometry shared by the CUDA kernels of every method.

All kernels run one thread per pixel over a 2-D block, with the image (or image channel)
index in the grid's z axis, whose size CUDA caps at 65535.
"""

from __future__ import annotations

__all__ = ["MAX_GRID_Z", "MAX_THREADS", "block_shape", "grid_shape"]

#: Largest number of threads :func:`block_shape` puts in a block.
MAX_THREADS = 256
#: CUDA's limit on the grid's z dimension.
MAX_GRID_Z = 65535


def block_shape(height: int, width: int) -> tuple[int, int, int]:
    """Threads per block (x, y, 1): up to 32 x 8, shrunk for small images so that few idle
    threads are launched (the CUDA simulator runs one OS thread per GPU thread)."""
    bx = min(32, 1 << max(width - 1, 0).bit_length())
    by = min(MAX_THREADS // bx, 1 << max(height - 1, 0).bit_length())
    return bx, by, 1


def grid_shape(
    block: tuple[int, ...], height: int, width: int, depth: int
) -> tuple[int, int, int]:
    """Blocks per grid covering ``width x height`` pixels, ``depth`` planes deep.

    Raises ``ValueError`` when ``depth`` exceeds CUDA's grid limit (split the batch).
    """
    if depth > MAX_GRID_Z:
        raise ValueError(
            f"at most {MAX_GRID_Z} images (or image channels) per call on the GPU, got {depth}"
        )
    return (-(-width // block[0]), -(-height // block[1]), depth)
