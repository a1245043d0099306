"""The benchmarks' shared helpers (``benchmarks/_common.py``), for the experiments too."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _common import machine_line, print_table  # noqa: E402

__all__ = ["machine_line", "print_table"]
