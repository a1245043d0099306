"""stexture: structure/texture decomposition and cue-conflict training data.

The public API is re-exported here; see ``__all__``. The parts that need torch (mixing,
loader, training) are imported on first use, so that decomposition workers, which never
touch torch, start without paying for its import.
"""

import _thread
import importlib
import os
import signal
import sys
import threading
import time
from typing import Any


def _quiet_interrupt(kind: type, value: BaseException, traceback: Any,
                     _previous: Any = sys.excepthook) -> None:
    """``stexture``, the command: a Ctrl-C before ``cli.main`` takes over (these imports take
    a second or more) ends it as an interrupted command ends, one line and exit status 130,
    not a traceback of the import machinery."""
    if not issubclass(kind, KeyboardInterrupt):
        _previous(kind, value, traceback)
        return
    sys.stdout.flush()
    print("stexture: interrupted", file=sys.stderr, flush=True)
    os._exit(130)  # nothing to clean up: no command has started


def _interrupt_main_soon(main: int) -> None:
    time.sleep(0.05)
    signal.pthread_kill(main, signal.SIGINT)


def _redeliver_interrupt(unraisable: Any, _previous: Any = sys.unraisablehook) -> None:
    """A Ctrl-C that lands in a callback Python cannot raise from (an import lock's weakref
    callback, as the lazy imports run) is delivered again to the main thread, where the
    command ends quietly, instead of a printed "Exception ignored" traceback and a lost
    interrupt."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        # from another thread, a moment later: raised before this hook returns it would be
        # unraisable again; a real signal also wakes a main thread that sleeps or waits
        _thread.start_new_thread(_interrupt_main_soon, (threading.main_thread().ident,))
        return
    _previous(unraisable)


def _exit_interrupted(signum: int, frame: Any) -> None:
    """SIGINT while the command starts (imports, its parser): end at once, quietly. Raised as
    KeyboardInterrupt there it could come back as another error (numpy turns one during its
    import into an ImportError); ``cli`` restores Python's handler before the command runs."""
    _quiet_interrupt(KeyboardInterrupt, KeyboardInterrupt(), None)


# the console script, or `python -m stexture` (argv[0] is "-m" while its package imports)
if sys.argv and os.path.basename(sys.argv[0]) in ("stexture", "-m"):
    sys.excepthook = _quiet_interrupt
    sys.unraisablehook = _redeliver_interrupt
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _exit_interrupted)

from ._device import CudaUnavailableError, cuda_available, resolve_device  # noqa: E402
from .decompose import decompose  # noqa: E402
from .smoothing import METHODS, Method, get_method  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "CueConflictMix": "stexture.mixing",
    "MixConfig": "stexture.mixing",
    # OpenCV and SciPy: a second of `stexture --help` were they imported here
    "make_furniture_dataset": "stexture.datasets",
    "render_furniture": "stexture.datasets",
    "make_eval_loader": "stexture.loader",
    "make_loader": "stexture.loader",
    "label_shards": "stexture.training.soft_labels",
    "read_label_set": "stexture.shards.labels",
    "run_demo": "stexture.demo",
    "shape_bias": "stexture.training.metrics",
    "split_quality": "stexture.datasets",
    "sweep": "stexture.training.runner",
}

__all__ = [
    "METHODS",
    "CudaUnavailableError",
    "CueConflictMix",
    "Method",
    "MixConfig",
    "__version__",
    "cuda_available",
    "decompose",
    "get_method",
    "label_shards",
    "make_eval_loader",
    "make_furniture_dataset",
    "make_loader",
    "read_label_set",
    "render_furniture",
    "resolve_device",
    "run_demo",
    "shape_bias",
    "split_quality",
    "sweep",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stexture' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
