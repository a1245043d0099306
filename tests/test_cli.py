"""The `stexture` command frame and the one-image `split` subcommand."""

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
