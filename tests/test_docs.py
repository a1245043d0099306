"""The documentation's API checks (docs/_ext/stexture_api.py), without building the site:
every public name has one page, a missing or undocumented one is reported, and a reference
resolves only to a name that exists. `bash .ci/docs` runs the real build (in .ci/run)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
stexture_api = pytest.importorskip("stexture_api")  # needs sphinx: the docs extra


class _Recorder:
    def __init__(self):
        self.messages = []

    def warning(self, message, *args):
        self.messages.append(message % args)


def _env(objects):
    return SimpleNamespace(get_domain=lambda name: SimpleNamespace(objects=objects))


def test_every_public_name_has_exactly_one_page():
    pages = stexture_api.owners()
    documented = {}
    for module_name, members in pages.items():
        module = importlib.import_module(module_name)
        for member in members:
            documented.setdefault((member, id(getattr(module, member))), []).append(module_name)
    for module_name in stexture_api.PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for member in stexture_api.public_names(module_name):
            where = documented.get((member, id(getattr(module, member))))
            assert where and len(where) == 1, (module_name, member, where)
    assert "make_loader" in pages["stexture"]  # re-exports are documented as stexture.NAME
    assert "make_loader" not in pages["stexture.loader"]
    assert "read_manifest" in pages["stexture.shards.format"]  # the most specific module
    assert "read_manifest" not in pages["stexture.shards"]
    assert stexture_api.missing_packages() == []


def test_a_missing_or_undocumented_public_name_is_reported(monkeypatch):
    pages = stexture_api.owners()
    objects = {name: None for name in stexture_api.PUBLIC_MODULES}
    objects.update({f"{m}.{n}": None for m, names in pages.items() for n in names})
    recorder = _Recorder()
    monkeypatch.setattr(stexture_api, "logger", recorder)
    stexture_api._check(None, _env(objects))
    assert recorder.messages == []

    del objects["stexture.make_loader"]
    stexture_api._check(None, _env(objects))
    assert recorder.messages == ["public name stexture.make_loader is missing from the API "
                                 "reference"]

    recorder.messages.clear()
    import stexture.mixing

    def undocumented():
        pass

    monkeypatch.setattr(stexture.mixing, "__all__", [*stexture.mixing.__all__, "undocumented"])
    monkeypatch.setattr(stexture.mixing, "undocumented", undocumented, raising=False)
    objects["stexture.make_loader"] = None
    objects["stexture.mixing.undocumented"] = None
    stexture_api._check(None, _env(objects))
    assert recorder.messages == ["public name stexture.mixing.undocumented has no docstring"]


@pytest.mark.parametrize(("target", "modules", "exists"), [
    ("stexture.shards.decode_sample", [], True),           # a re-export
    ("_rtv_common", ["stexture.smoothing.rtv"], True),     # a private sibling module
    ("CorruptSampleWarning", ["stexture.loader.dataloader"], True),  # the parent's name
    (".storage", ["stexture.shards"], True),
    ("stexture.decompose_image", [], False),
    ("no_such_name", ["stexture.loader"], False),
])
def test_a_reference_resolves_only_to_a_name_that_exists(target, modules, exists):
    assert stexture_api.resolve_name(target, modules)[0] is exists


def test_the_readme_figure_is_drawn_small_and_the_readme_shows_it(tmp_path):
    """docs/readme_figure.py draws the README's picture (2 rows x image, structure, texture,
    composite) under the 200 kB that lets it be committed; the README links the committed
    file."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "docs"))
    import readme_figure

    path = readme_figure.draw(tmp_path / "figure.png")
    assert path.stat().st_size < 200 * 1024
    with Image.open(path) as picture:
        assert picture.size == (640, 344)
    committed = readme_figure.OUT.relative_to(ROOT).as_posix()
    assert (ROOT / committed).is_file()
    assert f"]({committed})" in (ROOT / "README.md").read_text(encoding="utf-8")
