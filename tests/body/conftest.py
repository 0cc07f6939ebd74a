"""Toy body models: small random meshes with SMPL's kinematic tree."""

import numpy as np
import pytest
import smplx
import torch

from spin.body.joint_conventions import SMPL_OUTPUT_VERTEX_JOINTS
from spin.body.model_data import BodyModelData

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def _sparse_rows(rng, rows, num_vertices, per_row):
    """Random non-negative rows over a few vertices each, summing to one."""
    out = np.zeros((rows, num_vertices))
    for r in range(rows):
        cols = rng.choice(num_vertices, size=per_row, replace=False)
        w = rng.uniform(0.1, 1.0, size=per_row)
        out[r, cols] = w / w.sum()
    return out


def make_toy_model_data(seed=0, num_vertices=60, num_faces=40, num_betas=10, **overrides):
    rng = np.random.default_rng(seed)
    V = num_vertices
    fields = dict(
        name="toy",
        v_template=rng.normal(scale=0.3, size=(V, 3)),
        faces=rng.integers(0, V, size=(num_faces, 3)),
        shapedirs=rng.normal(scale=0.03, size=(V, 3, num_betas)),
        posedirs=rng.normal(scale=0.01, size=(V, 3, 207)),
        J_regressor=_sparse_rows(rng, 24, V, 4),
        lbs_weights=_sparse_rows(rng, V, 24, 3),
        parents=np.array(SMPL_PARENTS),
        vertex_ids={
            key: int(v)
            for key, v in zip(
                SMPL_OUTPUT_VERTEX_JOINTS,
                rng.choice(V, len(SMPL_OUTPUT_VERTEX_JOINTS), replace=False),
                strict=True,
            )
        },
        J_regressor_extra=_sparse_rows(rng, 9, V, 5),
        J_regressor_h36m=_sparse_rows(rng, 17, V, 5),
        keypoint_regressor_coco=_sparse_rows(rng, 23, V, 3),
    )
    fields.update(overrides)
    return BodyModelData(**fields)


@pytest.fixture
def toy_model_data():
    return make_toy_model_data()


def smplx_reference(data, dtype=torch.float32):
    """smplx.SMPL built from the same arrays (see ENVIRONMENT.md, "smplx traps")."""
    shapedirs = data.shapedirs
    if data.num_betas != 10:  # smplx caps betas at 10 unless there are 300 columns
        shapedirs = np.concatenate(
            [shapedirs, np.zeros((*shapedirs.shape[:2], 300 - data.num_betas))], axis=2
        )
    struct = smplx.utils.Struct(
        v_template=data.v_template,
        f=data.faces,
        shapedirs=shapedirs,
        posedirs=data.posedirs,
        J_regressor=data.J_regressor,
        weights=data.lbs_weights,
        kintree_table=np.stack([data.parents, np.arange(24)]),
    )
    return smplx.SMPL(
        model_path="",
        data_struct=struct,
        vertex_ids=data.vertex_ids,
        num_betas=data.num_betas,
        dtype=dtype,
    )
