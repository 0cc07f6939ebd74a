"""spin-fit-prior: fit SMPLify's GMM pose prior to a collection of SMPL poses.

Poses come from an ``.npz`` (``poses`` (N, 72) or (N, 69), SPIN's dataset ``pose``
field, or any key given with ``--key``) or from the built-in pose sampler
(``--from-sampler N``). The result is a K-component full-covariance Gaussian mixture
over the 69 body-pose values in SMPLify's layout, written as ``.npz`` or as a
``gmm_08.pkl``-style pickle; ``load_pose_prior(path)`` reads either.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spin.body.pose_sampler import sample_poses
from spin.cli.errors import add_debug_option, reported
from spin.fitting.priors import REG_COVAR, fit_gmm, gmm_log_likelihood, save_gmm_file

BODY_POSE_SIZE = 69
FULL_POSE_SIZE = 72
DEFAULT_KEYS = ("poses", "pose")
# Below this many poses per covariance entry, warn that the mixture is underdetermined.
MIN_POSES_PER_DIM = 10


class PoseInputError(ValueError):
    """The input poses cannot be used; the message says why and how to fix it."""


def body_poses_from_array(array: np.ndarray, source: str) -> np.ndarray:
    """``(N, 69)`` float64 body poses from ``(N, 72)``, ``(N, 69)``, ``(N, 24, 3)`` or
    ``(N, 23, 3)`` axis-angle poses (the global orientation, when present, is dropped)."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number):
        raise PoseInputError(f"{source} holds {array.dtype} values, not numbers")
    if array.ndim == 3 and array.shape[2] == 3:
        array = array.reshape(len(array), -1)
    if array.ndim != 2 or array.shape[1] not in (FULL_POSE_SIZE, BODY_POSE_SIZE):
        raise PoseInputError(
            f"{source} has shape {array.shape}; expected axis-angle SMPL poses (N, 72) "
            f"(global orientation first), (N, 69) (body only) or (N, 24, 3) / (N, 23, 3)"
        )
    if array.shape[1] == FULL_POSE_SIZE:
        array = array[:, 3:]
    return array.astype(np.float64)


def read_poses(path: Path, key: str | None) -> tuple[np.ndarray, str, int]:
    """Body poses ``(N, 69)`` from an ``.npz``, the key used, and how many rows were left
    out because the file's ``has_smpl`` flag is 0 (SPIN's dataset files)."""
    if not path.is_file():
        raise PoseInputError(f"no such file: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise PoseInputError(f"{path} is not a readable .npz file of arrays ({error})") from None
    with npz:
        keys = [key] if key else [k for k in DEFAULT_KEYS if k in npz.files]
        if not keys or keys[0] not in npz.files:
            wanted = repr(key) if key else " or ".join(repr(k) for k in DEFAULT_KEYS)
            raise PoseInputError(
                f"{path} has no {wanted} array; its arrays are {sorted(npz.files)}. "
                "Name the one holding the poses with --key"
            )
        poses = body_poses_from_array(npz[keys[0]], f"{path}[{keys[0]!r}]")
        without_smpl = 0
        if "has_smpl" in npz.files and npz["has_smpl"].shape == (len(poses),):
            keep = npz["has_smpl"] > 0
            without_smpl = int((~keep).sum())
            poses = poses[keep]
    return poses, keys[0], without_smpl


def drop_non_finite(poses: np.ndarray) -> tuple[np.ndarray, int]:
    """Poses without the rows holding NaN or inf, and how many rows were dropped."""
    finite = np.isfinite(poses).all(axis=1)
    return poses[finite], int((~finite).sum())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spin-fit-prior",
        description=(
            "Fit SMPLify's GMM pose prior (K full-covariance Gaussians over the 69 "
            "axis-angle body-pose values) to SMPL poses, e.g. from AMASS or a dataset's "
            "'pose' field, or to the built-in pose sampler. The output loads with "
            "spin.fitting.priors.load_pose_prior(PATH)."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "poses",
        nargs="?",
        type=Path,
        help="input .npz holding axis-angle SMPL poses (N, 72) or (N, 69); rows with NaN "
        "or inf are dropped and counted, rows whose 'has_smpl' flag is 0 are skipped",
    )
    source.add_argument(
        "--from-sampler",
        type=int,
        metavar="N",
        help="fit to N poses from spin.body.pose_sampler instead of a file (seeded by --seed)",
    )
    parser.add_argument(
        "--key",
        help="array of the input .npz holding the poses (default: 'poses', else 'pose' as "
        "in SPIN's dataset files)",
    )
    parser.add_argument(
        "--components", type=int, default=8, help="number of Gaussians K (default: %(default)s)"
    )
    parser.add_argument(
        "--iterations", type=int, default=100, help="maximum EM iterations (default: %(default)s)"
    )
    parser.add_argument(
        "--tol",
        type=float,
        default=1e-5,
        help="stop when the mean log-likelihood improves by less (default: %(default)s)",
    )
    parser.add_argument(
        "--reg-covar",
        type=float,
        default=REG_COVAR,
        help="ridge added to every covariance, rad^2 (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the k-means++ initialisation and of --from-sampler (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output file, PATH.npz or PATH.pkl")
    parser.add_argument(
        "--format",
        choices=("npz", "pkl"),
        help="npz (means, covars, weights) or pkl (SMPLify's gmm_08.pkl layout: a dict of "
        "numpy arrays, pickle protocol 2); default: from the --out suffix",
    )
    add_debug_option(parser)
    return parser


def _output_path(parser: argparse.ArgumentParser, out: Path, fmt: str | None) -> Path:
    suffix = out.suffix.lstrip(".")
    if fmt is None:
        if suffix not in ("npz", "pkl"):
            parser.error(f"--out {out}: give it a .npz or .pkl name (or set --format)")
        return out
    if suffix in ("npz", "pkl") and suffix != fmt:
        parser.error(f"--out {out} ends in .{suffix} but --format is {fmt}; make them agree")
    return out if suffix == fmt else out.with_name(out.name + f".{fmt}")


@reported("spin-fit-prior")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.components < 1:
        parser.error(f"--components must be at least 1, got {args.components}")
    if args.iterations < 1:
        parser.error(f"--iterations must be at least 1, got {args.iterations}")
    if args.reg_covar <= 0:
        parser.error(f"--reg-covar must be positive, got {args.reg_covar}")
    out = _output_path(parser, args.out, args.format)
    start = time.perf_counter()

    if args.from_sampler is not None:
        if args.from_sampler < 1:
            parser.error(f"--from-sampler must be at least 1, got {args.from_sampler}")
        if args.key:
            parser.error(
                "--key names an array of the input file; it has no use with --from-sampler"
            )
        poses = sample_poses(args.from_sampler, np.random.default_rng(args.seed))[:, 3:]
        source = f"{args.from_sampler} poses from spin.body.pose_sampler (seed {args.seed})"
        print(f"sampled {source}")
    else:
        try:
            poses, key, without_smpl = read_poses(args.poses, args.key)
        except PoseInputError as error:
            parser.exit(2, f"spin-fit-prior: {error}\n")
        source = f"{args.poses}[{key!r}]"
        print(f"read {len(poses) + without_smpl} poses from {source}")
        if without_smpl:
            print(f"skipped {without_smpl} rows whose has_smpl flag is 0")
    poses, non_finite = drop_non_finite(poses)
    if non_finite:
        print(f"dropped {non_finite} rows holding NaN or inf")
    if len(poses) < args.components:
        parser.exit(
            2,
            f"spin-fit-prior: {len(poses)} usable poses for {args.components} components; "
            "give more poses or fewer --components\n",
        )
    if len(poses) < MIN_POSES_PER_DIM * BODY_POSE_SIZE * args.components:
        print(
            f"note: {len(poses)} poses is few for {args.components} full-covariance "
            f"Gaussians in {BODY_POSE_SIZE} dimensions; the ridge --reg-covar dominates "
            "poorly sampled directions"
        )

    with tqdm(total=args.iterations, desc="EM", unit="it", file=sys.stdout) as bar:

        def report(iteration: int, mean_log_likelihood: float) -> None:
            bar.update(1)
            bar.set_postfix(loglik=f"{mean_log_likelihood:.4f}")
            tqdm.write(
                f"iteration {iteration + 1}: mean log-likelihood {mean_log_likelihood:.6f}",
                file=sys.stdout,
            )

        means, covars, weights = fit_gmm(
            poses,
            num_components=args.components,
            iterations=args.iterations,
            seed=args.seed,
            tol=args.tol,
            reg_covar=args.reg_covar,
            callback=report,
        )
    final = float(gmm_log_likelihood(poses, means, covars, weights).mean())
    command = "spin-fit-prior " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    description = (
        f"GMM pose prior ({args.components} components, {BODY_POSE_SIZE}-d axis-angle body "
        f"pose) fitted to {len(poses)} poses: {source}. Command: {command}"
    )
    path = save_gmm_file(out, means, covars, weights, description=description)
    elapsed = time.perf_counter() - start

    print(f"fitted {args.components} components to {len(poses)} poses")
    print(f"final mean log-likelihood: {final:.6f}")
    print("component weights: " + " ".join(f"{w:.4f}" for w in weights))
    print(f"wrote {path} ({'SMPLify pickle' if path.suffix == '.pkl' else 'npz'})")
    print(f"took {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
