"""Refused credentials against a real S3 server (SeaweedFS with one identity, the session
fixture ``s3_server``): a wrong secret, an unknown key and anonymous requests are refused
by the server itself, and every entry point (reading the manifest, the loaders, the shard
cache, the command line) says so in a line that names the URL, asks to check the
credentials, and leaves nothing behind in the cache."""

from __future__ import annotations

import uuid

import pytest
from shardfactory import make_shard_dir

from stexture import cli, make_eval_loader, make_loader
from stexture.shards import read_manifest
from stexture.shards.cache import ShardCache

pytest.importorskip("s3fs")

REFUSED = {
    "wrong secret": {"key": "stexture-test", "secret": "not-the-secret"},
    "unknown key": {"key": "somebody-else", "secret": "stexture-test"},
    "anonymous": {"anon": True},
}


@pytest.fixture(scope="module")
def s3_folder(s3_server, tmp_path_factory):
    """A small shard folder uploaded with the accepted credentials: (local, URL)."""
    local = make_shard_dir(tmp_path_factory.mktemp("s3-credentials") / "shards",
                           per_class=2, val_per_class=1, size=16, seed=2)
    prefix = f"credentials-{uuid.uuid4().hex[:8]}"
    s3_server.filesystem().put(f"{local}/", f"{s3_server.bucket}/{prefix}", recursive=True)
    return local, s3_server.url(prefix)


def _options(server, which: str) -> dict:
    return {**REFUSED[which], "client_kwargs": {"endpoint_url": server.endpoint}}


def _assert_refusal(message: str, url: str) -> None:
    assert "\n" not in message
    assert "refused" in message and "check the credentials" in message
    assert url in message
    assert "not-the-secret" not in message  # a secret is never printed


def test_the_accepted_identity_reads_the_folder(s3_server, s3_folder):
    local, url = s3_folder
    assert read_manifest(url, storage_options=s3_server.storage_options).splits == \
        read_manifest(local).splits


@pytest.mark.parametrize("which", sorted(REFUSED))
def test_reading_the_manifest_with_refused_credentials_says_so(s3_server, s3_folder, which):
    _, url = s3_folder
    with pytest.raises(PermissionError) as error:
        read_manifest(url, storage_options=_options(s3_server, which))
    _assert_refusal(str(error.value), f"{url}/manifest.json")


@pytest.mark.parametrize(("make", "arguments"), [(make_loader, {"k": 0.8}),
                                                 (make_eval_loader, {})])
def test_the_loaders_refuse_at_construction_and_write_no_cache(s3_server, s3_folder,
                                                               tmp_path, make, arguments):
    _, url = s3_folder
    cache = tmp_path / "cache"
    with pytest.raises(PermissionError) as error:
        make(url, storage_options=_options(s3_server, "wrong secret"), cache_dir=cache,
             **arguments)
    _assert_refusal(str(error.value), url)
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


def test_the_shard_cache_names_the_shard_it_was_refused(s3_server, s3_folder, tmp_path):
    # the manifest may be readable under other credentials than the shards (a prefix
    # policy): the cache's own refusal names the shard and leaves no partial download
    local, url = s3_folder
    shard = read_manifest(local).splits["train"][0]
    cache = ShardCache(url, tmp_path / "cache",
                       storage_options=_options(s3_server, "unknown key"), retries=1,
                       backoff=0.01)
    with pytest.raises(PermissionError) as error:
        cache.local_path(shard.name, shard.sha256)
    message = str(error.value)
    assert shard.name in message and "check the credentials" in message
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()
                and not p.name.endswith(".lock")]


def test_the_command_line_says_refused_without_a_traceback(s3_server, s3_folder, capsys):
    _, url = s3_folder
    code = cli.main(["inspect", url, "--endpoint-url", s3_server.endpoint,
                     "--storage-option", "key=stexture-test",
                     "--storage-option", "secret=not-the-secret"])
    assert code == 1
    problem, summary = capsys.readouterr().err.splitlines()  # inspect's problem and its count
    _assert_refusal(problem, url)
    assert summary == f"stexture inspect: 1 problem(s) in {url}"
