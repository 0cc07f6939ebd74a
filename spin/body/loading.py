"""Read body model files into :class:`BodyModelData` (the only module here doing file I/O).

What ``load_body_model_data(name_or_path, gender)`` accepts:
    - ``"open"`` / ``"open-lite"``: the bundled open model
      (``spin/body/assets/open.npz`` / ``open_lite.npz``, gender-neutral);
    - ``"smpl"``: the official SMPL model in the folder named by the environment
      variable ``SPIN_SMPL_DIR``;
    - a folder: searched (also its ``smpl/`` subfolder) for ``SMPL_{GENDER}.pkl``
      / ``.npz`` and the official download names
      (``basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl``,
      ``basicModel_f_lbs_10_207_0_v1.0.0.pkl``, ...);
    - a ``.pkl`` file (official SMPL format; chumpy objects allowed) or an ``.npz``
      file in the key format below. For a file, ``gender`` is only a label
      (an ``.npz`` ``gender`` key wins).

Official SMPL files do not hold SPIN's extra joints. Put SPIN's data files
``J_regressor_extra.npy`` (9, 6890) and ``J_regressor_h36m.npy`` (17, 6890) next to
the model file or in the folder above it (SPIN's ``data/`` layout); they are used
when the model file itself has no such regressor. Without ``J_regressor_extra`` the
model has no SPIN-49 joints. The vertex joints of a 6890-vertex mesh without stored
ids come from ``smplx.vertex_ids.vertex_ids["smplh"]``.

NPZ key format (the bundled files follow it; :func:`save_body_model_data` writes it):
    SMPL keys
        ``v_template`` (V, 3), ``f`` (F, 3) int, ``shapedirs`` (V, 3, NB),
        ``posedirs`` (V, 3, 207) optional (zeros if missing), ``J_regressor`` (24, V)
        dense, ``weights`` (V, 24), ``kintree_table`` (2, 24) (row 0: parents).
    Optional extra keys
        ``vertex_ids_names`` (K,) str with ``vertex_ids`` (K,) int;
        ``J_regressor_extra`` (9, V); ``J_regressor_h36m`` (17, V);
        ``keypoint_regressor_coco`` (23, V); ``name`` and ``gender`` (0-d str).

Pickles are read with a restricted unpickler: only numpy array pieces, scipy
sparse matrices, chumpy arrays (read into a stand-in that keeps their value) and
``set``/``frozenset`` are allowed; anything else raises :class:`UnsafeModelFileError`
without running it. :func:`safe_load_pickle` exposes the same unpickler for other
data pickles (e.g. 3DPW's sequence files), by default allowing numpy arrays only.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.sparse

from spin.body.model_data import GENDERS, NUM_JOINTS, NUM_POSE_BASIS, BodyModelData
from spin.npz import read_npz

__all__ = [
    "BUNDLED_MODELS",
    "SMPL_DIR_ENV",
    "UnsafeModelFileError",
    "load_body_model",
    "load_body_model_data",
    "model_data_from_arrays",
    "read_model_file",
    "safe_load_pickle",
    "save_body_model_data",
]

SMPL_DIR_ENV = "SPIN_SMPL_DIR"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUNDLED_MODELS = {"open": "open.npz", "open-lite": "open_lite.npz"}
SMPL_VERTEX_COUNT = 6890
EXTRA_REGRESSOR_FILE = "J_regressor_extra.npy"
H36M_REGRESSOR_FILE = "J_regressor_h36m.npy"

# Official download names per gender, tried after SMPL_{GENDER}.pkl/.npz.
_OFFICIAL_NAMES = {
    "neutral": (
        "basicmodel_neutral_lbs_10_207_0_v1.1.0",
        "basicModel_neutral_lbs_10_207_0_v1.0.0",
    ),
    "female": ("basicmodel_f_lbs_10_207_0_v1.1.0", "basicModel_f_lbs_10_207_0_v1.0.0"),
    "male": ("basicmodel_m_lbs_10_207_0_v1.1.0", "basicmodel_m_lbs_10_207_0_v1.0.0"),
}
_REQUIRED_KEYS = ("v_template", "f", "shapedirs", "J_regressor", "weights", "kintree_table")
_KNOWN_KEYS = (
    *_REQUIRED_KEYS,
    "posedirs",
    "vertex_ids_names",
    "vertex_ids",
    "J_regressor_extra",
    "J_regressor_h36m",
    "keypoint_regressor_coco",
    "name",
    "gender",
)


class UnsafeModelFileError(pickle.UnpicklingError, ValueError):
    """A model pickle asked for a Python object outside the allowed list; nothing was run."""


# --- Restricted unpickling --------------------------------------------------------------


class _ChumpyStandIn:
    """Takes the place of a chumpy object while unpickling; keeps the array in ``x``."""

    chumpy_class = "chumpy.Ch"
    x = None

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple):  # (dict state, slot state)
            state = next((s for s in state if isinstance(s, dict)), {})
        self.x = state.get("x") if isinstance(state, dict) else None

    def __array__(self, dtype=None, copy=None):
        if self.x is None:
            raise ValueError(
                f"a {self.chumpy_class} object in the model file holds no array ('x'); "
                "only plain chumpy arrays can be read without chumpy"
            )
        return np.asarray(self.x, dtype=dtype)


def _numpy_helpers() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    import _codecs

    helpers = {}
    for prefix in ("numpy.core", "numpy._core"):
        helpers[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        helpers[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        helpers[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    helpers[("numpy", "ndarray")] = np.ndarray
    helpers[("numpy", "dtype")] = np.dtype
    # Bytes inside protocol-2 pickles written by Python 3.
    helpers[("_codecs", "encode")] = _codecs.encode
    for module in ("builtins", "__builtin__"):  # chumpy keeps a set in its state
        helpers[(module, "set")] = set
        helpers[(module, "frozenset")] = frozenset
    return helpers


_NDARRAY_REFERENCE = object()
"""What ``numpy.ndarray`` unpickles as: a token :meth:`_ModelUnpickler._checked_reconstruct`
maps back to the class (calling the class itself would allocate any shape asked for)."""

_SPARSE_CLASSES = (
    "csc_matrix",
    "csr_matrix",
    "coo_matrix",
    "csc_array",
    "csr_array",
    "coo_array",
)


_SET_CLASSES = {
    (module, name) for module in ("builtins", "__builtin__") for name in ("set", "frozenset")
}


class _ModelUnpickler(pickle.Unpickler):
    """Restricted unpickler. With ``allow_model_objects`` it also admits what SMPL model
    files hold (scipy sparse matrices, chumpy arrays, sets); without, numpy arrays only."""

    _allowed = _numpy_helpers()

    def __init__(self, file, path: Path, allow_model_objects: bool = True) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path
        self._allow_model_objects = allow_model_objects
        self._chumpy_classes: dict[str, type] = {}
        self._max_elements = max(path.stat().st_size, 1)

    def _checked_reconstruct(self, subtype, shape, dtype):
        """numpy's ``_reconstruct`` (which allocates ``shape``) for a plain array whose size
        the file could hold: numpy's own pickles pass ``(0,)`` and fill the array later from
        bytes in the file, so a large shape only asks for memory (1 KB -> 9 GiB)."""
        if subtype is _NDARRAY_REFERENCE:
            subtype = np.ndarray
        if not (isinstance(subtype, type) and issubclass(subtype, np.ndarray)):
            raise UnsafeModelFileError(f"refusing to load {self._path}: a malformed numpy array")
        count = int(np.prod(np.asarray(shape, dtype=np.float64)))
        if count > self._max_elements:
            raise UnsafeModelFileError(
                f"refusing to load {self._path}: it asks for an array of shape {tuple(shape)}, "
                f"larger than the {self._max_elements}-byte file can hold"
            )
        return self._allowed[("numpy.core.multiarray", "_reconstruct")](subtype, shape, dtype)

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and (module, name) in self._allowed:
            return self._checked_reconstruct
        if (module, name) == ("numpy", "ndarray"):  # only ever _reconstruct's argument
            return _NDARRAY_REFERENCE
        if not self._allow_model_objects:
            if (module, name) in self._allowed and (module, name) not in _SET_CLASSES:
                return self._allowed[(module, name)]
            raise UnsafeModelFileError(
                f"refusing to load {self._path}: it asks for the Python object "
                f"{module}.{name}, which a data pickle of numpy arrays, lists, dicts and "
                "strings has no reason to contain (it could run code). Check where the "
                "file comes from; nothing in it was run."
            )
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        # Old and new private module paths (scipy.sparse.csc, scipy.sparse._csc, ...).
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and (
            name in _SPARSE_CLASSES
        ):
            return getattr(scipy.sparse, name)
        if module == "chumpy" or module.startswith("chumpy."):
            qualified = f"{module}.{name}"
            if qualified not in self._chumpy_classes:
                self._chumpy_classes[qualified] = type(
                    name, (_ChumpyStandIn,), {"chumpy_class": qualified}
                )
            return self._chumpy_classes[qualified]
        raise UnsafeModelFileError(
            f"refusing to load {self._path}: it asks for the Python object {module}.{name}, "
            "which a body model file has no reason to contain (it could run code). "
            "Use the official SMPL .pkl or convert the model to .npz."
        )


def _sparse_to_dense(m) -> np.ndarray:
    state = vars(m)
    for cls in (scipy.sparse.csc_matrix, scipy.sparse.csr_matrix):
        if isinstance(m, cls) and {"data", "indices", "indptr", "_shape"} <= set(state):
            # Rebuild from the stored arrays rather than trusting the unpickled object.
            shape = tuple(int(s) for s in state["_shape"])
            m = cls((state["data"], state["indices"], state["indptr"]), shape=shape)
    return np.asarray(m.toarray())


def _to_array(value) -> np.ndarray:
    if scipy.sparse.issparse(value):
        return _sparse_to_dense(value)
    return np.asarray(value)


def safe_load_pickle(path: str | os.PathLike, allow_chumpy: bool = False):
    """Unpickle a file without running anything it asks for.

    Python-2 pickles are read with ``encoding="latin1"`` (their byte strings become
    ``str``, as numpy expects). Only numpy array and scalar reconstruction is
    allowed; ``allow_chumpy`` also admits the objects of SMPL model files (chumpy
    arrays as stand-ins, scipy sparse matrices, sets). Lists, dicts, tuples,
    strings and numbers need no permission.

    Raises:
        UnsafeModelFileError: the pickle asks for any other Python object.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return _ModelUnpickler(f, path, allow_model_objects=allow_chumpy).load()
        except UnsafeModelFileError:
            raise
        except (TypeError, ValueError, AttributeError, IndexError, KeyError, EOFError) as error:
            raise UnsafeModelFileError(
                f"refusing to load {path}: not a well-formed data pickle "
                f"({type(error).__name__}: {error})"
            ) from None


def _read_pickle(path: Path) -> dict[str, np.ndarray]:
    content = safe_load_pickle(path, allow_chumpy=True)
    if not isinstance(content, dict):
        raise ValueError(
            f"{path} holds a {type(content).__name__}, not the dict of arrays an SMPL "
            "model file holds"
        )
    # Official files also hold training leftovers (J_regressor_prior, bs_style, ...).
    return {key: _to_array(content[key]) for key in _KNOWN_KEYS if key in content}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    # Only the keys a model uses, headers checked first (see spin.npz).
    return read_npz(path, _KNOWN_KEYS)


def read_model_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Raw arrays of a ``.pkl`` (restricted unpickling) or ``.npz`` model file."""
    path = Path(path)
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix == ".pkl":
        return _read_pickle(path)
    raise ValueError(f"{path}: unknown body model file type; expected a .pkl or .npz file")


# --- Building BodyModelData -------------------------------------------------------------


def _side_regressor(model_path: Path, filename: str) -> np.ndarray | None:
    for folder in (model_path.parent, model_path.parent.parent):
        candidate = folder / filename
        if candidate.is_file():
            return np.load(candidate, allow_pickle=False)
    return None


def _str_value(arrays: Mapping[str, np.ndarray], key: str) -> str | None:
    return str(arrays[key].item()) if key in arrays else None


def model_data_from_arrays(
    arrays: Mapping[str, np.ndarray], path: Path, gender: str, name: str | None = None
) -> BodyModelData:
    """Build :class:`BodyModelData` from the key format above (``path`` is for messages)."""
    missing = [key for key in _REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ValueError(
            f"{path} is missing the keys {missing} (it has {sorted(arrays)}); "
            f"an SMPL-format model needs {list(_REQUIRED_KEYS)}"
        )
    v_template = np.asarray(arrays["v_template"])
    num_vertices = v_template.shape[0]
    kintree = np.asarray(arrays["kintree_table"])
    if kintree.ndim != 2 or kintree.shape != (2, NUM_JOINTS):
        raise ValueError(f"{path}: kintree_table must have shape (2, 24), got {kintree.shape}")
    parents = kintree[0].astype(np.int64)
    parents[0] = -1  # stored as 2**32 - 1 in the official files

    if "posedirs" in arrays:
        posedirs = arrays["posedirs"]
    else:
        posedirs = np.zeros((num_vertices, 3, NUM_POSE_BASIS), dtype=v_template.dtype)

    if "vertex_ids" in arrays or "vertex_ids_names" in arrays:
        names = [str(n) for n in arrays.get("vertex_ids_names", [])]
        ids = [int(i) for i in arrays.get("vertex_ids", [])]
        if len(names) != len(ids):
            raise ValueError(
                f"{path}: vertex_ids_names has {len(names)} entries but vertex_ids has "
                f"{len(ids)}; store both, one id per name"
            )
        vertex_ids = dict(zip(names, ids, strict=True))
    elif num_vertices == SMPL_VERTEX_COUNT:
        from smplx.vertex_ids import vertex_ids as smplx_vertex_ids

        vertex_ids = dict(smplx_vertex_ids["smplh"])
    else:
        vertex_ids = {}

    regressors = {}
    for key, side_file in (
        ("J_regressor_extra", EXTRA_REGRESSOR_FILE),
        ("J_regressor_h36m", H36M_REGRESSOR_FILE),
    ):
        if key in arrays:
            regressors[key] = arrays[key]
        else:
            regressors[key] = _side_regressor(path, side_file)
    return BodyModelData(
        name=name or _str_value(arrays, "name") or path.stem,
        v_template=v_template,
        faces=arrays["f"],
        shapedirs=arrays["shapedirs"],
        posedirs=posedirs,
        J_regressor=_to_array(arrays["J_regressor"]),
        lbs_weights=arrays["weights"],
        parents=parents,
        vertex_ids=vertex_ids,
        keypoint_regressor_coco=arrays.get("keypoint_regressor_coco"),
        gender=_str_value(arrays, "gender") or gender,
        **regressors,
    )


def _candidate_files(folder: Path, gender: str) -> list[Path]:
    stems = [f"SMPL_{gender.upper()}", *_OFFICIAL_NAMES[gender]]
    return [
        base / f"{stem}{suffix}"
        for base in (folder, folder / "smpl")
        for stem in stems
        for suffix in (".pkl", ".npz")
    ]


def _where_to_put_models() -> str:
    return (
        f"Pass a .pkl/.npz file or a folder holding SMPL_NEUTRAL.pkl (or the official "
        f"basicmodel_*.pkl files), set the environment variable {SMPL_DIR_ENV} to that "
        f"folder and load 'smpl', or use a bundled model: {sorted(BUNDLED_MODELS)}."
    )


def _resolve(name_or_path: str | os.PathLike, gender: str) -> tuple[Path, str | None]:
    """The model file to read and, for bundled models, the name to give it."""
    if isinstance(name_or_path, str) and name_or_path in BUNDLED_MODELS:
        if gender != "neutral":
            raise ValueError(
                f"the bundled {name_or_path!r} model is gender-neutral; pass gender='neutral'"
            )
        path = ASSETS_DIR / BUNDLED_MODELS[name_or_path]
        if not path.is_file():
            raise FileNotFoundError(
                f"the bundled body model file {path} is missing; reinstall spin-hmr or "
                f"rebuild it with tools/build_open_body_model.py. {_where_to_put_models()}"
            )
        return path, name_or_path
    if isinstance(name_or_path, str) and name_or_path == "smpl":
        folder = os.environ.get(SMPL_DIR_ENV)
        if not folder:
            raise FileNotFoundError(
                f"'smpl' loads the official SMPL model from the folder named by "
                f"{SMPL_DIR_ENV}, which is not set. {_where_to_put_models()}"
            )
        return _find_in_folder(Path(folder).expanduser(), gender), "smpl"
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _find_in_folder(path, gender), None
    if path.is_file():
        return path, None
    raise FileNotFoundError(
        f"no body model at {path} (resolved to {path.absolute()}). {_where_to_put_models()}"
    )


def _find_in_folder(folder: Path, gender: str) -> Path:
    candidates = _candidate_files(folder, gender)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c.relative_to(folder)) for c in candidates)
    raise FileNotFoundError(
        f"no {gender} SMPL model in {folder}; looked for {looked}. {_where_to_put_models()}"
    )


def load_body_model_data(name_or_path: str | os.PathLike, gender: str = "neutral") -> BodyModelData:
    """Read a body model: a bundled name, ``"smpl"``, a folder or a .pkl/.npz file.

    See the module docstring for what is searched and the file format.
    ``gender`` is "neutral", "male" or "female"; it picks the file in a folder.
    """
    gender = gender.lower()
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    path, name = _resolve(name_or_path, gender)
    return model_data_from_arrays(read_model_file(path), path, gender, name=name)


def load_body_model(name_or_path: str | os.PathLike = "open", gender: str = "neutral"):
    """Read a body model and build the layer: ``BodyModel(load_body_model_data(...))``.

    Returns a float32 :class:`~spin.body.layer.BodyModel` on the CPU; move it with
    ``.to(device, dtype)``.
    """
    from spin.body.layer import BodyModel

    return BodyModel(load_body_model_data(name_or_path, gender))


def save_body_model_data(data: BodyModelData, path: str | os.PathLike) -> None:
    """Write ``data`` as a compressed .npz in the key format above (all-zero posedirs are
    left out; the loader restores them)."""
    arrays: dict[str, np.ndarray] = {
        "name": np.asarray(data.name),
        "gender": np.asarray(data.gender),
        "v_template": data.v_template,
        "f": data.faces,
        "shapedirs": data.shapedirs,
        "J_regressor": data.J_regressor,
        "weights": data.lbs_weights,
        "kintree_table": np.stack([data.parents, np.arange(NUM_JOINTS)]),
        "vertex_ids_names": np.asarray(list(data.vertex_ids), dtype=str),
        "vertex_ids": np.asarray(list(data.vertex_ids.values()), dtype=np.int64),
    }
    if np.any(data.posedirs):
        arrays["posedirs"] = data.posedirs
    for key in ("J_regressor_extra", "J_regressor_h36m", "keypoint_regressor_coco"):
        if getattr(data, key) is not None:
            arrays[key] = getattr(data, key)
    np.savez_compressed(Path(path), **arrays)
