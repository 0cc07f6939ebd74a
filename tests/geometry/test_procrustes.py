import pytest
import roma
import torch

from spin.geometry.procrustes import SimilarityTransform, procrustes_align, similarity_procrustes

F64 = torch.float64


def _known_transform(batch_shape, dtype, gen):
    return SimilarityTransform(
        scale=0.5 + 1.5 * torch.rand(batch_shape, generator=gen, dtype=dtype),
        rotation=roma.random_rotmat(batch_shape, dtype=dtype, generator=gen),
        translation=torch.randn((*batch_shape, 3), generator=gen, dtype=dtype),
    )


def test_recovers_a_known_similarity_transform():
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(4, 20, 3, generator=gen, dtype=F64)
    truth = _known_transform((4,), F64, gen)
    found = similarity_procrustes(source, truth.apply(source))
    torch.testing.assert_close(found.scale, truth.scale)
    torch.testing.assert_close(found.rotation, truth.rotation)
    torch.testing.assert_close(found.translation, truth.translation)


def test_reflected_target_still_gives_a_proper_rotation():
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(4, 20, 3, generator=gen, dtype=F64)
    mirrored = source * torch.tensor([-1.0, 1.0, 1.0], dtype=F64)
    found = similarity_procrustes(source, mirrored)
    dets = torch.linalg.det(found.rotation)
    torch.testing.assert_close(dets, torch.ones_like(dets))
    eye = torch.eye(3, dtype=F64).expand(4, 3, 3)
    torch.testing.assert_close(found.rotation.transpose(-1, -2) @ found.rotation, eye)
    assert (found.scale > 0).all()
    # A mirror image cannot be reached by a rotation: the residual stays positive.
    assert ((found.apply(source) - mirrored).norm(dim=-1).mean(dim=-1) > 0.1).all()


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-4), (F64, 1e-10)])
def test_align_a_transformed_copy_to_zero_error(dtype, atol):
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(2, 3, 17, 3, generator=gen, dtype=dtype)
    target = _known_transform((2, 3), dtype, gen).apply(source)
    aligned = procrustes_align(source, target)
    assert aligned.shape == source.shape and aligned.dtype == dtype
    torch.testing.assert_close(aligned, target, atol=atol, rtol=0)


def test_zero_weights_ignore_outliers():
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(3, 15, 3, generator=gen, dtype=F64)
    truth = _known_transform((3,), F64, gen)
    target = truth.apply(source)
    target[:, :3] += 10.0
    weights = torch.ones(3, 15, dtype=F64)
    weights[:, :3] = 0.0
    found = similarity_procrustes(source, target, weights)
    torch.testing.assert_close(found.rotation, truth.rotation)
    torch.testing.assert_close(found.scale, truth.scale)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="corresponding points"):
        similarity_procrustes(torch.zeros(2, 5, 3), torch.zeros(2, 6, 3))
    with pytest.raises(ValueError, match="weights"):
        similarity_procrustes(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), torch.ones(2, 4))
