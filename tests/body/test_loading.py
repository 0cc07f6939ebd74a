import contextlib
import dataclasses
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from spin.body import (
    BodyModel,
    BodyModelData,
    UnsafeModelFileError,
    load_body_model,
    load_body_model_data,
    save_body_model_data,
)
from spin.body.loading import ASSETS_DIR, BUNDLED_MODELS
from tests.body.conftest import make_toy_model_data

ARRAY_FIELDS = (
    "v_template",
    "faces",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "lbs_weights",
    "parents",
    "J_regressor_extra",
    "J_regressor_h36m",
    "keypoint_regressor_coco",
)


def assert_same_data(a: BodyModelData, b: BodyModelData):
    for key in ARRAY_FIELDS:
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=key)
    assert a.vertex_ids == b.vertex_ids


# --- npz ------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path, toy_model_data):
    path = tmp_path / "toy.npz"
    save_body_model_data(toy_model_data, path)
    loaded = load_body_model_data(path)
    assert_same_data(toy_model_data, loaded)
    assert loaded.name == "toy" and loaded.gender == "neutral"


def test_npz_round_trip_zero_posedirs_and_no_extras(tmp_path):
    data = make_toy_model_data(
        posedirs=np.zeros((60, 3, 207)),
        J_regressor_extra=None,
        J_regressor_h36m=None,
        keypoint_regressor_coco=None,
        vertex_ids={},
        gender="female",
    )
    path = tmp_path / "toy.npz"
    save_body_model_data(data, path)
    assert "posedirs" not in np.load(path).files  # zeros are restored on load
    loaded = load_body_model_data(path)
    assert_same_data(data, loaded)
    assert loaded.gender == "female"


def test_smpl_sized_mesh_gets_smplx_vertex_ids(tmp_path):
    from smplx.vertex_ids import vertex_ids

    data = make_toy_model_data(num_vertices=6890, vertex_ids={}, posedirs=np.zeros((6890, 3, 207)))
    keys = dict(
        v_template=data.v_template,
        f=data.faces,
        shapedirs=data.shapedirs,
        J_regressor=data.J_regressor,
        weights=data.lbs_weights,
        kintree_table=np.stack([data.parents, np.arange(24)]),
    )
    np.savez(tmp_path / "plain.npz", **keys)
    loaded = load_body_model_data(tmp_path / "plain.npz", gender="male")
    assert loaded.vertex_ids == vertex_ids["smplh"]
    assert loaded.gender == "male" and not loaded.posedirs.any()


def test_npz_missing_keys_are_listed(tmp_path, toy_model_data):
    path = tmp_path / "broken.npz"
    np.savez(path, v_template=toy_model_data.v_template, f=toy_model_data.faces)
    with pytest.raises(ValueError, match=r"missing the keys \['shapedirs', 'J_regressor'"):
        load_body_model_data(path)


def test_wrong_shapes_say_what_mismatches(toy_model_data):
    with pytest.raises(ValueError, match="shapedirs has 59 vertices but v_template has 60"):
        dataclasses.replace(toy_model_data, shapedirs=toy_model_data.shapedirs[:59])
    with pytest.raises(ValueError, match="J_regressor_extra has 61 vertices"):
        dataclasses.replace(toy_model_data, J_regressor_extra=np.zeros((9, 61)))
    with pytest.raises(ValueError, match=r"parents\[0\] must be -1"):
        dataclasses.replace(toy_model_data, parents=np.arange(24))
    with pytest.raises(ValueError, match="vertex_ids .* outside"):
        dataclasses.replace(toy_model_data, vertex_ids={**toy_model_data.vertex_ids, "nose": 60})


def test_folder_search_and_env_variable(tmp_path, monkeypatch, toy_model_data):
    save_body_model_data(toy_model_data, tmp_path / "SMPL_NEUTRAL.npz")
    assert_same_data(toy_model_data, load_body_model_data(tmp_path))
    monkeypatch.setenv("SPIN_SMPL_DIR", str(tmp_path))
    from_env = load_body_model_data("smpl")
    assert_same_data(toy_model_data, from_env)
    assert from_env.name == "smpl"
    with pytest.raises(FileNotFoundError, match="SMPL_MALE.pkl.*basicmodel_m_lbs"):
        load_body_model_data(tmp_path, gender="male")


def test_missing_file_mentions_where_to_put_models(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="SPIN_SMPL_DIR") as info:
        load_body_model_data(tmp_path / "nope.pkl")
    assert "open" in str(info.value)
    monkeypatch.delenv("SPIN_SMPL_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="SPIN_SMPL_DIR"):
        load_body_model_data("smpl")


def test_load_body_model_builds_the_layer(tmp_path, toy_model_data):
    save_body_model_data(toy_model_data, tmp_path / "toy.npz")
    model = load_body_model(tmp_path / "toy.npz")
    assert isinstance(model, BodyModel) and model.num_betas == 10
    assert model(torch.zeros(1, 72)).joints_spin.shape == (1, 49, 3)


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_bundled_model(name):
    if not (ASSETS_DIR / BUNDLED_MODELS[name]).is_file():
        pytest.skip(f"bundled asset {BUNDLED_MODELS[name]} not built yet")
    model = load_body_model(name)
    assert model.name == name
    out = model(torch.zeros(2, 72), torch.zeros(2, model.num_betas))
    assert out.joints_spin.shape == (2, 49, 3)
    assert torch.isfinite(out.vertices).all()


# --- official-style pickles -----------------------------------------------------------


class FakeCh:
    """Pickles like chumpy.ch.Ch: NEWOBJ of chumpy.ch.Ch + a state dict holding 'x'."""

    def __init__(self, x):
        self.x = np.asarray(x)
        self._dirty_vars = set()
        self._itr = None
        self._depends_on_deps = {}
        self._make_dense = False
        self._make_sparse = False


class OldCsc:
    """Pickles like a csc_matrix from the old scipy.sparse.csc module."""

    def __init__(self, dense):
        self.__dict__.update(vars(scipy.sparse.csc_matrix(dense)))


@contextlib.contextmanager
def importable_as(cls, module_name, name):
    """Make ``cls`` picklable as ``module_name.name`` while inside the block."""
    saved = {m: sys.modules.get(m) for m in (module_name, module_name.rsplit(".", 1)[0])}
    old_names = cls.__module__, cls.__qualname__, cls.__name__
    parent = types.ModuleType(module_name.rsplit(".", 1)[0])
    module = types.ModuleType(module_name)
    setattr(module, name, cls)
    cls.__module__, cls.__qualname__, cls.__name__ = module_name, name, name
    if saved[parent.__name__] is None:
        sys.modules[parent.__name__] = parent
    sys.modules[module_name] = module
    try:
        yield
    finally:
        cls.__module__, cls.__qualname__, cls.__name__ = old_names
        for m, value in saved.items():
            if value is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = value


def write_official_style_pickle(data, path):
    kintree = np.stack([data.parents, np.arange(24)]).astype(np.uint32)  # root = 2**32 - 1
    content = {
        "v_template": FakeCh(data.v_template),
        "shapedirs": FakeCh(data.shapedirs),
        "posedirs": FakeCh(data.posedirs),
        "weights": FakeCh(data.lbs_weights),
        "weights_prior": FakeCh(data.lbs_weights),
        "J_regressor": OldCsc(data.J_regressor),
        "J_regressor_prior": OldCsc(data.J_regressor),
        "f": data.faces.astype(np.uint32),
        "kintree_table": kintree,
        "J": np.zeros((24, 3)),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "pose_training_info": {"num_subjects": 1},
    }
    with (
        importable_as(FakeCh, "chumpy.ch", "Ch"),
        importable_as(OldCsc, "scipy.sparse.csc", "csc_matrix"),
    ):
        payload = pickle.dumps(content, protocol=2)
    assert b"chumpy.ch\nCh" in payload and b"scipy.sparse.csc\ncsc_matrix" in payload
    path.write_bytes(payload)


def test_official_style_pickle_loads_without_chumpy(tmp_path, toy_model_data):
    data = dataclasses.replace(
        toy_model_data, J_regressor_extra=None, J_regressor_h36m=None, keypoint_regressor_coco=None
    )
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    write_official_style_pickle(data, path)
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    loaded = load_body_model_data(tmp_path)
    assert_same_data(dataclasses.replace(data, vertex_ids={}), loaded)  # ids only for 6890
    assert loaded.parents[0] == -1 and loaded.name == "SMPL_NEUTRAL"
    assert "chumpy" not in sys.modules


def test_side_regressors_next_to_official_file(tmp_path, toy_model_data):
    data = dataclasses.replace(toy_model_data, J_regressor_extra=None, J_regressor_h36m=None)
    (tmp_path / "smpl").mkdir()
    write_official_style_pickle(data, tmp_path / "smpl" / "basicmodel_m_lbs_10_207_0_v1.0.0.pkl")
    np.save(tmp_path / "J_regressor_extra.npy", toy_model_data.J_regressor_extra)  # SPIN's data/
    np.save(tmp_path / "smpl" / "J_regressor_h36m.npy", toy_model_data.J_regressor_h36m)
    loaded = load_body_model_data(tmp_path, gender="male")
    assert loaded.gender == "male"
    np.testing.assert_array_equal(loaded.J_regressor_extra, toy_model_data.J_regressor_extra)
    np.testing.assert_array_equal(loaded.J_regressor_h36m, toy_model_data.J_regressor_h36m)


class Exploit:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("kind", ["os.system", "eval", "exec", "subprocess"])
def test_malicious_pickle_is_refused_without_running(tmp_path, kind):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    exploit = {
        "os.system": Exploit(os.system, command),
        "eval": Exploit(eval, f"open({str(marker)!r}, 'w')"),
        "exec": Exploit(exec, f"open({str(marker)!r}, 'w')"),
        "subprocess": Exploit(subprocess.call, ["touch", str(marker)]),
    }[kind]
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": exploit}, protocol=2))
    with pytest.raises(UnsafeModelFileError, match="refusing to load .*SMPL_NEUTRAL.pkl") as info:
        load_body_model_data(path)
    assert isinstance(info.value, pickle.UnpicklingError) and isinstance(info.value, ValueError)
    assert not marker.exists()
