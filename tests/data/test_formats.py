"""The SPIN .npz format: validation, atomic writing, reading, and the converter helpers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spin.data.formats import (
    OPTIONAL_KEYS,
    REQUIRED_KEYS,
    Conversion,
    SpinNpzError,
    box_from_points,
    concatenate_samples,
    load_spin_npz,
    save_spin_npz,
    validate_spin_npz,
)


def make_arrays(n: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """A valid sample set holding every documented key."""
    rng = np.random.default_rng(seed)
    part = np.concatenate([rng.uniform(0, 500, (n, 24, 2)), np.ones((n, 24, 1))], axis=-1)
    intrinsics = np.tile(np.array([[1000.0, 0, 320], [0, 1000.0, 240], [0, 0, 1]]), (n, 1, 1))
    return {
        "imgname": np.asarray([f"images/{i:06d}.jpg" for i in range(n)]),
        "center": rng.uniform(100, 400, (n, 2)),
        "scale": rng.uniform(0.5, 2.0, n),
        "part": part,
        "openpose": np.zeros((n, 25, 3)),
        "S": np.concatenate([rng.normal(size=(n, 24, 3)), np.ones((n, 24, 1))], axis=-1),
        "pose": rng.normal(scale=0.2, size=(n, 72)),
        "shape": rng.normal(size=(n, 10)),
        "has_smpl": np.ones(n),
        "gender": np.asarray(["m", "f", "n"] * n)[:n],
        "intrinsics": intrinsics,
        "transl": rng.normal(size=(n, 3)),
        "image_size": np.tile(np.array([640, 480]), (n, 1)),
        "S_h36m": np.concatenate([rng.normal(size=(n, 17, 3)), np.ones((n, 17, 1))], axis=-1),
        "subject": np.full(n, "S9"),
        "action": np.full(n, "Walking 1"),
        "camera": np.full(n, "60457274"),
        "sequence": np.full(n, "seq"),
        "frame": np.arange(n),
        "actor": np.zeros(n, dtype=np.int64),
    }


def test_every_documented_key_is_exercised_and_valid():
    arrays = make_arrays()
    assert set(arrays) == set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
    assert validate_spin_npz(arrays) == []
    required_only = {key: arrays[key] for key in REQUIRED_KEYS}
    assert validate_spin_npz(required_only) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("part"), "missing required key 'part'"),
        (lambda a: a.update(center=a["center"][:2]), r"center: expected shape \(N, 2\)"),
        (lambda a: a.update(S=a["S"][..., :3]), r"S: expected shape \(N, 24, 4\)"),
        (lambda a: a.update(imgname=a["imgname"].astype(object)), "imgname: object array"),
        (lambda a: a.update(scale=-a["scale"]), "scale: box scales must be positive"),
        (lambda a: a["part"].__setitem__((0, 0, 2), 0.5), "expected 0/1 values"),
        (lambda a: a["center"].__setitem__((1, 0), np.nan), "center: has NaN"),
        (lambda a: a.update(gender=np.asarray(["male"] * 3)), "gender: expected values"),
        (lambda a: a.pop("shape"), "pose is present without shape"),
        (lambda a: [a.pop("pose"), a.pop("shape"), a.pop("transl")], "has_smpl is 1"),
        (lambda a: a["imgname"].__setitem__(0, "/abs/x.jpg"), "relative to the image root"),
        (lambda a: a["intrinsics"].__setitem__((0, 2, 0), 1.0), "last row"),
        (lambda a: a.update(frame=a["frame"].astype(float)), "frame: expected int values"),
    ],
)
def test_validation_names_each_problem(change, message):
    arrays = make_arrays()
    change(arrays)
    problems = validate_spin_npz(arrays)
    assert any(re.search(message, p) for p in problems), problems


def test_save_and_load_round_trip(tmp_path):
    arrays = make_arrays()
    path = save_spin_npz(tmp_path / "sub" / "data.npz", **arrays)
    loaded = load_spin_npz(path)
    assert set(loaded) == set(arrays)
    for key in arrays:
        np.testing.assert_array_equal(loaded[key], arrays[key])
    with np.load(path, allow_pickle=False) as npz:  # no pickled objects inside
        assert npz["imgname"].dtype.kind == "U"
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary left


def test_invalid_arrays_leave_no_file_and_keep_the_old_one(tmp_path):
    path = tmp_path / "data.npz"
    bad = make_arrays()
    bad["S"] = bad["S"][..., :3]
    with pytest.raises(SpinNpzError, match="S: expected shape"):
        save_spin_npz(path, **bad)
    assert list(tmp_path.iterdir()) == []
    save_spin_npz(path, **make_arrays(seed=1))
    before = path.read_bytes()
    with pytest.raises(SpinNpzError):
        save_spin_npz(path, **bad)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_failed_write_removes_the_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"

    def broken_savez(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_spin_npz(path, **make_arrays())
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_an_invalid_file(tmp_path):
    path = tmp_path / "bad.npz"
    arrays = make_arrays()
    arrays.pop("center")
    np.savez(path, **arrays)
    with pytest.raises(SpinNpzError, match="missing required key 'center'"):
        load_spin_npz(path)
    assert "center" not in load_spin_npz(path, validate=False)


def test_box_from_points_is_the_enlarged_bounding_box():
    points = np.array([[[10.0, 20.0], [50.0, 100.0], [1000.0, 1000.0]]])
    mask = np.array([[True, True, False]])
    center, scale = box_from_points(points, mask)
    np.testing.assert_allclose(center, [[30.0, 60.0]])
    np.testing.assert_allclose(scale, [1.2 * 80.0 / 200.0])
    with pytest.raises(ValueError, match="at least one point"):
        box_from_points(points, np.zeros((1, 3), dtype=bool))


def test_concatenate_samples_and_conversion_summary():
    merged = concatenate_samples([make_arrays(2), make_arrays(3, seed=1)])
    assert merged["part"].shape == (5, 24, 3) and validate_spin_npz(merged) == []
    conversion = Conversion(merged)
    conversion.skip("no image", 2)
    conversion.skip("no image")
    conversion.skip("never", 0)
    assert conversion.num_samples == 5
    assert conversion.summary().splitlines() == ["5 samples", "skipped 3: no image"]


def test_rules_relax_only_what_they_name():
    """FormatRules: a reader that handles missing keypoints, bad sample values or image paths
    itself lets those pass; everything else is still the format's."""
    from spin.data.formats import FormatRules

    arrays = make_arrays()
    arrays.pop("openpose")
    arrays["center"][0, 0] = np.nan
    arrays["scale"][1] = 0.0
    arrays["imgname"][2] = "/abs/x.jpg"
    strict = validate_spin_npz(arrays)
    assert len(strict) == 4, strict
    lenient = FormatRules(keypoints_required=False, sample_values=False, relative_imgname=False)
    assert validate_spin_npz(arrays, lenient) == []
    for name in ("keypoints_required", "sample_values", "relative_imgname"):
        one = FormatRules(**{name: False})
        assert len(validate_spin_npz(arrays, one)) < len(strict), name
    arrays["S"] = arrays["S"][..., :3]
    arrays["gender"] = np.asarray(["male"] * 3)
    problems = validate_spin_npz(arrays, lenient)
    assert any("S: expected shape" in p for p in problems)
    assert any("gender: expected values" in p for p in problems)


def test_flags_are_checked_on_finite_values_only():
    arrays = make_arrays()
    arrays["part"][0, 0, 2] = np.nan
    problems = validate_spin_npz(arrays)
    assert problems == ["part: has NaN or infinite values"]


def test_load_with_allow_pickle_types_object_arrays(tmp_path):
    arrays = make_arrays()
    arrays["imgname"] = arrays["imgname"].astype(object)
    arrays["scale"] = arrays["scale"].astype(object)
    path = tmp_path / "objects.npz"
    np.savez(path, **arrays)
    from spin.npz import NpzObjectArrayError

    with pytest.raises(NpzObjectArrayError):
        load_spin_npz(path)
    loaded = load_spin_npz(path, allow_pickle=True)
    assert loaded["imgname"].dtype.kind == "U" and loaded["scale"].dtype == np.float64
