import pickle
import struct

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from spin.body.loading import SMPL_DIR_ENV, UnsafeModelFileError
from spin.body.pose_sampler import sample_poses
from spin.fitting import priors
from spin.fitting.priors import GMMPrior, fit_gmm, load_pose_prior, read_gmm_file, save_gmm_file


def _toy_mixture(seed=0, num_components=3, dim=4):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=1.0, size=(num_components, dim))
    factors = rng.normal(scale=0.5, size=(num_components, dim, dim))
    covars = factors @ factors.transpose(0, 2, 1) + 0.1 * np.eye(dim)
    weights = rng.uniform(0.2, 1.0, size=num_components)
    return means, covars, weights / weights.sum()


def _direct_energy(x, means, covars, weights):
    """-max_k log(w_k N(x; mu_k, Sigma_k)), straight from scipy."""
    log_terms = np.stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(x)
            for m, c, w in zip(means, covars, weights, strict=True)
        ],
        axis=1,
    )
    return -log_terms.max(axis=1), log_terms.argmax(axis=1)


def _spin_merged_log_likelihood(x, means, covars, weights):
    """SPIN's MaxMixturePrior.merged_log_likelihood, re-derived in numpy."""
    dim = means.shape[1]
    sqrdets = np.sqrt(np.linalg.det(covars))
    nll_weights = weights / ((2 * np.pi) ** (dim / 2) * (sqrdets / sqrdets.min()))
    diff = x[:, None, :] - means
    quadratic = np.einsum("bki,kij,bkj->bk", diff, np.linalg.inv(covars), diff)
    return (0.5 * quadratic - np.log(nll_weights)).min(axis=1)


@pytest.fixture
def toy():
    means, covars, weights = _toy_mixture()
    x = np.random.default_rng(1).normal(scale=1.5, size=(16, 4))
    return means, covars, weights, x


def test_energy_matches_a_direct_evaluation_of_the_mixture(toy):
    means, covars, weights, x = toy
    prior = GMMPrior(means, covars, weights, dtype=torch.float64)
    energy = prior(torch.tensor(x))
    expected, best = _direct_energy(x, means, covars, weights)
    np.testing.assert_allclose(energy.numpy(), expected, rtol=1e-10)
    np.testing.assert_array_equal(prior.best_component(torch.tensor(x)).numpy(), best)
    assert prior.num_components == 3 and prior.dim == 4


def test_smplify_offset_gives_spins_value(toy):
    means, covars, weights, x = toy
    prior = GMMPrior(means, covars, weights, dtype=torch.float64)
    spin_value = _spin_merged_log_likelihood(x, means, covars, weights)
    np.testing.assert_allclose(
        prior(torch.tensor(x)).numpy() + prior.smplify_offset, spin_value, rtol=1e-10
    )


def test_residuals_reproduce_the_energy(toy):
    means, covars, weights, x = toy
    prior = GMMPrior(means, covars, weights, dtype=torch.float64)
    pose = torch.tensor(x)
    residuals = prior.residuals(pose)
    assert residuals.shape == (16, 4)
    rebuilt = 0.5 * residuals.square().sum(-1) + prior.constants[prior.best_component(pose)]
    torch.testing.assert_close(rebuilt, prior(pose), rtol=1e-12, atol=1e-12)


def test_energy_gradient_matches_finite_differences(toy):
    means, covars, weights, x = toy
    prior = GMMPrior(means, covars, weights, dtype=torch.float64)
    pose = torch.tensor(x[:4], requires_grad=True)
    assert torch.autograd.gradcheck(prior, (pose,))
    assert torch.autograd.gradcheck(prior.residuals, (pose,))


def test_leading_batch_dims_and_float32(toy):
    means, covars, weights, x = toy
    prior = GMMPrior(means, covars, weights)
    pose = torch.tensor(x, dtype=torch.float32).reshape(2, 8, 4)
    assert prior(pose).shape == (2, 8)
    assert prior.residuals(pose).shape == (2, 8, 4)


def test_bad_inputs_are_explained(toy):
    means, covars, weights, _ = toy
    with pytest.raises(ValueError, match=r"covars of shape \(K, D, D\)"):
        GMMPrior(means, covars[:, :3], weights)
    with pytest.raises(ValueError, match="divide them by their sum"):
        GMMPrior(means, covars, 2 * weights)
    with pytest.raises(ValueError, match="positive definite"):
        GMMPrior(means, -covars, weights)
    real = load_pose_prior("open")
    with pytest.raises(ValueError, match="drop the global orientation"):
        real(torch.zeros(2, 72))
    with pytest.raises(ValueError, match=r"prior.to\("):
        real(torch.zeros(2, 69, dtype=torch.float64))


# --- Fitting --------------------------------------------------------------------------------


def test_fit_gmm_recovers_a_well_separated_mixture():
    rng = np.random.default_rng(0)
    true_means = np.array([[4.0, 0.0, -2.0], [-3.0, 1.0, 2.0]])
    labels = rng.random(3000) < 0.3
    x = np.where(labels[:, None], true_means[0], true_means[1]) + rng.normal(
        scale=[0.5, 0.2, 0.3], size=(3000, 3)
    )
    lls = []
    means, covars, weights = fit_gmm(
        x, 2, iterations=50, seed=0, callback=lambda i, ll: lls.append(ll)
    )
    order = np.argsort(weights)
    np.testing.assert_allclose(weights[order], [labels.mean(), 1 - labels.mean()], atol=1e-3)
    np.testing.assert_allclose(means[order], true_means, atol=0.05)
    np.testing.assert_allclose(np.sqrt(np.diagonal(covars[order[1]])), [0.5, 0.2, 0.3], rtol=0.1)
    assert np.all(np.diff(lls) > -1e-9), "EM must not decrease the likelihood"
    again = fit_gmm(x, 2, iterations=50, seed=0)
    for a, b in zip((means, covars, weights), again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_gmm_rejects_unusable_data():
    with pytest.raises(ValueError, match="NaN"):
        fit_gmm(np.array([[0.0, np.nan], [1.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="at least as many poses"):
        fit_gmm(np.zeros((2, 3)), 3)


# --- Files ----------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), as SMPLify's Python 2 pickle does."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def test_reads_a_python2_smplify_pickle(tmp_path, toy):
    means, covars, weights, x = toy
    path = tmp_path / "gmm_08.pkl"
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump({b"means": means, b"covars": covars, b"weights": weights})
    arrays = read_gmm_file(path)
    np.testing.assert_array_equal(arrays["covars"], covars)
    prior = GMMPrior.from_file(path, dtype=torch.float64)
    np.testing.assert_allclose(
        prior(torch.tensor(x)).numpy(), _direct_energy(x, means, covars, weights)[0]
    )


def test_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "hacked"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    path = tmp_path / "gmm_08.pkl"
    with open(path, "wb") as f:
        pickle.dump({"means": Payload()}, f, protocol=2)
    with pytest.raises(UnsafeModelFileError, match="GMM prior"):
        load_pose_prior(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="unknown prior file type"):
        read_gmm_file(tmp_path / "gmm.json")


def test_npz_and_pkl_round_trip_and_the_smpl_name(tmp_path, monkeypatch, toy):
    means, covars, weights, x = toy
    for name in ("prior.npz", "data/gmm_08.pkl"):
        path = save_gmm_file(tmp_path / name, means, covars, weights, description="toy")
        loaded = read_gmm_file(path)
        np.testing.assert_array_equal(loaded["means"], means)
    # "smpl": SMPLify's file in the folder above SPIN_SMPL_DIR (SPIN's data/ layout).
    monkeypatch.setenv(SMPL_DIR_ENV, str(tmp_path / "data" / "smpl"))
    assert load_pose_prior("smpl").num_components == 3
    monkeypatch.delenv(SMPL_DIR_ENV)
    with pytest.raises(FileNotFoundError, match=SMPL_DIR_ENV):
        load_pose_prior("smpl")


def test_the_bundled_open_prior_prefers_sampled_poses():
    prior = load_pose_prior("open", dtype=torch.float64)
    assert prior.num_components == 8 and prior.dim == 69
    assert (priors.ASSETS_DIR / "NOTICE.md").is_file()
    sampled = torch.tensor(sample_poses(200, np.random.default_rng(123))[:, 3:])
    uniform = torch.tensor(np.random.default_rng(0).uniform(-np.pi, np.pi, size=(200, 69)))
    assert prior(sampled).quantile(0.95) < prior(uniform).quantile(0.05)
