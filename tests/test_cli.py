"""The `stexture` command frame and the one-image `split` subcommand."""

import argparse
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stexture.cli import COMMANDS, build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: stexture" in capsys.readouterr().out


def test_split_writes_structure_and_texture(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    code = main(["split", str(tmp_path / "photo.png"), "--out", str(tmp_path / "out"),
                 "--method", "tv", "--param", "max_num_iter=5"])
    assert code == 0
    structure = np.asarray(Image.open(tmp_path / "out" / "photo-structure.png"))
    texture = np.asarray(Image.open(tmp_path / "out" / "photo-texture.png"))
    assert structure.shape == texture.shape == (24, 32, 3)
    # texture is shown offset to mid-grey, so image ~ structure + texture - 128
    reconstructed = structure.astype(int) + texture.astype(int) - 128
    assert np.abs(reconstructed - pixels).max() <= 1


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "cannot be read as an image"),
     (b"not an image at all", "cannot be read as an image")],
)
def test_split_names_an_unreadable_file(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    assert main(["split", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.jpg" in err and message in err


def test_split_rejects_an_unknown_param(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["split", str(tmp_path / "a.png"), "--param", "lambda=1"]) == 2
    assert "unknown parameter 'lambda'" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "stexture", "--version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith("stexture ")


def _options(parser):
    """(subcommand, action) for every option of every subcommand."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            if action.option_strings and action.dest != "help":
                yield name, subparser, action


def test_every_option_has_help_and_shows_its_default_once():
    parser = build_parser()
    for name, subparser, action in _options(parser):
        flag = f"{name} {action.option_strings[-1]}"
        assert action.help, f"{flag} has no help text"
        text = subparser.formatter_class(prog="x")._expand_help(action)
        assert text.lower().count("default") <= 1, f"{flag}: {text}"
        if not (action.default is None or action.default is False or action.default == []):
            assert "default" in text.lower(), f"{flag} does not show its default"


def test_the_default_appears_in_the_help_output(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size BATCH_SIZE images per training batch (default: 64)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 150, 60 with --quick)" in text and "(default: None)" not in text


def test_every_subcommand_takes_quiet():
    parser = build_parser()
    for name in COMMANDS:
        assert any(action.dest == "quiet" and "-q" in action.option_strings
                   for sub_name, _, action in _options(parser) if sub_name == name), name


def test_split_quiet_prints_nothing(tmp_path, capsys):
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "a.png")
    assert main(["split", str(tmp_path / "a.png"), "--out", str(tmp_path), "--method", "tv",
                 "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "a-structure.png").is_file()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from shardfactory import make_shard_dir

    return make_shard_dir(tmp_path_factory.mktemp("cli") / "shards", per_class=4,
                          val_per_class=1, size=16, shard_size=4)


SWEEP = ["--k", "0,1", "--seeds", "1", "--epochs", "2", "--no-baseline", "--device", "cpu",
         "--image-size", "16", "--batch-size", "4"]


def test_sweep_shows_a_bar_over_all_runs_and_per_epoch_lines_only_with_verbose(
        shards, tmp_path, capsys):
    assert main(["sweep", str(shards), *SWEEP, "--out", str(tmp_path / "runs")]) == 0
    captured = capsys.readouterr()
    # three runs: k0, k1 and their ensemble; the bar counts them and shows the time left
    assert "3/3 [" in captured.err and "<" in captured.err.split("3/3 [")[-1]
    assert "[3/3] ensemble-seed0" in captured.out
    assert "epoch" not in captured.out
    # resumed: the finished runs count as done from the start
    assert main(["sweep", str(shards), *SWEEP, "--out", str(tmp_path / "runs")]) == 0
    assert "3/3 [" in capsys.readouterr().err


def test_sweep_quiet_prints_only_the_outcome(shards, tmp_path, capsys):
    assert main(["sweep", str(shards), *SWEEP, "--k", "1", "--out", str(tmp_path / "runs"),
                 "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "[1/1]" not in captured.out and "epoch" not in captured.out
    assert (tmp_path / "runs" / "runs" / "k1-seed0" / "result.json").is_file()
