"""RTV's CPU kernel against an earlier commit's, timed interleaved in one process.

On a shared machine absolute times drift with the load; the ratio of two kernels timed in
alternation, round after round, drifts much less. The earlier kernel is
``stexture/smoothing/_rtv_cpu.py`` as it stood at ``--base`` (loaded from ``git show`` into
a module of its own, so both run in the same process and threads); the current one is the
working tree's. ``--clock cpu --threads 1`` times the CPU time of one thread instead of the
wall time: the work done, which a busy machine disturbs less. Each round smooths every
image once with each kernel, in alternating order; the table gives best and median
milliseconds, the speed-up, and the CG iterations summed over the outer iterations
(``+ n/4``: the coarse-grid corrections' iterations, each on a quarter of the unknowns).

Run from the repository root::

    .venv/bin/python benchmarks/bench_rtv_kernels.py --base 18bf34a --rounds 8 \\
        --photos astronaut camera --size 512
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, print_table  # noqa: E402
from bench_rtv_tolerance import PHOTOS, SYNTHETIC, validation_set  # noqa: E402

from stexture.smoothing import METHODS  # noqa: E402
from stexture.smoothing import _rtv_cpu as current  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADERS = ("image", "threads", "base best / median (ms)", "now best / median (ms)",
           "speed-up best / median", "base CG iterations", "now CG iterations")


def load_base(commit: str):
    """``_rtv_cpu`` as it stood at ``commit``, imported as a package sibling of the current
    one (it imports ``._rtv_common`` relatively, which has not changed)."""
    source = subprocess.run(["git", "show", f"{commit}:stexture/smoothing/_rtv_cpu.py"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="rtv-base-"))
    path = folder / "_rtv_cpu_base.py"
    path.write_text(source.replace("from ._rtv_common", "from stexture.smoothing._rtv_common"))
    spec = importlib.util.spec_from_file_location("_rtv_cpu_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _smooth(module, image, tol):
    defaults = dict(METHODS["rtv"].defaults)
    return lambda counts=None, coarse=None: module._rtv_image(
        image, defaults["lam"], defaults["sigma"], defaults["sharpness"], defaults["n_iter"],
        tol, defaults["max_cg_iter"], counts, *(() if coarse is None else (coarse,)))


def _iterations(module, run) -> str:
    counts: list[int] = []
    coarse: list[int] = []
    if module is current:
        run(counts, coarse)
    else:
        run(counts)
    return f"{sum(counts)}" + (f" + {sum(coarse)}/4" if coarse else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="18bf34a", help="commit of the earlier kernel")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--photos", nargs="+", default=["astronaut", "camera"],
                        choices=PHOTOS)
    parser.add_argument("--synthetic", action="store_true",
                        help="add the synthetic furniture scenes")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[numba.get_num_threads()])
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or the process's CPU time (with --threads 1 the "
                             "work done, less sensitive to other processes on the cores)")
    parser.add_argument("--tol", type=float, default=None,
                        help="the current kernel's tol (default: rtv's default)")
    parser.add_argument("--base-tol", type=float, default=None,
                        help="the earlier kernel's tol (default: rtv's default)")
    args = parser.parse_args(argv)
    print(machine_line())
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    base = load_base(args.base)
    default_tol = METHODS["rtv"].defaults["tol"]
    images = validation_set((args.size,), tuple(args.photos),
                            SYNTHETIC if args.synthetic else ())
    rows = []
    for name, image in images:
        runs = {"base": _smooth(base, image, args.base_tol or default_tol),
                "now": _smooth(current, image, args.tol or default_tol)}
        for threads in args.threads:
            numba.set_num_threads(threads)
            times: dict[str, list[float]] = {"base": [], "now": []}
            for run in runs.values():
                run()  # compile and warm the caches
            for k in range(args.rounds):
                for key in (("base", "now") if k % 2 == 0 else ("now", "base")):
                    start = clock()
                    runs[key]()
                    times[key].append(1e3 * (clock() - start))
            best = {key: min(v) for key, v in times.items()}
            median = {key: statistics.median(v) for key, v in times.items()}
            rows.append([
                name, threads, f"{best['base']:.0f} / {median['base']:.0f}",
                f"{best['now']:.0f} / {median['now']:.0f}",
                f"{best['base'] / best['now']:.2f} / {median['base'] / median['now']:.2f}",
                _iterations(base, runs["base"]), _iterations(current, runs["now"])])
            print(*rows[-1], sep=" | ", flush=True)
    print_table(HEADERS, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
