import math

import pytest
import roma
import torch

from spin.geometry.rotations import (
    rotmat_to_rotvec,
    rotmat_to_sixd,
    rotvec_to_rotmat,
    sixd_to_rotmat,
)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _assert_rotations(rotmat: torch.Tensor, atol: float) -> None:
    eye = torch.eye(3, dtype=rotmat.dtype).expand_as(rotmat)
    torch.testing.assert_close(rotmat.transpose(-1, -2) @ rotmat, eye, atol=atol, rtol=0)
    dets = torch.linalg.det(rotmat)
    torch.testing.assert_close(dets, torch.ones_like(dets), atol=atol, rtol=0)


def test_rotvec_rotmat_round_trip_with_leading_dims():
    gen = _generator()
    # Angles below pi so the axis-angle vector is unique.
    axes = torch.nn.functional.normalize(
        torch.randn(2, 5, 3, generator=gen, dtype=torch.float64), dim=-1
    )
    angles = torch.rand(2, 5, 1, generator=gen, dtype=torch.float64) * (math.pi - 0.1)
    rotvecs = axes * angles
    rotmats = rotvec_to_rotmat(rotvecs)
    assert rotmats.shape == (2, 5, 3, 3)
    _assert_rotations(rotmats, atol=1e-12)
    torch.testing.assert_close(rotmat_to_rotvec(rotmats), rotvecs)


def test_rotvec_to_rotmat_matches_a_known_rotation():
    # A quarter turn about z maps x to y.
    rotmat = rotvec_to_rotmat(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    x_axis = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(rotmat @ x_axis, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


def test_rotmat_sixd_round_trip_and_convention():
    rotmats = roma.random_rotmat((3, 4), dtype=torch.float64, generator=_generator())
    sixd = rotmat_to_sixd(rotmats)
    assert sixd.shape == (3, 4, 6)
    # SPIN/HMR convention: the first two columns, flattened row-major.
    torch.testing.assert_close(sixd, rotmats[..., :, :2].reshape(3, 4, 6))
    torch.testing.assert_close(sixd_to_rotmat(sixd), rotmats)


def test_sixd_is_read_as_interleaved_columns():
    # Columns (0, 1, 0) and (0, 0, 1) interleave to [0, 0, 1, 0, 0, 1].
    sixd = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    expected = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(sixd_to_rotmat(sixd), expected)


def test_arbitrary_sixd_gives_a_proper_rotation():
    sixd = 3.0 * torch.randn(100, 6, generator=_generator())
    rotmats = sixd_to_rotmat(sixd)
    _assert_rotations(rotmats, atol=1e-5)
    # The first column keeps the direction of the first 6D column.
    first = torch.nn.functional.normalize(sixd.reshape(100, 3, 2)[..., 0], dim=-1)
    torch.testing.assert_close(rotmats[..., 0], first)


def test_gradcheck_sixd_to_rotmat():
    sixd = torch.randn(4, 6, generator=_generator(), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sixd_to_rotmat, (sixd,))


def test_gradcheck_rotvec_to_rotmat():
    rotvecs = torch.randn(4, 3, generator=_generator(), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotvec_to_rotmat, (rotvecs,))


@pytest.mark.parametrize(
    ("function", "bad_shape"),
    [
        (rotvec_to_rotmat, (4, 4)),
        (sixd_to_rotmat, (4, 9)),
        (rotmat_to_sixd, (4, 3)),
        (rotmat_to_rotvec, (4, 2, 3)),
    ],
)
def test_wrong_shapes_raise_clear_errors(function, bad_shape):
    with pytest.raises(ValueError, match="expected .* of shape"):
        function(torch.zeros(bad_shape))


def test_upright_facing_camera():
    from spin.geometry import upright_facing_camera

    rotation = rotvec_to_rotmat(upright_facing_camera(torch.tensor([0.0, 90.0])))
    # SMPL's up (+y) becomes the camera's up (-y); its front (+z) faces the camera (-z).
    assert torch.allclose(
        rotation[0] @ torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, -1.0, 0.0]), atol=1e-6
    )
    assert torch.allclose(
        rotation[0] @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, -1.0]), atol=1e-6
    )
    # A 90 degree yaw keeps the body upright and turns its front sideways.
    assert torch.allclose(
        rotation[1] @ torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, -1.0, 0.0]), atol=1e-6
    )
    assert abs(float((rotation[1] @ torch.tensor([0.0, 0.0, 1.0]))[2])) < 1e-6
