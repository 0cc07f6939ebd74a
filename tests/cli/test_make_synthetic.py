from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import spin.body
from spin.cli import make_synthetic
from spin.data.formats import load_spin_npz

OPEN_LITE = Path(spin.body.__file__).parent / "assets" / "open_lite.npz"
SIZE = 64


@pytest.mark.skipif(not OPEN_LITE.exists(), reason=f"{OPEN_LITE} not built yet")
def test_writes_images_annotations_and_contact_sheets(tmp_path, capsys):
    out = tmp_path / "synth"
    argv = ["--num", "3", "--out", str(out), "--split", "both", "--size", str(SIZE)]
    argv += ["--body-model", "open-lite", "--fraction-3d", "1", "--seed", "5", "--quiet"]
    assert make_synthetic.main(argv) == 0
    printed = capsys.readouterr().out
    assert "samples/s" in printed and "contact sheet" in printed
    for split in ("train", "test"):
        arrays = load_spin_npz(out / f"{split}.npz")
        assert len(arrays["imgname"]) == 3 and (arrays["has_smpl"] == 1).all()
        for name in arrays["imgname"]:
            assert name.startswith(f"images/{split}_")
            with Image.open(out / name) as image:
                assert image.size == (SIZE, SIZE)
        assert len(list((out / "parts").glob(f"{split}_*.png"))) == 3
        with Image.open(out / f"contact_sheet_{split}.png") as sheet:
            # 3 tiles in one row of the 6-column grid, with a label strip below.
            assert sheet.size[0] == 6 * SIZE and sheet.size[1] > SIZE
            pixels = np.asarray(sheet.convert("RGB"))[:SIZE, : 3 * SIZE]
        assert pixels.std() > 10, "the tiles should show images"


@pytest.mark.skipif(not OPEN_LITE.exists(), reason=f"{OPEN_LITE} not built yet")
def test_options_reach_the_config(tmp_path):
    out = tmp_path / "synth"
    argv = ["--num", "2", "--out", str(out), "--size", "80x48", "--body-model", "open-lite"]
    argv += ["--fraction-3d", "0", "--no-part-maps", "--no-contact-sheet", "--quiet"]
    assert make_synthetic.main(argv) == 0
    arrays = load_spin_npz(out / "train.npz")
    assert (arrays["image_size"] == (80, 48)).all() and (arrays["has_smpl"] == 0).all()
    assert not (out / "parts").exists() and not list(out.glob("contact_sheet_*"))
    assert not (out / "test.npz").exists()


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_synthetic.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--num",
        "--out",
        "--split",
        "--size",
        "--fraction-3d",
        "--seed",
        "--background-dir",
        "--body-model",
        "--beta-std",
        "--part-maps",
        "--contact-sheet",
        "--quiet",
    ):
        assert option in text, option
    help_lines = {a.dest: a.help for a in make_synthetic.build_parser()._actions}
    assert all(help_lines.values()), "every option needs a help text"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num", "0", "--out", "x"], "--num"),
        (["--num", "2", "--out", "x", "--size", "10"], "size"),
        (["--num", "2", "--out", "x", "--fraction-3d", "2"], "fraction_3d"),
    ],
)
def test_bad_arguments_are_reported(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        make_synthetic.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_background_folder_is_reported(tmp_path, capsys):
    argv = ["--num", "1", "--out", str(tmp_path), "--background-dir", str(tmp_path / "none")]
    with pytest.raises(SystemExit) as exit_info:
        make_synthetic.main(argv)
    assert exit_info.value.code == 1
    assert "not a folder" in capsys.readouterr().err
