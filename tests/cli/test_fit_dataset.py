"""spin-fit-dataset: options, a tiny end-to-end run, and a real kill and restart."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spin.cli import fit_dataset as cli
from spin.fitting import fit_dataset as fd
from spin.fitting import priors
from tests.cli.help_text import help_text_explaining_every_option
from tests.fitting.test_fit_dataset import make_dataset, make_tiny_smplify, read

REPO = Path(__file__).resolve().parents[2]
TINY_ARGS = ["--body-model", "open-lite", "--mode", "lm", "--no-progress"]
OPEN_PRIOR = priors.ASSETS_DIR / priors.BUNDLED_PRIORS["open"]
KILL_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny.npz", num=6)


@pytest.fixture
def stand_in_prior(monkeypatch):
    """Fit with the tests' stand-in pose prior (the bundled one may not be built yet) and a
    few iterations."""
    monkeypatch.setattr(fd, "build_smplify", make_tiny_smplify)


def main_with_stand_in_prior(argv) -> int:
    """Entry point of the subprocess that gets killed."""
    fd.build_smplify = make_tiny_smplify
    return cli.main(argv)


def test_help_explains_every_option(capsys):
    text = help_text_explaining_every_option(cli.build_parser(), capsys)
    for words in ("fits:PATH", "checkpoint:PATH", "f=5000", "OUT.shards", "resum"):
        assert words in text, words


def test_fits_a_tiny_dataset(dataset, tmp_path, capsys, stand_in_prior):
    out = tmp_path / "fits.h5"
    argv = [str(dataset), "-o", str(out), *TINY_ARGS, "--shard-size", "4", "--batch-size", "2"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "fits/s" in printed and str(out) in printed and "valid:" in printed
    assert "invalid, nonfinite keypoints: 1" in printed
    fits = read(out)
    assert fits["pose"].shape == (6, 72) and fits["valid"].dtype == np.bool_
    assert not fd.shard_folder(out).exists()
    # A second run refuses to overwrite; --overwrite replaces the file.
    assert cli.main(argv) == cli.EXIT_FAILURE
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite", "--keep-shards", "--limit", "2"]) == 0
    assert read(out)["pose"].shape == (2, 72) and fd.shard_folder(out).is_dir()


@pytest.mark.skipif(not OPEN_PRIOR.is_file(), reason=f"{OPEN_PRIOR} is not built yet")
def test_runs_with_the_bundled_prior(dataset, tmp_path):
    out = tmp_path / "fits.h5"
    assert cli.main([str(dataset), "-o", str(out), *TINY_ARGS, "--limit", "2"]) == 0
    assert read(out)["pose"].shape == (2, 72)


def test_usage_errors_exit_with_2(dataset, tmp_path, capsys):
    out = str(tmp_path / "fits.h5")
    for extra, message in [
        (["--init", "checkpoint:model.pt"], "come with the training issue"),
        (["--init", "regressor"], "unknown initialisation"),
        (["--shard-size", "0"], "--shard-size must be >= 1"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(dataset), "-o", out, *extra])
        assert exit_info.value.code == cli.EXIT_USAGE
        assert message in capsys.readouterr().err
    assert not Path(out).exists()


def test_killed_run_resumes_to_the_same_file(dataset, tmp_path, stand_in_prior):
    args = [str(dataset), *TINY_ARGS, "--shard-size", "1", "--limit", "4"]
    killed_out = tmp_path / "killed.h5"
    code = (
        "import sys; from tests.cli.test_fit_dataset import main_with_stand_in_prior as m; "
        "sys.exit(m(sys.argv[1:]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args, "-o", str(killed_out)],
        cwd=REPO,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first_shard = fd.shard_folder(killed_out) / "shard_00000.npz"
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not first_shard.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert first_shard.exists(), stderr.decode()
    assert not killed_out.exists(), "the run finished before it could be killed"
    assert len(list(fd.shard_folder(killed_out).glob("shard_*.npz"))) < 4

    assert cli.main([*args, "-o", str(killed_out)]) == 0
    reference_out = tmp_path / "uninterrupted.h5"
    assert cli.main([*args, "-o", str(reference_out)]) == 0
    resumed, reference = read(killed_out), read(reference_out)
    for key, values in reference.items():
        np.testing.assert_array_equal(resumed[key], values, err_msg=key)
