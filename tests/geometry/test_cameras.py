import math

import pytest
import roma
import torch

from spin.geometry.cameras import (
    CROP_SIZE,
    FOCAL_LENGTH,
    crop_intrinsics,
    crop_translation_to_full_frame,
    full_frame_intrinsics,
    intrinsics_matrix,
    normalized_to_pixels,
    perspective_projection,
    pixels_to_normalized,
    translation_to_weak_perspective,
    weak_perspective_to_translation,
)

F64 = torch.float64


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _uniform(gen, shape, low, high):
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=F64)


def test_intrinsics_matrix_scalar_and_per_axis_focal():
    principal = torch.tensor([[50.0, 60.0], [10.0, 20.0]], dtype=F64)
    k_scalar = intrinsics_matrix(torch.tensor([100.0, 300.0], dtype=F64), principal)
    k_axes = intrinsics_matrix(torch.tensor([[100.0, 200.0], [300.0, 400.0]], dtype=F64), principal)
    expected_first = torch.tensor([[100.0, 0, 50], [0, 100, 60], [0, 0, 1]], dtype=F64)
    torch.testing.assert_close(k_scalar[0], expected_first)
    assert k_scalar[1, 1, 1] == 300.0
    assert (k_axes[:, 0, 0].tolist(), k_axes[:, 1, 1].tolist()) == ([100, 300], [200, 400])


def test_crop_and_full_frame_intrinsics():
    like = torch.zeros((), dtype=F64)
    k_crop = crop_intrinsics((3,), like)
    assert k_crop.shape == (3, 3, 3) and k_crop.dtype == F64
    expected = [[FOCAL_LENGTH, 0, CROP_SIZE / 2], [0, FOCAL_LENGTH, CROP_SIZE / 2], [0, 0, 1]]
    torch.testing.assert_close(k_crop[1], torch.tensor(expected, dtype=F64))

    k_full = full_frame_intrinsics(torch.tensor([640.0, 480.0], dtype=F64))
    # Default focal is the image diagonal (CLIFF), principal point the image centre.
    expected = [[800.0, 0, 320], [0, 800, 240], [0, 0, 1]]
    torch.testing.assert_close(k_full, torch.tensor(expected, dtype=F64))


def test_projection_of_known_points_by_hand():
    intrinsics = torch.tensor([[100.0, 0, 50], [0, 200, 60], [0, 0, 1]], dtype=F64)
    points = torch.tensor([[1.0, 2.0, 4.0]], dtype=F64)
    translation = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    # Depth 5: u = 100 * 1 / 5 + 50, v = 200 * 2 / 5 + 60.
    uv = perspective_projection(points, intrinsics, translation=translation)
    torch.testing.assert_close(uv, torch.tensor([[70.0, 140.0]], dtype=F64))
    # A quarter turn about z, applied before the translation: (1, 2, 4) -> (-2, 1, 4).
    rotation = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, math.pi / 2], dtype=F64))
    uv = perspective_projection(points, intrinsics, rotation, translation)
    torch.testing.assert_close(uv, torch.tensor([[10.0, 100.0]], dtype=F64))


def test_projection_broadcasts_leading_dims_and_stays_finite_at_zero_depth():
    points = torch.randn(2, 3, 7, 3, generator=_generator(), dtype=F64)
    intrinsics = crop_intrinsics((3,), points)
    assert perspective_projection(points, intrinsics).shape == (2, 3, 7, 2)
    at_camera = torch.zeros(1, 3, dtype=F64)
    assert torch.isfinite(perspective_projection(at_camera, intrinsics[0])).all()


def test_weak_perspective_translation_round_trip():
    gen = _generator()
    cam = torch.stack(
        [
            _uniform(gen, (5,), 0.5, 1.5),
            _uniform(gen, (5,), -0.3, 0.3),
            _uniform(gen, (5,), -0.3, 0.3),
        ],
        dim=-1,
    )
    translation = weak_perspective_to_translation(cam)
    torch.testing.assert_close(translation[:, :2], cam[:, 1:])
    torch.testing.assert_close(translation[:, 2], 2 * FOCAL_LENGTH / (CROP_SIZE * cam[:, 0]))
    torch.testing.assert_close(translation_to_weak_perspective(translation), cam)


def test_weak_perspective_matches_the_crop_camera_on_the_depth_zero_plane():
    # At depth Z = 0 the crop camera puts X at normalised s * (X[:2] + [tx, ty]).
    cam = torch.tensor([0.8, 0.1, -0.2], dtype=F64)
    points = torch.tensor([[0.3, -0.5, 0.0], [-0.2, 0.4, 0.0]], dtype=F64)
    uv = perspective_projection(
        points, crop_intrinsics((), cam), translation=weak_perspective_to_translation(cam)
    )
    expected = cam[0] * (points[:, :2] + cam[1:])
    torch.testing.assert_close(pixels_to_normalized(uv), expected)


def test_pixels_normalized_round_trip():
    pixels = _uniform(_generator(), (4, 9, 2), 0.0, CROP_SIZE)
    normalised = pixels_to_normalized(pixels)
    assert normalised.abs().max() <= 1.0
    torch.testing.assert_close(normalized_to_pixels(normalised), pixels)
    corners = torch.tensor([[0.0, 0.0], [CROP_SIZE / 2, CROP_SIZE], [CROP_SIZE, CROP_SIZE / 2]])
    expected = torch.tensor([[-1.0, -1.0], [0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(pixels_to_normalized(corners), expected)


def _crop_and_full_frame_pixels(points, cam, box_center, box_size, image_size, focal):
    """Pixels of ``points`` via the crop camera (mapped into the image) and via the full frame.

    The crop camera is the perspective camera the weak-perspective ``cam`` stands
    for when the crop is the image region inside the box: focal
    ``focal * CROP_SIZE / box_size`` (the full-frame focal, resampled to crop
    pixels) and principal point at the crop centre.
    """
    crop_focal = focal * CROP_SIZE / box_size
    crop_uv = perspective_projection(
        points,
        crop_intrinsics(box_size.shape, points, crop_focal),
        translation=weak_perspective_to_translation(cam, crop_focal),
    )
    top_left = box_center - box_size[:, None] / 2
    crop_to_image = (box_size / CROP_SIZE)[:, None, None]
    via_crop = top_left[:, None, :] + crop_uv * crop_to_image

    full_t = crop_translation_to_full_frame(cam, box_center, box_size, image_size, focal)
    via_full = perspective_projection(
        points, full_frame_intrinsics(image_size, focal), translation=full_t
    )
    return via_crop, via_full


def _random_crop_setup(gen, batch):
    image_size = torch.tensor([1920.0, 1080.0], dtype=F64).expand(batch, 2)
    box_size = _uniform(gen, (batch,), 150.0, 600.0)
    box_center = torch.stack(
        [_uniform(gen, (batch,), 300.0, 1600.0), _uniform(gen, (batch,), 300.0, 800.0)], dim=-1
    )
    cam = torch.stack(
        [
            _uniform(gen, (batch,), 0.6, 1.2),
            _uniform(gen, (batch,), -0.2, 0.2),
            _uniform(gen, (batch,), -0.2, 0.2),
        ],
        dim=-1,
    )
    focal = _uniform(gen, (batch,), 1000.0, 3000.0)
    return cam, box_center, box_size, image_size, focal


def test_crop_to_full_frame_is_exact_on_the_depth_zero_plane():
    """For points at body-frame depth Z = 0 the two cameras agree exactly.

    The crop camera's principal axis passes through the box centre, the full
    frame's through the image centre; the conversion shifts tx, ty by the box
    offset at depth tz, which matches exactly for points at depth Z = 0 (any box)
    and for all points when the box is centred (next test).
    """
    gen = _generator()
    cam, box_center, box_size, image_size, focal = _random_crop_setup(gen, batch=6)
    points = torch.randn(6, 10, 3, generator=gen, dtype=F64)
    points[..., 2] = 0.0
    via_crop, via_full = _crop_and_full_frame_pixels(
        points, cam, box_center, box_size, image_size, focal
    )
    torch.testing.assert_close(via_full, via_crop, atol=1e-6, rtol=0)


def test_crop_to_full_frame_is_exact_for_a_centred_box():
    gen = _generator()
    cam, _, box_size, image_size, focal = _random_crop_setup(gen, batch=6)
    points = 0.5 * torch.randn(6, 10, 3, generator=gen, dtype=F64)
    via_crop, via_full = _crop_and_full_frame_pixels(
        points, cam, image_size / 2, box_size, image_size, focal
    )
    torch.testing.assert_close(via_full, via_crop, atol=1e-6, rtol=0)


def test_gradcheck_perspective_projection():
    gen = _generator()
    points = torch.randn(2, 4, 3, generator=gen, dtype=F64, requires_grad=True)
    intrinsics = intrinsics_matrix(
        _uniform(gen, (2, 2), 50.0, 100.0), _uniform(gen, (2, 2), 20.0, 40.0)
    ).requires_grad_()
    rotation = roma.random_rotmat((2,), dtype=F64, generator=gen).requires_grad_()
    translation = torch.tensor([[0.1, -0.2, 6.0], [0.0, 0.3, 5.0]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        perspective_projection, (points, intrinsics, rotation, translation)
    )


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"expected points of shape \(\.\.\., 3\)"):
        perspective_projection(torch.zeros(4, 2), torch.eye(3))
    with pytest.raises(ValueError, match="expected cam of shape"):
        weak_perspective_to_translation(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="focal_length"):
        intrinsics_matrix(torch.ones(4, 3), torch.zeros(4, 2))
