"""The adversarial prior's losses, corpus and discriminator step."""

import numpy as np
import pytest
import torch

from spin.geometry import rotvec_to_rotmat
from spin.train.adversarial import (
    AdversarialConfig,
    add_adversarial_loss,
    build_adversarial_prior,
    discriminator_loss,
    encoder_adversarial_loss,
    load_prior_corpus,
)

REAL = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
FAKE = torch.tensor([[0.2, -1.0], [1.0, 0.0], [0.5, 0.5]])


def test_lsgan_losses_match_a_hand_computation():
    # Real: per sample sum_k (D - 1)^2 = 0 + 0.25 and 1 + 1 -> mean 1.125.
    # Fake: sum_k D^2 = 0.04 + 1, 1 + 0, 0.25 + 0.25 -> mean 2.54 / 3.
    assert discriminator_loss(REAL, FAKE).item() == pytest.approx(1.125 + 2.54 / 3)
    # Encoder: sum_k (D - 1)^2 = 0.64 + 4, 0 + 1, 0.25 + 0.25 -> mean 6.14 / 3.
    assert encoder_adversarial_loss(FAKE).item() == pytest.approx(6.14 / 3)


def test_adversarial_loss_is_added_in_loss_config_units():
    losses = {"total": torch.tensor(2.0)}
    add_adversarial_loss(losses, torch.tensor(3.0, requires_grad=True), weight=0.5, scale=60.0)
    assert losses["total"].item() == pytest.approx(2.0 + 60.0 * 0.5 * 3.0)
    assert losses["adversarial"].item() == 3.0 and not losses["adversarial"].requires_grad


def test_sampler_corpus_is_seeded_and_drops_the_global_orientation():
    a = load_prior_corpus("sampler", num_betas=10, size=16, seed=3)
    b = load_prior_corpus("sampler", num_betas=10, size=16, seed=3)
    c = load_prior_corpus("sampler", num_betas=10, size=16, seed=4)
    assert a.body_rotmats.shape == (16, 23, 3, 3) and a.betas.shape == (16, 10)
    assert torch.equal(a.body_rotmats, b.body_rotmats) and torch.equal(a.betas, b.betas)
    assert not torch.equal(a.body_rotmats, c.body_rotmats)
    first = a.sample(5)
    state = a.state_dict()
    second = a.sample(5)
    a.load_state_dict(state)  # the batch RNG is restored with the state
    assert all(torch.equal(x, y) for x, y in zip(second, a.sample(5), strict=True))
    assert not torch.equal(first[0], second[0])


@pytest.mark.parametrize(("key", "width"), [("shape", 10), ("betas", 12), ("betas", 6), (None, 0)])
def test_npz_corpus_reads_poses_and_fits_the_betas(tmp_path, key, width):
    rng = np.random.default_rng(0)
    pose = rng.normal(scale=0.3, size=(7, 72))
    arrays = {"pose": pose}
    if key is not None:
        arrays[key] = rng.normal(size=(7, width))
    np.savez(tmp_path / "corpus.npz", **arrays)
    corpus = load_prior_corpus(str(tmp_path / "corpus.npz"), num_betas=10, size=1000, seed=0)
    assert len(corpus) == 7  # every row of the file; size is for the sampler
    expected = rotvec_to_rotmat(torch.as_tensor(pose).reshape(7, 24, 3))[:, 1:]
    assert torch.allclose(corpus.body_rotmats.double(), expected, atol=1e-6)
    if key is not None:
        kept = min(width, 10)
        assert np.allclose(corpus.betas[:, :kept].numpy(), arrays[key][:, :kept], atol=1e-6)
        assert (corpus.betas[:, kept:] == 0).all()


def test_bad_corpus_files_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'sampler'"):
        load_prior_corpus(str(tmp_path / "missing.npz"), 10, 10, 0)
    np.savez(tmp_path / "nopose.npz", poses=np.zeros((3, 72)))
    with pytest.raises(ValueError, match="needs 'pose'"):
        load_prior_corpus(str(tmp_path / "nopose.npz"), 10, 10, 0)


def test_discriminator_step_trains_only_the_discriminator():
    config = AdversarialConfig(enabled=True, corpus_size=32, lr=1e-3)
    prior = build_adversarial_prior(config, num_betas=10, seed=0, device="cpu")
    pose_rotmats = rotvec_to_rotmat(0.3 * torch.randn(4, 24, 3)).requires_grad_()
    betas = torch.randn(4, 10, requires_grad=True)
    encoder = prior.encoder_loss(pose_rotmats, betas)
    encoder.backward()
    assert pose_rotmats.grad[:, 1:].abs().sum() > 0 and betas.grad.abs().sum() > 0
    assert (pose_rotmats.grad[:, 0] == 0).all()  # the global orientation is not judged
    before = [p.detach().clone() for p in prior.discriminator.parameters()]
    losses = [prior.step(pose_rotmats, betas).item() for _ in range(5)]
    after = list(prior.discriminator.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert losses[-1] < losses[0]


def test_building_the_prior_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_adversarial_prior(AdversarialConfig(corpus_size=8), 10, seed=5, device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_config_is_validated():
    with pytest.raises(ValueError, match="lr > 0"):
        AdversarialConfig(lr=0.0)
    with pytest.raises(ValueError, match="corpus_size"):
        AdversarialConfig(corpus_size=0)
