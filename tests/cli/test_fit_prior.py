import numpy as np
import pytest
import torch

from spin.body.pose_sampler import sample_poses
from spin.cli import fit_prior
from spin.fitting.priors import load_pose_prior


def _poses(num=120, seed=0):
    return sample_poses(num, np.random.default_rng(seed))


def test_fits_a_tiny_npz_and_the_output_loads(tmp_path, capsys):
    poses = _poses()
    poses[[3, 50, 77], 10] = np.nan
    src, out = tmp_path / "poses.npz", tmp_path / "prior.npz"
    np.savez(src, poses=poses)
    argv = [str(src), "--components", "2", "--iterations", "5", "--seed", "1", "--out", str(out)]
    assert fit_prior.main(argv) == 0
    printed = capsys.readouterr().out
    assert "dropped 3 rows" in printed and "iteration 1: mean log-likelihood" in printed
    assert "component weights" in printed
    prior = load_pose_prior(out, dtype=torch.float64)
    assert prior.num_components == 2 and prior.dim == 69
    energies = prior(torch.tensor(poses[:, 3:][np.isfinite(poses).all(axis=1)]))
    assert torch.isfinite(energies).all()


def test_reads_spins_pose_field_and_writes_smplify_pickles(tmp_path, capsys):
    poses = _poses(100, seed=1)
    has_smpl = np.ones(100)
    has_smpl[:10] = 0
    src, out = tmp_path / "dataset.npz", tmp_path / "gmm_02.pkl"
    np.savez(src, pose=poses, has_smpl=has_smpl, imgname=np.array(["a.jpg"] * 100))
    assert (
        fit_prior.main([str(src), "--components", "1", "--iterations", "2", "--out", str(out)]) == 0
    )
    assert "skipped 10 rows" in capsys.readouterr().out
    assert load_pose_prior(out).num_components == 1


def test_from_sampler(tmp_path):
    out = tmp_path / "sampled.npz"
    argv = ["--from-sampler", "150", "--components", "1", "--iterations", "2", "--out", str(out)]
    assert fit_prior.main(argv) == 0
    assert load_pose_prior(out).dim == 69


def test_bad_inputs_are_explained(tmp_path, capsys):
    src = tmp_path / "bad.npz"
    np.savez(src, poses=np.zeros((20, 10)), other=np.zeros(3))
    out = str(tmp_path / "x.npz")
    with pytest.raises(SystemExit) as exit_info:
        fit_prior.main([str(src), "--out", out])
    assert exit_info.value.code == 2
    assert "(N, 72)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fit_prior.main([str(src), "--key", "missing", "--out", out])
    assert "--key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fit_prior.main([str(src), "--out", str(tmp_path / "x.txt")])
    assert ".npz or .pkl" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # neither a file nor --from-sampler
        fit_prior.main(["--out", out])


def test_help_mentions_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit_prior.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    options = [
        option
        for action in fit_prior.build_parser()._actions
        for option in action.option_strings
        if option.startswith("--")
    ]
    assert len(options) >= 9
    for option in options:
        assert option in text
    assert "poses" in text
