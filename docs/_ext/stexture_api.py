"""The API reference, generated from the public modules' ``__all__`` and their docstrings.

Each public name is documented once, at its *owner*: a name that ``stexture`` re-exports
is documented as ``stexture.NAME``; any other name at the most specific public module that
exports it (``stexture.shards.format.read_manifest``, not its re-export in
``stexture.shards``). ``builder-inited`` writes one page per public module into
``api/generated/`` (never committed); ``env-check-consistency`` then checks that every
public name of every public module is in the reference with a docstring of its own, and that
every public subpackage of ``stexture`` is listed in :data:`PUBLIC_MODULES`: a miss is a
warning, which ``-W`` turns into a failed build.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.nodes import make_refnode

logger = logging.getLogger(__name__)

#: The modules whose ``__all__`` is public API, in the order of the reference. The
#: subpackages are the public packages of ``stexture``; the modules are the public ones
#: that users import directly (the three smoothing methods, mixing, the shard cache and
#: the label sidecars, the teacher targets and the statistics of a sweep).
PUBLIC_MODULES = (
    "stexture",
    "stexture.smoothing",
    "stexture.smoothing.rtv",
    "stexture.smoothing.rgf",
    "stexture.smoothing.tv",
    "stexture.mixing",
    "stexture.loader",
    "stexture.shards",
    "stexture.shards.format",
    "stexture.shards.labels",
    "stexture.shards.cache",
    "stexture.training",
    "stexture.training.teachers",
    "stexture.training.losses",
    "stexture.training.stats",
    "stexture.datasets",
    "stexture.imageio",
)
#: Packages of ``stexture`` that are internals, not API: the command line's modules (the
#: commands are documented by their ``--help``, on the command-line page).
INTERNAL_PACKAGES = ("stexture.commands",)
GENERATED = Path("api") / "generated"
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None))


def public_names(module_name: str) -> list[str]:
    """The names of ``module_name``'s ``__all__``, less dunders such as ``__version__``."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise ValueError(f"{module_name} is listed as public but has no __all__")
    return [n for n in names if not (n.startswith("__") and n.endswith("__"))]


def _same(a: Any, b: Any) -> bool:
    return a is b and not isinstance(a, _IMMUTABLE)


def owners() -> dict[str, list[str]]:
    """For each public module, the public names documented on its page."""
    modules = {name: importlib.import_module(name) for name in PUBLIC_MODULES}
    top = {n: getattr(modules["stexture"], n) for n in public_names("stexture")}
    pages: dict[str, list[str]] = {name: [] for name in PUBLIC_MODULES}
    pages["stexture"] = list(top)
    for name in PUBLIC_MODULES[1:]:
        for member in public_names(name):
            obj = getattr(modules[name], member)
            if any(_same(obj, o) for o in top.values()):
                continue  # documented as stexture.<member>
            exporters = [m for m in PUBLIC_MODULES[1:] if member in public_names(m)
                         and (getattr(modules[m], member) is obj)]
            where = getattr(obj, "__module__", None) or ""
            # the most specific exporter on the object's own module path, else the first
            on_path = [m for m in exporters if where == m or where.startswith(m + ".")]
            owner = max(on_path, key=len) if on_path else exporters[0]
            if owner == name:
                pages[name].append(member)
    return pages


def names_defined_in(files: list[str]) -> list[str]:
    """The documented full names of the public objects defined in ``files`` (paths under
    ``stexture/``, such as ``smoothing/rtv.py``)."""
    import stexture

    package = Path(stexture.__file__).resolve().parent
    wanted = {(package / f).resolve() for f in files}
    names = []
    for module_name, members in owners().items():
        module = importlib.import_module(module_name)
        for member in members:
            try:
                source = inspect.getsourcefile(getattr(module, member))
            except TypeError:  # data: no source file of its own
                continue
            if source and Path(source).resolve() in wanted:
                names.append(f"{module_name}.{member}")
    return names


def _directive(module_name: str, member: str, obj: Any) -> str:
    target = f"{module_name}.{member}"
    if inspect.isclass(obj):
        return f".. autoclass:: {target}\n   :members:\n   :show-inheritance:\n"
    if callable(obj):
        return f".. autofunction:: {target}\n"
    return f".. autodata:: {target}\n   :no-value:\n"


def write_pages(srcdir: Path) -> None:
    """Write ``api/generated/<module>.rst`` for every public module (only when changed, so
    an incremental build stays incremental)."""
    out = srcdir / GENERATED
    out.mkdir(parents=True, exist_ok=True)
    for module_name, members in owners().items():
        module = importlib.import_module(module_name)
        lines = [module_name, "=" * len(module_name), "",
                 f".. automodule:: {module_name}", "   :no-members:", ""]
        for member in sorted(members, key=lambda m: (not inspect.isclass(getattr(module, m)),
                                                     m.lower())):
            lines += [_directive(module_name, member, getattr(module, member)), ""]
        text = "\n".join(lines)
        page = out / f"{module_name}.rst"
        if not page.exists() or page.read_text(encoding="utf-8") != text:
            page.write_text(text, encoding="utf-8")
    for stale in out.glob("*.rst"):
        if stale.stem not in PUBLIC_MODULES:
            stale.unlink()


def _builder_inited(app: Sphinx) -> None:
    write_pages(Path(app.srcdir))


def missing_packages() -> list[str]:
    """Public-looking subpackages of ``stexture`` that :data:`PUBLIC_MODULES` leaves out."""
    import stexture

    found = []
    for info in pkgutil.walk_packages(stexture.__path__, "stexture."):
        parts = info.name.split(".")
        if (info.ispkg and not any(p.startswith("_") for p in parts)
                and info.name not in PUBLIC_MODULES
                and not info.name.startswith(INTERNAL_PACKAGES)):
            found.append(info.name)
    return found


def _check(app: Sphinx, env: Any) -> None:
    documented = env.get_domain("py").objects
    for package in missing_packages():
        logger.warning("public subpackage %s is not in the API reference (add it to "
                       "PUBLIC_MODULES in docs/_ext/stexture_api.py)", package)
    for module_name, members in owners().items():
        if module_name not in documented:
            logger.warning("public module %s is missing from the API reference", module_name)
        module = importlib.import_module(module_name)
        for member in members:
            target = f"{module_name}.{member}"
            obj = getattr(module, member)
            if target not in documented:
                logger.warning("public name %s is missing from the API reference", target)
            elif (inspect.isclass(obj) or inspect.isroutine(obj)) and not obj.__doc__:
                logger.warning("public name %s has no docstring", target)


def _source_module(node: Any) -> str | None:
    """The module a docstring came from, from the node's source
    (``.../stexture/training/trainer.py:docstring of ...``)."""
    source = (node.source or "").split(":docstring of")[0]
    path = Path(source)
    root = Path(__file__).resolve().parents[2]
    try:
        parts = list(path.resolve().relative_to(root).with_suffix("").parts)
    except ValueError:
        return None
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) if parts and parts[0] == "stexture" else None


def resolve_name(target: str, modules: list[str]) -> tuple[bool, Any]:
    """``(True, obj)`` when ``target`` names a module or an object of stexture, tried as
    written and relative to each of ``modules``; ``(False, None)`` when it names nothing."""
    candidates = [target] if not target.startswith(".") else []
    for module in filter(None, modules):
        parts = module.split(".")
        for cut in range(len(parts), 0, -1):  # the module, then its parents
            base = ".".join(parts[:cut])
            candidates.append(base + target if target.startswith(".")
                              else f"{base}.{target}")
    for name in candidates:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = _attribute(obj, attr)
            except AttributeError:
                break
            if (getattr(obj, "__name__", "") or "").startswith("stexture") or \
                    name.startswith("stexture"):
                return True, obj
            break
    return False, None


def _attribute(obj: Any, name: str) -> Any:
    """``getattr``; for a class also a dataclass field without a default and an instance
    attribute its docstring's *Attributes* section documents (neither is a class
    attribute)."""
    try:
        return getattr(obj, name)
    except AttributeError:
        fields = getattr(obj, "__dataclass_fields__", {})
        if name in fields:
            return fields[name]
        if inspect.isclass(obj) and obj.__doc__:
            from numpydoc.docscrape import NumpyDocString

            attributes = NumpyDocString(inspect.getdoc(obj))["Attributes"]
            for attribute in attributes:
                if attribute.name == name:
                    return attribute
        raise


def _missing_reference(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """A docstring's reference to a name the reference does not document under that
    spelling: a public object re-exported elsewhere links to where it is documented; a
    real object of stexture's internals (a private module, a helper) is shown as code
    without a link; a name that does not exist stays a broken reference (an error)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    modules = [node.get("py:module"), _source_module(node)]
    if node.get("py:class") and node.get("py:module"):
        modules.insert(0, f"{node['py:module']}.{node['py:class']}")
    found, obj = resolve_name(target, modules)
    if not found:
        return None
    for other, fullname, entry in _documented_objects(env):
        if _same(other, obj):
            return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id,
                                contnode, fullname)
    return contnode


def _documented_objects(env: Any) -> list[tuple[Any, str, Any]]:
    """``(object, full name, entry)`` of every object the reference documents (cached on
    the environment for the write phase, when the set no longer changes)."""
    documented = env.get_domain("py").objects
    cached = getattr(env, "_stexture_documented", None)
    if cached is None or cached[0] != len(documented):
        objects = []
        for fullname, entry in documented.items():
            ok, obj = resolve_name(fullname, []) if not entry.aliased else (False, None)
            if ok:
                objects.append((obj, fullname, entry))
        cached = env._stexture_documented = (len(documented), objects)
    return cached[1]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the page writer, the completeness check and the reference resolver."""
    app.connect("builder-inited", _builder_inited)
    app.connect("env-check-consistency", _check)
    app.connect("missing-reference", _missing_reference)
    return {"version": "1", "parallel_read_safe": True}
