"""Rotations, cameras, projection and Procrustes alignment."""

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
from spin.geometry.procrustes import SimilarityTransform, procrustes_align, similarity_procrustes
from spin.geometry.rotations import (
    rotmat_to_rotvec,
    rotmat_to_sixd,
    rotvec_to_rotmat,
    sixd_to_rotmat,
    upright_facing_camera,
)
from spin.geometry.translation import estimate_translation

__all__ = [
    "CROP_SIZE",
    "FOCAL_LENGTH",
    "SimilarityTransform",
    "crop_intrinsics",
    "crop_translation_to_full_frame",
    "estimate_translation",
    "full_frame_intrinsics",
    "intrinsics_matrix",
    "normalized_to_pixels",
    "perspective_projection",
    "pixels_to_normalized",
    "procrustes_align",
    "rotmat_to_rotvec",
    "rotmat_to_sixd",
    "rotvec_to_rotmat",
    "similarity_procrustes",
    "sixd_to_rotmat",
    "translation_to_weak_perspective",
    "upright_facing_camera",
    "weak_perspective_to_translation",
]
