"""The GMM pose prior of SMPLify: a Gaussian mixture over the 69 body-pose values.

File format (SMPLify's ``gmm_08.pkl``, also our ``.npz``): ``means`` (K, D),
``covars`` (K, D, D), ``weights`` (K,), with D = 69 (the axis-angle pose of SMPL's
23 body joints, without the global orientation) and K = 8 in SMPLify.

Energy (SMPLify's "max-mixture" form): the negative log of the most likely weighted
component density,

    E(x) = min_k [ 0.5 (x - mu_k)^T P_k (x - mu_k) + c_k ],
    c_k  = -log w_k + 0.5 log det(2 pi Sigma_k),        P_k = Sigma_k^-1,

so ``E(x) = -max_k log(w_k N(x; mu_k, Sigma_k))`` exactly, with every constant
included. SPIN's ``MaxMixturePrior.merged_log_likelihood`` normalises the
determinants by the smallest one, which shifts every value by the same constant:
``E_spin(x) = E(x) + GMMPrior.smplify_offset`` with ``smplify_offset =
-0.5 min_k log det Sigma_k``; gradients, minimisers and the chosen component are
the same.

Residual form (for Gauss-Newton): with ``P_k = L_k L_k^T`` (Cholesky),
``r(x) = L_k^T (x - mu_k)`` for the best component k, so
``E(x) = 0.5 ||r(x)||^2 + c_k``.

Loading (:func:`load_pose_prior`): ``"open"`` is the bundled prior fitted to
:mod:`spin.body.pose_sampler` poses (``spin/fitting/assets/NOTICE.md``); ``"smpl"``
is SMPLify's ``gmm_08.pkl`` found next to the official SMPL model (the folder named
by ``SPIN_SMPL_DIR`` or the one above it, SPIN's ``data/`` layout); or a path to a
``.pkl`` (read with the restricted unpickler of :mod:`spin.body.loading`: only
numpy arrays, nothing that runs code) or ``.npz`` file. :func:`fit_gmm` fits a new
mixture to any collection of poses (command ``spin-fit-prior``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from scipy.special import logsumexp
from torch import Tensor, nn

from spin.body.loading import SMPL_DIR_ENV, UnsafeModelFileError, _ModelUnpickler

__all__ = [
    "BUNDLED_PRIORS",
    "REG_COVAR",
    "SMPLIFY_PRIOR_FILE",
    "GMMPrior",
    "fit_gmm",
    "gmm_component_energies",
    "gmm_log_likelihood",
    "load_pose_prior",
    "read_gmm_file",
    "save_gmm_file",
]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUNDLED_PRIORS = {"open": "open_gmm_08.npz"}
SMPLIFY_PRIOR_FILE = "gmm_08.pkl"
GMM_KEYS = ("means", "covars", "weights")
# Added to every fitted covariance (rad^2): a floor of 0.01 rad (~0.6 degrees) on the
# standard deviation of any direction, which keeps covariances invertible when the
# poses do not vary along some direction (a joint that never moves in the data).
REG_COVAR = 1e-4
# Tolerance on the mixture weights summing to one.
WEIGHT_SUM_TOL = 1e-3
# k-means++ seeding is refined by this many Lloyd iterations before EM.
KMEANS_ITERATIONS = 10
# A component whose responsibilities sum to fewer samples than this is re-seeded.
MIN_COMPONENT_SAMPLES = 1.0


# --- Pure functions -------------------------------------------------------------------------


def gmm_component_energies(
    body_pose: Tensor, means: Tensor, precision_cholesky: Tensor, constants: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-component energies ``0.5 ||L_k^T (x - mu_k)||^2 + c_k`` and residuals.

    Args:
        body_pose: ``(B, D)`` poses x.
        means: ``(K, D)`` component means mu_k.
        precision_cholesky: ``(K, D, D)`` lower-triangular L_k with ``L_k L_k^T = P_k``.
        constants: ``(K,)`` c_k.

    Returns:
        ``(B, K)`` energies and ``(B, K, D)`` residuals ``L_k^T (x - mu_k)``.
    """
    diff = body_pose[:, None, :] - means  # (B, K, D)
    residuals = torch.einsum("kde,bkd->bke", precision_cholesky, diff)
    return 0.5 * residuals.square().sum(dim=-1) + constants, residuals


# --- The module -----------------------------------------------------------------------------


def _check_gmm_arrays(means, covars, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    means = np.asarray(means, dtype=np.float64)
    covars = np.asarray(covars, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if means.ndim != 2:
        raise ValueError(f"expected means of shape (K, D), got {means.shape}")
    k, d = means.shape
    if covars.shape != (k, d, d):
        raise ValueError(
            f"expected covars of shape (K, D, D) = ({k}, {d}, {d}) to match means {means.shape}, "
            f"got {covars.shape}"
        )
    if weights.shape != (k,):
        raise ValueError(f"expected weights of shape (K,) = ({k},), got {weights.shape}")
    for name, array in (("means", means), ("covars", covars), ("weights", weights)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"the mixture's {name} hold NaN or inf values")
    if np.any(weights <= 0):
        raise ValueError(f"mixture weights must be positive, got {weights}")
    if abs(weights.sum() - 1.0) > WEIGHT_SUM_TOL:
        raise ValueError(
            f"mixture weights sum to {weights.sum():.6g}, not 1; divide them by their sum"
        )
    if not np.allclose(covars, covars.transpose(0, 2, 1), rtol=1e-6, atol=1e-10):
        raise ValueError("covars must be symmetric matrices")
    return means, covars, weights


class GMMPrior(nn.Module):
    """SMPLify's max-mixture GMM pose prior (see the module docstring for the energy).

    Built from arrays; :func:`load_pose_prior` / :meth:`from_file` read files. Buffers
    (not saved in ``state_dict``; they come from the prior file) are ``dtype`` on the
    CPU: ``means`` (K, D), ``precisions`` (K, D, D), ``precision_cholesky`` (K, D, D)
    lower-triangular with ``L L^T = P``, ``constants`` (K,) the c_k. Everything is
    derived in float64 before the cast. Move the prior with ``.to(device, dtype)``;
    inputs must match its dtype and device.

    Attributes:
        num_components: K; ``dim``: D;
        smplify_offset: ``-0.5 min_k log det Sigma_k``; adding it to the energy gives
            SPIN's ``MaxMixturePrior.merged_log_likelihood``.
    """

    def __init__(self, means, covars, weights, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        means, covars, weights = _check_gmm_arrays(means, covars, weights)
        num_components, dim = means.shape
        try:
            covar_cholesky = np.linalg.cholesky(covars)
        except np.linalg.LinAlgError:
            raise ValueError(
                "a covariance of the mixture is not positive definite; refit the prior "
                "(spin-fit-prior adds a small ridge to every covariance)"
            ) from None
        log_det = 2.0 * np.log(np.diagonal(covar_cholesky, axis1=1, axis2=2)).sum(axis=1)
        eye = np.eye(dim)
        precisions = np.stack([scipy.linalg.cho_solve((c, True), eye) for c in covar_cholesky])
        precisions = 0.5 * (precisions + precisions.transpose(0, 2, 1))
        constants = -np.log(weights) + 0.5 * (dim * math.log(2.0 * math.pi) + log_det)

        self.num_components = num_components
        self.dim = dim
        self.smplify_offset = float(-0.5 * log_det.min())
        for name, array in (
            ("means", means),
            ("precisions", precisions),
            ("precision_cholesky", np.linalg.cholesky(precisions)),
            ("constants", constants),
            ("weights", weights),
            ("log_det_covars", log_det),
        ):
            self.register_buffer(name, torch.tensor(array, dtype=dtype), persistent=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> GMMPrior:
        """Read a ``.pkl`` (SMPLify, safely) or ``.npz`` prior file; see :func:`read_gmm_file`."""
        return cls(**read_gmm_file(path), dtype=dtype)

    def extra_repr(self) -> str:
        return f"num_components={self.num_components}, dim={self.dim}"

    def _flatten(self, body_pose: Tensor) -> Tensor:
        if not isinstance(body_pose, Tensor):
            raise TypeError(
                f"expected body_pose to be a torch.Tensor, got {type(body_pose).__name__}"
            )
        if body_pose.ndim < 1 or body_pose.shape[-1] != self.dim:
            hint = ""
            if body_pose.ndim >= 1 and body_pose.shape[-1] == self.dim + 3:
                hint = "; drop the global orientation: pass pose_rotvecs[..., 3:]"
            raise ValueError(
                f"expected body_pose of shape (B, {self.dim}), got {tuple(body_pose.shape)}{hint}"
            )
        if body_pose.dtype != self.means.dtype or body_pose.device != self.means.device:
            raise ValueError(
                f"body_pose is {body_pose.dtype} on {body_pose.device} but the prior is "
                f"{self.means.dtype} on {self.means.device}; move the prior with "
                "prior.to(body_pose.device, body_pose.dtype)"
            )
        return body_pose.reshape(-1, self.dim)

    def component_energies(self, body_pose: Tensor) -> Tensor:
        """``(B, K)`` energy ``0.5 (x - mu_k)^T P_k (x - mu_k) + c_k`` of every component
        for ``body_pose`` ``(B, D)`` (any leading dims: ``(..., K)``)."""
        flat = self._flatten(body_pose)
        energies, _ = gmm_component_energies(
            flat, self.means, self.precision_cholesky, self.constants
        )
        return energies.reshape(*body_pose.shape[:-1], self.num_components)

    def forward(self, body_pose: Tensor) -> Tensor:
        """Prior energy ``min_k [0.5 (x - mu_k)^T P_k (x - mu_k) + c_k]``.

        Args:
            body_pose: ``(B, D)`` axis-angle body pose (D = 69: SMPL pose without the
                global orientation); any leading dims.

        Returns:
            ``(B,)`` energies (differentiable; the gradient flows through the best
            component).
        """
        return self.component_energies(body_pose).min(dim=-1).values

    def best_component(self, body_pose: Tensor) -> Tensor:
        """``(B,)`` int64 index of the component achieving the minimum for ``(B, D)`` poses."""
        return self.component_energies(body_pose).argmin(dim=-1)

    def residuals(self, body_pose: Tensor) -> Tensor:
        """``(B, D)`` residuals ``L_k^T (x - mu_k)`` of the best component k.

        ``0.5 * residuals.square().sum(-1) + constants[best_component] == forward(x)``;
        a Gauss-Newton step on ``forward`` uses them with weight ``sqrt(0.5 * w)``.
        """
        flat = self._flatten(body_pose)
        energies, residuals = gmm_component_energies(
            flat, self.means, self.precision_cholesky, self.constants
        )
        best = energies.argmin(dim=-1)
        picked = residuals[torch.arange(flat.shape[0], device=flat.device), best]
        return picked.reshape(body_pose.shape)


# --- Files ----------------------------------------------------------------------------------


class _PriorUnpickler(_ModelUnpickler):
    """The body model's restricted unpickler, with a message about prior files."""

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except UnsafeModelFileError:
            raise UnsafeModelFileError(
                f"refusing to load {self._path}: it asks for the Python object "
                f"{module}.{name}, which a GMM prior file (a dict of numpy arrays "
                "means/covars/weights) has no reason to contain (it could run code). "
                "Use SMPLify's gmm_08.pkl or an .npz file with those keys."
            ) from None


def read_gmm_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The float64 arrays ``means``, ``covars``, ``weights`` of a prior file.

    ``.pkl``: SMPLify's pickle (Python 2 or 3) of a dict holding them, read with a
    restricted unpickler that builds numpy arrays and nothing else
    (:class:`~spin.body.loading.UnsafeModelFileError` otherwise). ``.npz``: those keys
    (other keys are ignored). Shapes are checked by :class:`GMMPrior`.
    """
    path = Path(path)
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            content = _PriorUnpickler(f, path).load()
        if not isinstance(content, dict):
            raise ValueError(
                f"{path} holds a {type(content).__name__}, not the dict of arrays "
                f"{list(GMM_KEYS)} of a GMM prior file"
            )
        content = {
            (k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in content.items()
        }
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            content = {key: npz[key] for key in npz.files if key in GMM_KEYS}
    else:
        raise ValueError(
            f"{path}: unknown prior file type; expected SMPLify's .pkl or an .npz with "
            f"the keys {list(GMM_KEYS)}"
        )
    missing = [key for key in GMM_KEYS if key not in content]
    if missing:
        raise ValueError(
            f"{path} is missing the keys {missing} (it has {sorted(content)}); a GMM prior "
            f"file holds {list(GMM_KEYS)}"
        )
    return {key: np.asarray(content[key], dtype=np.float64) for key in GMM_KEYS}


def save_gmm_file(
    path: str | os.PathLike,
    means: np.ndarray,
    covars: np.ndarray,
    weights: np.ndarray,
    description: str | None = None,
) -> Path:
    """Write a prior atomically: ``.npz`` (compressed; ``description`` as a 0-d string)
    or ``.pkl`` (SMPLify's layout: a dict of float64 numpy arrays, pickle protocol 2)."""
    import pickle

    path = Path(path)
    means, covars, weights = _check_gmm_arrays(means, covars, weights)
    arrays = {"means": means, "covars": covars, "weights": weights}
    if path.suffix not in (".npz", ".pkl"):
        raise ValueError(f"{path}: give the prior file a .npz or .pkl name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        if path.suffix == ".npz":
            if description is not None:
                arrays["description"] = np.asarray(description)
            np.savez_compressed(tmp, **arrays)
        else:
            with open(tmp, "wb") as f:
                pickle.dump(arrays, f, protocol=2)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _smpl_prior_path() -> Path:
    folder = os.environ.get(SMPL_DIR_ENV)
    if not folder:
        raise FileNotFoundError(
            f"'smpl' loads SMPLify's {SMPLIFY_PRIOR_FILE} from the folder named by "
            f"{SMPL_DIR_ENV} (or the folder above it), which is not set. Set it, pass the "
            "file's path, or use the bundled 'open' prior."
        )
    folder = Path(folder).expanduser()
    candidates = [folder / SMPLIFY_PRIOR_FILE, folder.parent / SMPLIFY_PRIOR_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no {SMPLIFY_PRIOR_FILE} in {candidates[0].parent} or {candidates[1].parent}; "
        "put SMPLify's prior there (SPIN keeps it in data/), pass its path, or use 'open'"
    )


def load_pose_prior(
    name_or_path: str | os.PathLike = "open", dtype: torch.dtype = torch.float32
) -> GMMPrior:
    """Read a GMM pose prior: ``"open"`` (bundled), ``"smpl"`` (SMPLify's file next to
    the official SMPL model) or a ``.pkl`` / ``.npz`` path. See the module docstring."""
    if isinstance(name_or_path, str) and name_or_path in BUNDLED_PRIORS:
        path = ASSETS_DIR / BUNDLED_PRIORS[name_or_path]
        if not path.is_file():
            raise FileNotFoundError(
                f"the bundled pose prior {path} is missing; reinstall spin-hmr or refit it "
                "as spin/fitting/assets/NOTICE.md says"
            )
    elif isinstance(name_or_path, str) and name_or_path == "smpl":
        path = _smpl_prior_path()
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"no pose prior at {path}; pass a .pkl/.npz file or one of "
                f"{[*BUNDLED_PRIORS, 'smpl']}"
            )
    return GMMPrior.from_file(path, dtype=dtype)


# --- Fitting --------------------------------------------------------------------------------


def _component_log_densities(x: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """``(N, K)`` log N(x_n; mu_k, Sigma_k)."""
    num, dim = x.shape
    out = np.empty((num, len(means)))
    for k, (mean, covar) in enumerate(zip(means, covars, strict=True)):
        chol = np.linalg.cholesky(covar)
        z = scipy.linalg.solve_triangular(chol, (x - mean).T, lower=True, check_finite=False)
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = -0.5 * (np.square(z).sum(axis=0) + dim * math.log(2 * math.pi) + log_det)
    return out


def gmm_log_likelihood(x: np.ndarray, means, covars, weights) -> np.ndarray:
    """``(N,)`` log-density of the mixture (sum over components) at ``x`` ``(N, D)``."""
    x = np.asarray(x, dtype=np.float64)
    return logsumexp(_component_log_densities(x, means, covars) + np.log(weights), axis=1)


def _kmeans_plus_plus(x: np.ndarray, num_components: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds ``(K, D)``: each next seed drawn with probability ~ squared
    distance to the nearest seed so far."""
    centres = [x[rng.integers(len(x))]]
    nearest = np.square(x - centres[0]).sum(axis=1)
    for _ in range(1, num_components):
        total = nearest.sum()
        if total <= 0:  # fewer distinct points than components
            index = rng.integers(len(x))
        else:
            index = rng.choice(len(x), p=nearest / total)
        centres.append(x[index])
        nearest = np.minimum(nearest, np.square(x - x[index]).sum(axis=1))
    return np.stack(centres)


def _squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return (
        np.square(x).sum(axis=1)[:, None]
        - 2.0 * x @ centres.T
        + np.square(centres).sum(axis=1)[None, :]
    )


def _m_step(
    x: np.ndarray, resp: np.ndarray, reg_covar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    means = resp.T @ x / counts[:, None]
    covars = np.empty((len(counts), x.shape[1], x.shape[1]))
    for k in range(len(counts)):
        centred = x - means[k]
        covars[k] = (resp[:, k : k + 1] * centred).T @ centred / counts[k]
        covars[k] = 0.5 * (covars[k] + covars[k].T) + reg_covar * np.eye(x.shape[1])
    return means, covars, counts / counts.sum()


def fit_gmm(
    poses: np.ndarray,
    num_components: int = 8,
    iterations: int = 100,
    seed: int = 0,
    tol: float = 1e-5,
    reg_covar: float = REG_COVAR,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a full-covariance Gaussian mixture by EM (float64 numpy).

    Initialisation: k-means++ seeds (drawn with ``np.random.default_rng(seed)``), refined
    by :data:`KMEANS_ITERATIONS` Lloyd iterations; their hard assignments give the
    first means, covariances and weights. ``reg_covar`` (rad^2) is added to the
    diagonal of every covariance after each M-step. A component left with fewer than
    :data:`MIN_COMPONENT_SAMPLES` samples is re-seeded at the worst-explained sample.
    Stops after ``iterations`` EM steps or when the mean log-likelihood improves by
    less than ``tol``. Deterministic given the seed.

    Args:
        poses: ``(N, D)`` samples (e.g. the 69 body-pose values), finite, N >= K.
        num_components: K.
        iterations: maximum number of EM iterations.
        seed: seed of the initialisation.
        tol: convergence threshold on the mean log-likelihood per sample.
        reg_covar: covariance ridge (see :data:`REG_COVAR`).
        callback: called after each E-step with ``(iteration, mean log-likelihood)``.

    Returns:
        ``(means (K, D), covars (K, D, D), weights (K,))``, float64, SMPLify's layout.
    """
    x = np.asarray(poses, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected poses of shape (N, D), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("poses hold NaN or inf values; drop those rows first")
    if num_components < 1 or len(x) < num_components:
        raise ValueError(
            f"need at least as many poses as components: got {len(x)} poses for "
            f"{num_components} components"
        )
    if reg_covar <= 0:
        raise ValueError(f"reg_covar must be positive, got {reg_covar}")
    rng = np.random.default_rng(seed)

    centres = _kmeans_plus_plus(x, num_components, rng)
    for _ in range(KMEANS_ITERATIONS):
        labels = _squared_distances(x, centres).argmin(axis=1)
        for k in range(num_components):
            members = x[labels == k]
            if len(members):
                centres[k] = members.mean(axis=0)
    resp = np.zeros((len(x), num_components))
    resp[np.arange(len(x)), _squared_distances(x, centres).argmin(axis=1)] = 1.0
    means, covars, weights = _m_step(x, resp, reg_covar)

    previous = -np.inf
    for iteration in range(iterations):
        weighted = _component_log_densities(x, means, covars) + np.log(weights)
        log_likelihood = logsumexp(weighted, axis=1)
        mean_log_likelihood = float(log_likelihood.mean())
        if callback is not None:
            callback(iteration, mean_log_likelihood)
        resp = np.exp(weighted - log_likelihood[:, None])
        means, covars, weights = _m_step(x, resp, reg_covar)
        counts = resp.sum(axis=0)
        for k in np.flatnonzero(counts < MIN_COMPONENT_SAMPLES):
            means[k] = x[np.argmin(log_likelihood)]
            covars[k] = np.cov(x, rowvar=False) + reg_covar * np.eye(x.shape[1])
            weights[k] = MIN_COMPONENT_SAMPLES / len(x)
            weights /= weights.sum()
        if abs(mean_log_likelihood - previous) < tol:
            break
        previous = mean_log_likelihood
    return means, covars, weights
