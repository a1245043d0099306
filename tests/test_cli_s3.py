"""The command line against a real S3 server (SeaweedFS, the session fixture ``s3_server``):
``--storage-option`` / ``--endpoint-url``, ``decompose`` local -> S3 and S3 -> S3 with both
engines writing the bytes of a local run, ``inspect`` and a one-epoch ``sweep`` from S3,
webdataset and wids reading a folder in S3, and one fast line for an endpoint that does not
answer."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from pipeline_data import FAST_ARGS, make_image_folder

from stexture import cli
from stexture.commands._storage_args import parse_storage_options, storage_session
from stexture.shards import (
    decode_sample,
    hf_dataset,
    layer_dict,
    read_manifest,
    storage,
    wds_handlers,
    webdataset_urls,
    wids_use_fsspec,
)
from stexture.shards.format import MANIFEST_NAME, iter_tar_samples

DECOMPOSE = [*FAST_ARGS, "--shard-size", "3", "--val-fraction", "0.25"]


# ---------------------------------------------------------------- options, no server


def test_storage_options_are_json_values_with_dotted_keys_and_urls_kept_whole():
    options = parse_storage_options(
        ["anon=false", "client_kwargs.region_name=eu-west-1", "config_kwargs.retries="
         '{"max_attempts": 2}', "default_block_size=1048576", "profile=default"],
        endpoint_url="http://127.0.0.1:9000")
    assert options == {"anon": False, "default_block_size": 1048576, "profile": "default",
                       "client_kwargs": {"region_name": "eu-west-1",
                                         "endpoint_url": "http://127.0.0.1:9000"},
                       "config_kwargs": {"retries": {"max_attempts": 2}}}
    # a value that is not JSON stays text, '=' in it included; credentials are always text
    assert parse_storage_options(["token=a=b", "key=1234", "secret=true"]) == {
        "token": "a=b", "key": "1234", "secret": "true"}


@pytest.mark.parametrize(("pairs", "message"), [
    (["anon"], "not of the form KEY=VALUE"),
    (["client_kwargs..x=1"], "empty part"),
    (["anon=true", "anon=false"], "given twice"),
    (["client_kwargs=1", "client_kwargs.endpoint_url=x"], "given a value already"),
])
def test_a_bad_storage_option_is_named(pairs, message):
    with pytest.raises(ValueError, match=message):
        parse_storage_options(pairs)


def test_the_environment_s_options_are_defaults_under_explicit_ones(monkeypatch):
    monkeypatch.setenv(storage.STORAGE_OPTIONS_VARIABLE, json.dumps(
        {"key": "env", "client_kwargs": {"endpoint_url": "http://env", "region_name": "r"}}))
    merged = storage.storage_options_for({"client_kwargs": {"endpoint_url": "http://given"}})
    assert merged == {"key": "env", "client_kwargs": {"endpoint_url": "http://given",
                                                      "region_name": "r"}}
    with storage.using_storage_options({"secret": "s"}):
        assert storage.default_storage_options()["secret"] == "s"
        assert storage.default_storage_options()["key"] == "env"
    assert "secret" not in storage.default_storage_options()  # restored
    monkeypatch.setenv(storage.STORAGE_OPTIONS_VARIABLE, "{not json")
    with pytest.raises(ValueError, match=storage.STORAGE_OPTIONS_VARIABLE):
        storage.storage_options_for()


def test_storage_options_without_a_url_are_refused(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path), "--endpoint-url", "http://127.0.0.1:1"]) == 2
    assert "for a folder or source at a URL" in capsys.readouterr().err


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", ["inspect", "decompose", "sweep"])
def test_an_unreachable_endpoint_is_one_line_in_seconds(command, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    url = "s3://no-such-bucket/some/shards"
    argv = {"inspect": [url], "decompose": [str(tmp_path), url],
            "sweep": [url, "--out", str(tmp_path / "runs")]}[command]
    importlib.import_module(f"stexture.commands.{command}")  # torch for sweep: not timed
    start = time.perf_counter()
    code = cli.main([command, *argv, "--endpoint-url", endpoint, "-q"])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert url in err and endpoint in err and "s3:/no-such" not in err
    assert seconds < 10, seconds  # botocore and s3fs retrying: 27-47 s before


def test_an_http_folder_that_refuses_is_one_line(capsys):
    url = f"http://127.0.0.1:{_closed_port()}/shards"
    assert cli.main(["inspect", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach the storage of {url}" in err


def test_a_storage_library_s_own_error_becomes_one_line_naming_the_url():
    botocore = pytest.importorskip("botocore.exceptions")
    args = argparse.Namespace(storage_option=[], endpoint_url=None)
    error = botocore.ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your\n"
                                                                      "request rate"}},
                                 "PutObject")
    with pytest.raises(OSError, match=r"^storage error on memory://x/shards: ClientError: "
                                      r"An error occurred \(SlowDown\)[^\n]*rate$"):
        with storage_session(args, ["memory://x/shards"]):
            raise error


def test_label_refuses_a_url_with_a_message(capsys):
    assert cli.main(["label", "s3://bucket/shards"]) == 2
    assert "s3://bucket/shards is a URL: stexture label writes" in capsys.readouterr().err


def test_a_ray_job_started_with_storage_options_hands_them_to_its_workers(monkeypatch):
    ray = pytest.importorskip("ray")
    from stexture._ray import connect

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    with storage.using_storage_options({"client_kwargs": {"endpoint_url": "http://h:1"}}):
        assert connect("auto")  # an existing cluster: its workers have their own env
        shared = os.environ[storage.STORAGE_OPTIONS_VARIABLE]
    assert calls[0]["runtime_env"] == {"env_vars": {storage.STORAGE_OPTIONS_VARIABLE: shared}}
    assert connect(None) and "runtime_env" not in calls[1]  # none given: none passed


# ---------------------------------------------------------------- against the server


def _options(server) -> list[str]:
    """The server given on the command line only (no environment)."""
    return ["--endpoint-url", server.endpoint, "--storage-option", "key=stexture-test",
            "--storage-option", "secret=stexture-test"]


def _files(fs, url: str) -> dict[str, bytes]:
    """name -> bytes of every file under the folder at ``url``."""
    root = url.split("://", 1)[1]
    return {path[len(root) + 1:]: fs.cat_file(path) for path in fs.find(root)}


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _same_as_local(got: dict[str, bytes], want: dict[str, bytes]) -> None:
    """Every file byte-identical, the manifest except for the source it names."""
    assert sorted(got) == sorted(want)
    for name, data in want.items():
        if name == MANIFEST_NAME:
            a, b = json.loads(got[name]), json.loads(data)
            a.pop("source"), b.pop("source")  # the source as given: a path or a URL
            assert a == b
        else:
            assert got[name] == data, name


@pytest.fixture(scope="module")
def dataset(s3_server, tmp_path_factory):
    """3 classes x 4 photos, locally and under a fresh prefix of the bucket, and the shards
    a local decompose makes of them (the reference, with its stdout)."""
    root = tmp_path_factory.mktemp("cli-s3")
    make_image_folder(root / "photos", per_class=4)
    prefix = s3_server.url(f"cli-{uuid.uuid4().hex[:8]}")
    fs = s3_server.filesystem()
    fs.put(f"{root / 'photos'}/", f"{prefix.split('://', 1)[1]}/photos", recursive=True)
    return {"root": root, "prefix": prefix, "fs": fs}


@pytest.fixture(scope="module")
def local_run(dataset):
    out = dataset["root"] / "local"
    assert cli.main(["decompose", str(dataset["root"] / "photos"), str(out), *DECOMPOSE]) == 0
    return out


@pytest.fixture(scope="module")
def s3_run(s3_server, dataset, local_run):
    """``decompose`` local photos -> S3, the server named on the command line."""
    url = f"{dataset['prefix']}/from-local"
    assert cli.main(["decompose", str(dataset["root"] / "photos"), url, *DECOMPOSE,
                     *_options(s3_server)]) == 0
    return url


def test_decompose_local_to_s3_writes_the_local_bytes(s3_run, dataset, local_run):
    _same_as_local(_files(dataset["fs"], s3_run), _local_files(local_run))


def test_decompose_s3_to_s3_writes_the_local_bytes(s3_server, dataset, local_run, monkeypatch):
    for name, value in s3_server.env.items():  # this time through the usual environment
        monkeypatch.setenv(name, value)
    url = f"{dataset['prefix']}/from-s3"
    assert cli.main(["decompose", f"{dataset['prefix']}/photos", url, *DECOMPOSE]) == 0
    _same_as_local(_files(dataset["fs"], url), _local_files(local_run))


def test_the_few_shards_warning_is_about_plain_webdataset(dataset, tmp_path, capsys):
    assert cli.main(["decompose", str(dataset["root"] / "photos"), str(tmp_path / "o"),
                     *DECOMPOSE]) == 0
    warning = next(line for line in capsys.readouterr().out.splitlines()
                   if line.startswith("warning:"))
    assert "plain webdataset" in warning and "make_loader splits by sample" in warning


def test_missing_credentials_are_one_line(s3_server, s3_run, capsys, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", storage.STORAGE_OPTIONS_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert cli.main(["inspect", s3_run, "--endpoint-url", s3_server.endpoint]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no credentials for {s3_run}" in err


def test_inspect_checks_a_folder_in_s3(s3_server, s3_run, dataset, tmp_path, capsys,
                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["inspect", s3_run, "--per-class", "1", *_options(s3_server)]) == 0
    out = capsys.readouterr().out
    assert f"{s3_run}: consistent with its manifest" in out
    assert re.search(r"^total +9 +3$", out, re.M)  # the table: 9 train, 3 val samples
    assert (tmp_path / "contact-sheet.png").is_file()  # beside us, not into the bucket
    # a shard changed in the bucket is named, by its own name, not a downloaded copy's
    changed = f"{dataset['prefix']}/changed"
    fs = dataset["fs"]
    fs.copy(s3_run.split("://", 1)[1], changed.split("://", 1)[1], recursive=True)
    shard = f"{changed.split('://', 1)[1]}/train-000001.tar"
    data = bytearray(fs.cat_file(shard))
    data[-1] ^= 1  # tar padding: still a readable tar
    fs.pipe_file(shard, bytes(data))
    assert cli.main(["inspect", changed, "--per-class", "0", "--recompute", "0",
                     *_options(s3_server)]) == 1
    err = capsys.readouterr().err
    assert "train-000001.tar: SHA-256 differs from the manifest" in err
    assert "stexture-inspect-" not in err


def test_sweep_one_epoch_from_s3_gives_the_local_results(s3_server, s3_run, local_run,
                                                         tmp_path, monkeypatch):
    monkeypatch.setenv("STEXTURE_CACHE_DIR", str(tmp_path / "cache"))
    sweep = ["--k", "0.5", "--seeds", "1", "--epochs", "1", "--image-size", "16",
             "--no-baseline", "--device", "cpu", "-q"]
    assert cli.main(["sweep", s3_run, "--out", str(tmp_path / "s3"), *sweep,
                     *_options(s3_server)]) == 0
    assert cli.main(["sweep", str(local_run), "--out", str(tmp_path / "local"), *sweep]) == 0
    def results(folder: str) -> list[dict[str, str]]:
        with open(tmp_path / folder / "results.csv", newline="") as f:
            return [{k: v for k, v in row.items() if k != "seconds"}
                    for row in csv.DictReader(f)]

    assert results("s3") == results("local")  # accuracies, shape bias, per class
    assert any((tmp_path / "cache").rglob("*.tar"))  # read through the shard cache


# ---------------------------------------------------------------- webdataset and wids


def _reference(local_run: Path, split: str) -> dict[str, np.ndarray]:
    return {s.key: s.image for path in read_manifest(local_run).shard_paths(split)
            for s in map(decode_sample, iter_tar_samples(path))}


def test_webdataset_reads_a_folder_in_s3_through_pipe_urls(s3_server, s3_run, local_run,
                                                           monkeypatch):
    wds = pytest.importorskip("webdataset")
    for name, value in s3_server.env.items():  # what the pipe: streamer reads the shard with
        monkeypatch.setenv(name, value)
    urls = webdataset_urls(s3_run, "train")
    assert all(u.startswith("pipe:") and u.endswith(".tar") and "s3://" in u for u in urls)
    assert webdataset_urls(local_run, "train") == read_manifest(local_run).shard_paths("train")
    got = {s["__key__"]: s["jpg"] for s in wds.WebDataset(urls, shardshuffle=False,
                                                          empty_check=False)
           .decode(*wds_handlers())}
    want = _reference(local_run, "train")
    assert sorted(got) == sorted(want)
    for key, image in want.items():
        np.testing.assert_array_equal(got[key], image)


def test_wids_reads_a_wids_index_in_s3(s3_server, s3_run, local_run, dataset, tmp_path,
                                       monkeypatch):
    wids = pytest.importorskip("wids")
    from wids import wids_dl

    for protocol in ("s3", "s3a", "gs", "gcs"):  # restored after the test
        monkeypatch.setitem(wids_dl.default_cmds, protocol, wids_dl.default_cmds.get(protocol))
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids"))
    wids_use_fsspec(s3_server.storage_options)
    dataset_ = wids.ShardListDataset(f"{s3_run}/val.wids.json", transformations=layer_dict)
    want = _reference(local_run, "val")
    got = {dataset_[i]["__key__"]: dataset_[i]["image"] for i in range(len(dataset_))}
    assert sorted(got) == sorted(want)
    for key, image in want.items():
        np.testing.assert_array_equal(got[key], image)
    # a shard that changed after its index was written is refused, and nothing is cached
    changed = f"{dataset['prefix']}/wids-changed"
    fs = dataset["fs"]
    fs.copy(s3_run.split("://", 1)[1], changed.split("://", 1)[1], recursive=True)
    shard = f"{changed.split('://', 1)[1]}/val-000000.tar"
    fs.pipe_file(shard, fs.cat_file(shard)[:-1] + b"\1")
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids2"))
    stale = wids.ShardListDataset(f"{changed}/val.wids.json", transformations=layer_dict)
    with pytest.raises(ValueError, match="val-000000.tar: its SHA-256 starts"):
        stale[0]
    assert not [p for p in os.listdir(tmp_path / "wids2") if "val-000000" in p]


def test_hf_dataset_reads_a_folder_in_s3(s3_server, s3_run, local_run, tmp_path):
    pytest.importorskip("datasets")
    dataset_ = hf_dataset(s3_run, "val", cache_dir=tmp_path / "hf",
                          storage_options=s3_server.storage_options)
    want = _reference(local_run, "val")
    got = {row["__key__"]: row["image"] for row in dataset_}
    assert sorted(got) == sorted(want)
    for key, image in want.items():
        np.testing.assert_array_equal(np.asarray(got[key]), image)


# ---------------------------------------------------------------- last: the Ray cluster


def test_decompose_with_the_ray_engine_to_s3_writes_the_local_bytes(
        s3_server, dataset, local_run, ray_cluster):
    # the cluster was started before the options were given: they reach its tasks anyway
    url = f"{dataset['prefix']}/ray"
    assert cli.main(["decompose", str(dataset["root"] / "photos"), url, *DECOMPOSE,
                     "--engine", "ray", "--max-retries", "0", *_options(s3_server)]) == 0
    _same_as_local(_files(dataset["fs"], url), _local_files(local_run))
