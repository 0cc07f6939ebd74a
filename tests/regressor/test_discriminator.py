import numpy as np
import pytest
import roma
import torch

from spin.regressor.discriminator import NUM_BODY_JOINTS, NUM_SCORES, PoseShapeDiscriminator
from spin.train.adversarial import discriminator_loss, load_prior_corpus


def test_gives_25_scores_per_sample():
    torch.manual_seed(0)
    discriminator = PoseShapeDiscriminator(num_betas=10)
    scores = discriminator(roma.random_rotmat((5, NUM_BODY_JOINTS)), torch.randn(5, 10))
    assert NUM_SCORES == 25
    assert scores.shape == (5, 25)


def test_each_joint_score_depends_only_on_its_joint():
    torch.manual_seed(0)
    discriminator = PoseShapeDiscriminator(num_betas=10)
    rotmats, betas = roma.random_rotmat((1, NUM_BODY_JOINTS)), torch.randn(1, 10)
    changed = rotmats.clone()
    changed[0, 4] = roma.random_rotmat()
    delta = discriminator(changed, betas) - discriminator(rotmats, betas)
    moved = (delta.abs() > 0)[0]
    assert moved[4] and moved[NUM_BODY_JOINTS]  # joint 4 and the whole pose
    assert not moved[:4].any() and not moved[5:NUM_BODY_JOINTS].any() and not moved[-1]


def test_wrong_shapes_are_explained():
    discriminator = PoseShapeDiscriminator(num_betas=10)
    with pytest.raises(ValueError, match="global orientation"):
        discriminator(roma.random_rotmat((2, 24)), torch.zeros(2, 10))
    with pytest.raises(ValueError, match=r"betas of shape \(2, 10\)"):
        discriminator(roma.random_rotmat((2, NUM_BODY_JOINTS)), torch.zeros(2, 11))


def test_training_alone_separates_sampler_poses_from_random_rotations():
    """A few dozen LSGAN steps: everyday poses score high, uniformly random joint rotations
    low, on held-out samples of both (same N(0, I) betas, so only the pose tells)."""
    torch.manual_seed(0)
    real = load_prior_corpus("sampler", num_betas=10, size=2000, seed=0)
    held_out = load_prior_corpus("sampler", num_betas=10, size=256, seed=1)
    discriminator = PoseShapeDiscriminator(num_betas=10)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    batch = 32
    for _ in range(40):
        real_rotmats, real_betas = real.sample(batch)
        fake_rotmats = roma.random_rotmat((batch, NUM_BODY_JOINTS))
        scores = discriminator(
            torch.cat([real_rotmats, fake_rotmats]), torch.cat([real_betas, torch.randn(batch, 10)])
        )
        loss = discriminator_loss(scores[:batch], scores[batch:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        real_scores = discriminator(held_out.body_rotmats, held_out.betas)
        fake_scores = discriminator(roma.random_rotmat((256, NUM_BODY_JOINTS)), held_out.betas)
    real_score, fake_score = real_scores[:, NUM_BODY_JOINTS], fake_scores[:, NUM_BODY_JOINTS]
    accuracy = 0.5 * ((real_score > 0.5).float().mean() + (fake_score < 0.5).float().mean())
    print(f"whole-pose accuracy {accuracy:.3f}")
    assert accuracy > 0.95
    # The per-joint discriminators learn more slowly but already lean the right way.
    assert real_scores[:, :NUM_BODY_JOINTS].mean() > fake_scores[:, :NUM_BODY_JOINTS].mean()
    assert np.isfinite(loss.item())
