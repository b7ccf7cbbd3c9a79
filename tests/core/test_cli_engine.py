"""`obscura generate`, `demo-model` and `models`: headless, offline, one sentence per mistake."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from webui.cli import main


@pytest.fixture
def data_dir(tmp_path: Path, models_dir: Path) -> Path:
    shutil.copytree(models_dir / "demo-tiny-sd", tmp_path / "models" / "demo-tiny-sd")
    return tmp_path


def _run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def _photo_with_exif(path: Path) -> Path:
    image = Image.new("RGB", (96, 64), (10, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SecretCamera"  # Make
    image.save(path, format="JPEG", exif=exif)
    return path


def test_generate_paints_from_text(data_dir, tmp_path):
    out = tmp_path / "out.png"
    result = _run(
        "generate",
        "--data-dir",
        str(data_dir),
        "--prompt",
        "a cat",
        "--out",
        str(out),
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "2",
        "--seed",
        "7",
        "--batch",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (64, 64) and Image.open(tmp_path / "out-1.png").size == (64, 64)
    assert "seed 7" in result.output and "seed 8" in result.output


def test_generate_from_a_photo_and_into_a_mask(data_dir, tmp_path):
    photo = _photo_with_exif(tmp_path / "me.jpg")
    mask = tmp_path / "mask.png"
    Image.new("L", (96, 64), 255).save(mask)
    for extra, name in [([], "i2i.webp"), (["--mask", str(mask)], "inpaint.jpg")]:
        out = tmp_path / name
        result = _run(
            "generate",
            "--data-dir",
            str(data_dir),
            "--prompt",
            "-",
            "--image",
            str(photo),
            "--strength",
            "0.5",
            "--steps",
            "2",
            "--out",
            str(out),
            *extra,
            input="watercolour\n",
        )
        assert result.exit_code == 0, result.output
        picture = Image.open(out)
        assert picture.size == (96, 64)
        assert "SecretCamera" not in out.read_bytes().decode("latin-1")
        assert b"compositeWithTrainedAlgorithmicMedia" in out.read_bytes()
        assert b"watercolour" not in out.read_bytes()  # no prompt unless --embed-parameters


def test_embed_parameters_is_opt_in(data_dir, tmp_path):
    out = tmp_path / "p.png"
    result = _run(
        "generate",
        "--data-dir",
        str(data_dir),
        "--prompt",
        "ink lighthouse",
        "--steps",
        "1",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        str(out),
        "--embed-parameters",
    )
    assert result.exit_code == 0
    assert "ink lighthouse" in Image.open(out).text.get("parameters", "")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--width", "100"], "multiples of 8"),
        (["--steps", "500"], "Steps must be between"),
        (["--sampler", "nope"], "Unknown sampler"),
        (["--model", "nope"], "Unknown model"),
        (["--strength", "3", "--image", "PHOTO"], "Strength"),
        (["--image", "NOTIMAGE"], "PNG, JPEG and WebP"),
        (["--mask", "PHOTO"], "needs a photo"),
        (["--image", "PHOTO", "--mask", "SMALLMASK"], "same size"),
    ],
)
def test_mistakes_get_one_sentence_and_no_traceback(data_dir, tmp_path, args, fragment):
    photo = _photo_with_exif(tmp_path / "secret-name.jpg")
    not_image = tmp_path / "secret-notes.png"
    not_image.write_text("hello")
    small = tmp_path / "small.png"
    Image.new("L", (64, 64)).save(small)
    args = [
        {"PHOTO": str(photo), "NOTIMAGE": str(not_image), "SMALLMASK": str(small)}.get(a, a)
        for a in args
    ]
    result = CliRunner().invoke(
        main,
        [
            "generate",
            "--data-dir",
            str(data_dir),
            "--prompt",
            "private words",
            "--out",
            str(tmp_path / "o.png"),
            *args,
        ],
    )
    assert result.exit_code != 0
    assert fragment in result.output
    assert (
        "Traceback" not in result.output
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )
    assert "private words" not in result.output and "secret" not in result.output


def test_demo_model_and_models_listing(tmp_path):
    result = _run("demo-model", "--data-dir", str(tmp_path))
    assert result.exit_code == 0 and "draws noise" in result.output
    again = _run("demo-model", "--data-dir", str(tmp_path), "--if-missing")
    assert again.exit_code == 0 and "nothing to do" in again.output
    (tmp_path / "models" / "old.ckpt").write_bytes(b"not opened")
    listing = _run("models", "--data-dir", str(tmp_path))
    assert "demo-tiny-sd (demo" in listing.output and "refused: old.ckpt" in listing.output
    assert "DPM++ 2M Karras" in _run("models", "--samplers").output


@pytest.mark.parametrize("command", [[], ["generate"], ["demo-model"], ["models"]])
def test_help_is_complete(command):
    result = _run(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output
    if command == ["generate"]:
        for option in [
            "--prompt",
            "--image",
            "--strength",
            "--mask",
            "--model",
            "--steps",
            "--seed",
            "--width",
            "--height",
            "--sampler",
            "--out",
        ]:
            assert option in result.output
