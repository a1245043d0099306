"""Sources and shards at fsspec URLs (here ``memory://``) give the same shards as local paths."""

import json
import uuid

import pytest
from pipeline_data import fast_settings, make_image_folder

from stexture.shards import storage
from stexture.shards.format import INDEX_NAME, MANIFEST_NAME, REJECTED_NAME
from stexture.shards.local import write_dataset
from stexture.shards.sources import list_sources

fsspec = pytest.importorskip("fsspec")


def run(src, out, **kwargs):
    return write_dataset(src, out, fast_settings(), workers=1, show_progress=False,
                         log=lambda line: None, **kwargs)


@pytest.fixture
def memory_root():
    """A fresh ``memory://`` folder, removed afterwards (the memory file system is global)."""
    root = f"/stexture-test-{uuid.uuid4().hex}"
    yield f"memory://{root}"
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


def url_files(url):
    fs, path = fsspec.core.url_to_fs(url)
    return {name.rsplit("/", 1)[1]: fs.cat_file(name) for name in fs.find(path)}


def local_files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def without_source(manifest_bytes):
    manifest = json.loads(manifest_bytes)
    manifest.pop("source")
    return manifest


def test_a_url_location_is_kept_as_a_string_and_joined_with_slashes():
    assert storage.location("s3://bucket/photos/") == "s3://bucket/photos"
    assert storage.join("s3://bucket/photos", "a/b.png") == "s3://bucket/photos/a/b.png"
    assert storage.parent("s3://bucket/photos/list.csv") == "s3://bucket/photos"
    assert storage.name("s3://bucket/photos/list.csv") == "list.csv"
    assert not storage.is_url("photos/s3://odd") and not storage.is_url("C:/photos")


def test_atomic_writes_listing_and_removal_through_fsspec(memory_root):
    storage.make_dirs(memory_root)
    storage.write_atomically(storage.join(memory_root, "a.tar"), b"abc")
    storage.write_atomically(storage.join(memory_root, "sub/b.png"), b"xyz")
    assert storage.read_bytes(storage.join(memory_root, "a.tar")) == b"abc"
    assert storage.list_dir(memory_root) == (["a.tar"], ["sub"])
    assert storage.walk_files(memory_root) == ["a.tar", "sub/b.png"]
    storage.remove(storage.join(memory_root, "a.tar"))
    storage.remove(storage.join(memory_root, "a.tar"))  # already gone: not an error
    assert storage.list_dir(memory_root) == ([], ["sub"])
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(memory_root, "a.tar"))


def test_memory_urls_give_the_bytes_of_local_paths_and_resume(tmp_path, memory_root):
    make_image_folder(tmp_path / "src", per_class=2)
    run(tmp_path / "src", tmp_path / "local")
    fs, root = fsspec.core.url_to_fs(memory_root)
    fs.put(str(tmp_path / "src"), f"{root}/src", recursive=True)
    src, out = f"{memory_root}/src", f"{memory_root}/out"

    summary = run(src, out)
    remote, local = url_files(out), local_files(tmp_path / "local")
    assert sorted(remote) == sorted(local)
    for name in remote:
        if name == MANIFEST_NAME:
            assert without_source(remote[name]) == without_source(local[name])
        else:
            assert remote[name] == local[name], name
    assert json.loads(remote[MANIFEST_NAME])["source"] == src
    assert summary.written == 2 and {INDEX_NAME, REJECTED_NAME} <= set(remote)

    fs.rm_file(f"{root}/out/train-000000.tar")
    again = run(src, out)
    assert (again.written, again.skipped) == (1, 1)
    assert url_files(out) == remote


def test_shards_at_a_url_are_a_source(tmp_path, memory_root):
    make_image_folder(tmp_path / "src", per_class=2)
    out = f"{memory_root}/first"
    run(tmp_path / "src", out)
    listing = list_sources(out)
    assert len(listing.items) == 6 and not listing.problems
    assert {item.label for item in listing.items} == {"brick", "grass", "gravel"}
    assert all(item.path.startswith(memory_root) and item.member for item in listing.items)
