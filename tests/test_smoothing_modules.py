"""The smoothing package's shape: no import cycles, the threading layer, launch geometry,
thread safety (the contract every method keeps is in ``test_smoothing_contract.py``)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import stexture.smoothing as smoothing
from stexture.smoothing import METHODS

PACKAGE = Path(smoothing.__file__).parent


def _imports(path: Path) -> set[str]:
    """Sibling modules of the smoothing package that ``path`` imports, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
    return names


def test_smoothing_modules_have_no_import_cycle_and_twins_share_only_common():
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    for method in METHODS:
        # the CPU and CUDA twins never import each other nor the public module
        assert f"_{method}_cuda" not in graph[f"_{method}_cpu"]
        assert f"_{method}_cpu" not in graph[f"_{method}_cuda"]
        assert method not in graph[f"_{method}_cpu"] | graph[f"_{method}_cuda"]
        for kind in ("common", "cpu", "cuda", "reference"):
            assert f"_{method}_{kind}" in graph
    done: set[str] = set()

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join((*stack, module))}"
        if module in done or module not in graph:
            return
        for imported in graph[module]:
            visit(imported, (*stack, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def _layer_after_decompose(env: dict[str, str]) -> str:
    code = ("import numpy as np, numba, stexture; "
            "stexture.decompose(np.zeros((8, 8, 3), np.uint8), method='tv'); "
            "print(numba.threading_layer())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_library_picks_tbb_without_environment_and_respects_a_users_choice():
    try:
        metadata.distribution("tbb")
    except metadata.PackageNotFoundError:
        pytest.skip("the tbb wheel is not installed on this platform")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING")}
    assert _layer_after_decompose(env) == "tbb"
    assert _layer_after_decompose({**env, "NUMBA_THREADING_LAYER": "workqueue"}) == "workqueue"


def test_launch_geometry_covers_the_image_and_refuses_too_deep_grids():
    from stexture.smoothing._cuda import MAX_GRID_Z, block_shape, grid_shape

    assert block_shape(5, 3) == (4, 8, 1)  # shrunk to the image, powers of two
    assert block_shape(600, 600) == (32, 8, 1)
    assert grid_shape((32, 8, 1), 17, 65, 3) == (3, 3, 3)
    assert grid_shape((32, 8, 1), 1, 1, MAX_GRID_Z)[2] == MAX_GRID_Z
    with pytest.raises(ValueError, match="at most 65535"):
        grid_shape((32, 8, 1), 8, 8, MAX_GRID_Z + 1)


def test_calls_from_several_threads_at_once_give_the_serial_results():
    from concurrent.futures import ThreadPoolExecutor

    batch = np.random.default_rng(1).random((1, 40, 48, 3), dtype=np.float32)
    serial = {name: METHODS[name](batch) for name in METHODS}
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda name: (name, METHODS[name](batch)), sorted(METHODS) * 3))
    for name, structure in runs:
        np.testing.assert_array_equal(structure, serial[name])
