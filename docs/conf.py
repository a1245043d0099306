"""Sphinx configuration of stexture's documentation (why Sphinx: docs/README.md).

Build: ``bash .ci/docs`` (warnings are errors). The API reference is generated from the
docstrings by ``_ext/stexture_api.py``; the gallery runs ``examples/plot_*.py``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(ROOT))
# the gallery's scripts and the API pages import stexture; no GPU is needed or used
os.environ.setdefault("MPLBACKEND", "Agg")

import stexture_api  # noqa: E402
import torch  # noqa: E402

import stexture  # noqa: E402


def numpydoc_files() -> list[str]:
    """The files under ``stexture/`` that ruff's pydocstyle (numpy convention) checks, read
    from pyproject.toml's ``"!stexture/{a.py,b/c.py}" = ["D"]`` per-file ignore."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    ignores = settings["tool"]["ruff"]["lint"]["per-file-ignores"]
    for pattern in ignores:
        match = re.fullmatch(r"!stexture/\{(.*)\}", pattern)
        if match:
            return match[1].split(",")
    raise RuntimeError("pyproject.toml no longer names the numpydoc files as "
                       '"!stexture/{...}" = ["D"]; update docs/conf.py')

project = "stexture"
author = "the stexture developers"
copyright = "2026, the stexture developers"  # noqa: A001
release = version = stexture.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "stexture_api",
    "stexture_cli",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "examples",
                    "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.md5", "auto_examples/*.json"]

# broken cross-references are errors (with -W); names of other libraries are not
# documented here (the machines have no network for intersphinx), so they are let through
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|torch|nn|scipy|PIL|fsspec|ray|cv2|skimage|matplotlib|typing|"
               r"collections|pathlib|os|io|concurrent|multiprocessing|threading|json|"
               r"datetime|dataclasses|enum|webdataset|wids|datasets|lightning|accelerate|"
               r"ignite)(\..*)?"),
    # builtins and annotations that are not documented objects
    (r"py:.*", r"(int|float|str|bytes|bool|dict|list|tuple|set|None|object|callable|"
               r"optional|Path|Any|Callable|Iterable|Iterator|Sequence|Mapping|ndarray|"
               r"array_like|array-like|default|Exception|ValueError|RuntimeError|"
               r"OSError|KeyError|TypeError|Warning|UserWarning)"),
]

# autodoc + numpydoc: the docstrings are the single source of the API text
autodoc_typehints = "none"  # the numpydoc Parameters sections give the types
autodoc_member_order = "bysource"
# torch.nn.Module.forward's text is not stexture's: an undocumented override shows none
autodoc_inherit_docstrings = False
autodoc_default_options = {"exclude-members": "__init__"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# numpydoc's own checks, as warnings: a parameter in the signature missing from the
# Parameters section (PR01), or documented but not in the signature (PR02). They apply to
# the modules that pyproject.toml's ruff settings already hold to numpydoc (its
# per-file-ignores: "!stexture/{...}" = ["D"]), so converting a module there widens both.
numpydoc_validation_checks = {"PR01", "PR02"}
numpydoc_validation_exclude = {r"^(?!(" + "|".join(
    re.escape(name) for name in stexture_api.names_defined_in(numpydoc_files())) + r")(\.|$))"}

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# The gallery runs in this process. One torch thread: on a busy 2-core machine (CI runs the
# docs right after the tests) torch's OpenMP threads wait on each other, and the sweep
# example took 36 s with two against 9 s with one (load average 3.7).
torch.set_num_threads(1)

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "capture_repr": (),
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
}

html_theme = "furo"
html_title = f"stexture {release}"
html_static_path: list[str] = []
