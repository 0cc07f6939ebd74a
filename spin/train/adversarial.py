"""HMR's adversarial prior as a training option: LSGAN losses, the unpaired corpus of real
poses and shapes, and the discriminator's own optimiser step.

With ``adversarial.enabled``, each training step adds the encoder's adversarial loss
(the predicted body pose and betas should look real to the discriminator) to the total,
then takes one discriminator step on a batch of real corpus samples against the detached
prediction (Kanazawa et al., CVPR 2018, Sec. 3.3). Losses are least-squares GAN (Mao et
al., 2017), summed over the 25 discriminator outputs and averaged over the batch as in
HMR's code:

- discriminator: ``E[sum_k (D_k(real) - 1)^2] + E[sum_k D_k(fake)^2]``;
- encoder: ``E[sum_k (D_k(fake) - 1)^2]``.

The corpus is unpaired with the images: the pose sampler's everyday poses
(:func:`spin.body.pose_sampler.sample_poses`) with N(0, I) betas by default, or the SMPL
poses of an ``.npz`` file (e.g. a motion-capture set converted to SMPL, as HMR used).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spin.body.pose_sampler import sample_poses
from spin.geometry import rotvec_to_rotmat
from spin.regressor.discriminator import NUM_BODY_JOINTS, PoseShapeDiscriminator

__all__ = [
    "AdversarialConfig",
    "AdversarialPrior",
    "PriorCorpus",
    "add_adversarial_loss",
    "build_adversarial_prior",
    "discriminator_loss",
    "encoder_adversarial_loss",
    "load_prior_corpus",
]

# Streams of the seed used for the sampler corpus and the corpus' batch sampling.
_CORPUS_STREAM = 11
_BATCH_STREAM = 12


@dataclass(frozen=True)
class AdversarialConfig:
    """HMR's adversarial pose/shape prior (:mod:`spin.train.adversarial`).

    Attributes:
        enabled: add the prior to training.
        weight: weight of the encoder's adversarial loss, in :class:`LossConfig` units
            (multiplied by ``loss.scale``). The default makes ``scale * weight = 1``: HMR's
            lambda = 1 on the loss summed over the 25 outputs, next to keypoint terms
            weighted 60 (HMR's 60 x L1; SPIN's 60 x 5 x MSE here).
        lr: the discriminator's Adam learning rate (HMR: 1e-4).
        weight_decay: the discriminator's L2 weight decay (HMR: 1e-4).
        corpus: ``"sampler"`` (the pose sampler's poses with N(0, I) betas) or a path to an
            ``.npz`` with ``pose`` ``(N, 72)`` SMPL axis-angle poses and optionally ``shape``
            or ``betas`` ``(N, K)`` (N(0, I) betas when absent; cut or zero-padded to the
            body model's count).
        corpus_size: poses drawn from the sampler (once, seeded by the run's seed);
            ignored for a file, whose rows are all used.
    """

    enabled: bool = False
    weight: float = 1.0 / 60.0
    lr: float = 1e-4
    weight_decay: float = 1e-4
    corpus: str = "sampler"
    corpus_size: int = 10000

    def __post_init__(self) -> None:
        if self.weight < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(
                "adversarial weight and weight_decay must be >= 0 and lr > 0, got "
                f"{self.weight}, {self.weight_decay}, {self.lr}"
            )
        if self.corpus_size < 1:
            raise ValueError(f"adversarial corpus_size must be >= 1, got {self.corpus_size}")


# --- losses ------------------------------------------------------------------------------------


def discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """LSGAN discriminator loss ``E[sum_k (D_k(real) - 1)^2] + E[sum_k D_k(fake)^2]``.

    Args:
        real_scores: ``(B, K)`` scores of real samples; fake_scores: ``(B', K)`` of
            predictions.
    """
    real = ((real_scores - 1.0) ** 2).sum(dim=1).mean()
    fake = (fake_scores**2).sum(dim=1).mean()
    return real + fake


def encoder_adversarial_loss(fake_scores: Tensor) -> Tensor:
    """LSGAN encoder loss ``E[sum_k (D_k(fake) - 1)^2]`` on ``(B, K)`` scores."""
    return ((fake_scores - 1.0) ** 2).sum(dim=1).mean()


def add_adversarial_loss(losses: dict, adversarial: Tensor, weight: float, scale: float) -> dict:
    """Add ``scale * weight * adversarial`` to ``losses["total"]`` and log it as
    ``losses["adversarial"]`` (unweighted, detached). Returns ``losses``."""
    losses["total"] = losses["total"] + scale * weight * adversarial
    losses["adversarial"] = adversarial.detach()
    return losses


# --- corpus ------------------------------------------------------------------------------------


class PriorCorpus:
    """Real body poses and shapes, sampled in batches with its own seeded generator.

    Args:
        body_rotmats: ``(N, 23, 3, 3)`` body-joint rotations (global orientation dropped).
        betas: ``(N, NB)``.
        seed: seed of the batch sampling (a ``torch.Generator`` on the CPU; its state is
            part of :meth:`state_dict`, so a resumed run draws the same batches).
    """

    def __init__(self, body_rotmats: Tensor, betas: Tensor, seed: int = 0) -> None:
        if body_rotmats.dim() != 4 or body_rotmats.shape[1:] != (NUM_BODY_JOINTS, 3, 3):
            raise ValueError(
                f"expected body_rotmats of shape (N, {NUM_BODY_JOINTS}, 3, 3), got "
                f"{tuple(body_rotmats.shape)}"
            )
        if betas.dim() != 2 or betas.shape[0] != body_rotmats.shape[0]:
            raise ValueError(
                f"expected betas of shape ({body_rotmats.shape[0]}, NB), got {tuple(betas.shape)}"
            )
        self.body_rotmats = body_rotmats
        self.betas = betas
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return self.body_rotmats.shape[0]

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """``batch_size`` samples drawn uniformly with replacement: ``(B, 23, 3, 3)``
        rotations and ``(B, NB)`` betas, on the corpus' device."""
        index = torch.randint(len(self), (batch_size,), generator=self.generator)
        index = index.to(self.body_rotmats.device)
        return self.body_rotmats[index], self.betas[index]

    def to(self, device) -> PriorCorpus:
        self.body_rotmats = self.body_rotmats.to(device)
        self.betas = self.betas.to(device)
        return self

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def _fit_betas(betas: np.ndarray, num_betas: int) -> np.ndarray:
    out = np.zeros((len(betas), num_betas))
    count = min(num_betas, betas.shape[1])
    out[:, :count] = betas[:, :count]
    return out


def load_prior_corpus(
    corpus: str, num_betas: int, size: int, seed: int, dtype: torch.dtype = torch.float32
) -> PriorCorpus:
    """The corpus named by :attr:`AdversarialConfig.corpus` (see there)."""
    rng = np.random.default_rng([int(seed), _CORPUS_STREAM])
    if corpus == "sampler":
        pose = sample_poses(size, rng)
        betas = None
    else:
        path = Path(corpus)
        if not path.is_file():
            raise FileNotFoundError(
                f"adversarial.corpus {corpus!r} is neither 'sampler' nor an existing .npz file"
            )
        with np.load(path) as npz:
            if "pose" not in npz.files:
                raise ValueError(
                    f"{path}: an adversarial corpus needs 'pose' (N, 72) SMPL axis-angle poses; "
                    f"it has {sorted(npz.files)}"
                )
            pose = np.asarray(npz["pose"], dtype=np.float64)
            key = "shape" if "shape" in npz.files else "betas" if "betas" in npz.files else None
            betas = np.asarray(npz[key], dtype=np.float64) if key else None
        if pose.ndim != 2 or pose.shape[1] != 72 or len(pose) == 0:
            raise ValueError(f"{path}: expected 'pose' of shape (N, 72), N >= 1, got {pose.shape}")
        if betas is not None and (betas.ndim != 2 or len(betas) != len(pose)):
            raise ValueError(
                f"{path}: expected '{key}' of shape ({len(pose)}, K), got {betas.shape}"
            )
    if betas is None:
        betas = rng.standard_normal((len(pose), num_betas))
    betas = _fit_betas(betas, num_betas)
    rotmats = rotvec_to_rotmat(torch.as_tensor(pose, dtype=torch.float64).reshape(-1, 24, 3))
    return PriorCorpus(
        rotmats[:, 1:].to(dtype),
        torch.as_tensor(betas, dtype=dtype),
        seed=int(np.random.default_rng([int(seed), _BATCH_STREAM]).integers(2**62)),
    )


# --- the prior in training ---------------------------------------------------------------------


class AdversarialPrior:
    """The discriminator, its Adam optimiser and the corpus, as one trainer component.

    Args:
        discriminator: a :class:`PoseShapeDiscriminator`.
        corpus: the real samples.
        config: learning rate and weight decay of the optimiser.

    ``train_discriminator`` is what the discriminator step runs: the discriminator itself,
    or a ``DistributedDataParallel`` wrapper of it that the trainer sets (one forward per
    backward: real and fake go through in one batch). The encoder loss uses the bare
    module, whose parameter gradients from it are discarded by the step.
    """

    def __init__(
        self, discriminator: PoseShapeDiscriminator, corpus: PriorCorpus, config: AdversarialConfig
    ) -> None:
        self.discriminator = discriminator
        self.train_discriminator = discriminator
        self.corpus = corpus
        self.optimizer = torch.optim.Adam(
            discriminator.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )

    def encoder_loss(self, pose_rotmats: Tensor, betas: Tensor) -> Tensor:
        """Encoder loss of predictions ``(B, 24, 3, 3)``, ``(B, NB)`` (gradients flow to
        the prediction; the discriminator's own gradients are cleared by its step)."""
        return encoder_adversarial_loss(self.discriminator(pose_rotmats[:, 1:], betas))

    def step(self, pose_rotmats: Tensor, betas: Tensor) -> Tensor:
        """One discriminator step: a real corpus batch of the same size against the
        (detached) predictions. Returns the discriminator loss before the step."""
        self.discriminator.train()
        num = pose_rotmats.shape[0]
        real_rotmats, real_betas = self.corpus.sample(num)
        scores = self.train_discriminator(
            torch.cat([real_rotmats, pose_rotmats[:, 1:].detach().to(real_rotmats.dtype)]),
            torch.cat([real_betas, betas.detach().to(real_betas.dtype)]),
        )
        loss = discriminator_loss(scores[:num], scores[num:])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict:
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "corpus": self.corpus.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.corpus.load_state_dict(state["corpus"])


def build_adversarial_prior(
    config: AdversarialConfig, num_betas: int, seed: int, device
) -> AdversarialPrior:
    """Discriminator (initialised from ``seed``, leaving the global RNG untouched), corpus
    and optimiser on ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        discriminator = PoseShapeDiscriminator(num_betas).to(device)
    corpus = load_prior_corpus(config.corpus, num_betas, config.corpus_size, seed).to(device)
    return AdversarialPrior(discriminator, corpus, config)
