"""Convert the official 3DPW dataset to SPIN's ``.npz`` format (see :mod:`spin.data.formats`).

Input: the 3DPW root as downloaded (v1.x)::

    <root>/sequenceFiles/{train,validation,test}/<sequence>.pkl
    <root>/imageFiles/<sequence>/image_<frame:05d>.jpg

Each sequence pickle is a Python-2 pickle of a dict; it is read with a restricted
unpickler (numpy arrays only; anything else is refused without running it). Keys
used, per actor ``a`` of the sequence (``F`` frames):

=====================  ===========================================================
``sequence``           sequence name (the image folder)
``genders``            ``'m'``/``'f'`` per actor
``poses[a]``           ``(F, 72)`` SMPL pose, global orientation in the world frame
``betas[a]``           ``(10,)`` (or more) SMPL betas; the first 10 are used
``trans[a]``           ``(F, 3)`` SMPL translation in the world frame, metres
``cam_poses``          ``(F, 4, 4)`` world-to-camera extrinsics ``[R | t]``
``cam_intrinsics``     ``(3, 3)`` camera matrix
``poses2d[a]``         ``(F, 3, 18)`` OpenPose COCO-18 detections (rows x, y, conf)
``campose_valid[a]``   ``(F,)`` whether the camera pose is valid for that actor
``jointPositions[a]``  ``(F, 72)`` the 24 SMPL joints in the world frame (a check)
``img_frame_ids``      ``(F,)`` image number of each frame
=====================  ===========================================================

Output, one sample per actor and frame with a valid camera pose (keys of
:mod:`spin.data.formats`): ``imgname`` (``imageFiles/<seq>/image_XXXXX.jpg``,
relative to the 3DPW root), ``pose`` with the global orientation turned into the
camera frame (``R_cam @ R_global``; body pose unchanged), ``shape`` (first 10
betas), ``transl``, ``has_smpl`` (1), ``gender``, ``S`` (SPIN's 24 GT joints of the
gendered SMPL mesh in the camera frame, metres), ``S_h36m`` (when the model has an
H36M regressor), ``part`` (``S`` projected with the intrinsics, visible when in
front of the camera and inside the image), ``openpose`` (the COCO-18 detections
in their BODY_25 slots; MidHip and feet stay zero), ``center``/``scale`` (the
bounding box of the projected mesh, side ``1.2 x`` its longer side),
``intrinsics``, ``image_size``, ``sequence``, ``frame`` and ``actor``.

Camera-frame translation. SMPL rotates the body about the rest pelvis joint
``J0`` of its shape: world vertices are ``R_g (X - J0) + J0 + trans``. Applying
the extrinsics ``(R, t)`` gives ``(R R_g)(X - J0) + J0 + transl`` with
``transl = R (J0 + trans) + t - J0``, so posing with the camera-frame global
orientation and that ``transl`` reproduces the camera-frame mesh exactly.

The 3D ground truth needs the official gendered SMPL models (3DPW was fitted with
them); the bundled open model can stand in for smoke tests only, and then the 3D
ground truth is not the official one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spin.body.joint_conventions import convert
from spin.body.layer import BodyModel, BodyOutput
from spin.body.loading import load_body_model, safe_load_pickle
from spin.data.formats import NUM_GT_JOINTS, Conversion, box_from_points, concatenate_samples
from spin.geometry import perspective_projection, rotmat_to_rotvec, rotvec_to_rotmat

__all__ = [
    "COCO18_TO_BODY25",
    "SPLITS",
    "camera_frame_smpl",
    "convert_3dpw",
    "convert_sequence",
    "gt_joints_from_body",
    "list_sequences",
    "load_3dpw_body_models",
    "openpose_from_coco18",
    "read_sequence",
]

SPLITS = ("train", "validation", "test")
SEQUENCE_KEYS = (
    "sequence",
    "genders",
    "poses",
    "betas",
    "trans",
    "cam_poses",
    "cam_intrinsics",
    "poses2d",
    "campose_valid",
    "img_frame_ids",
)
GENDER_NAMES = {"m": "male", "f": "female"}
NUM_BETAS = 10
#: BODY_25 slot of each OpenPose COCO-18 joint (Nose, Neck, RShoulder, RElbow, RWrist,
#: LShoulder, LElbow, LWrist, RHip, RKnee, RAnkle, LHip, LKnee, LAnkle, REye, LEye,
#: REar, LEar). BODY_25's MidHip (8) and the six foot joints (19-24) have no source.
COCO18_TO_BODY25 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
NUM_OPENPOSE_JOINTS = 25
#: Median distance (m) between the model's joints and the sequence's ``jointPositions``
#: above which the body model is reported as not the one 3DPW was made with.
JOINT_POSITIONS_TOLERANCE = 0.02
#: Frames posed per body model call.
CHUNK_SIZE = 256
#: First GT-24 joint in SPIN's 49.
_GT_OFFSET = 25


def image_name(sequence: str, image_id: int) -> str:
    """Path of a frame's image relative to the 3DPW root."""
    return f"imageFiles/{sequence}/image_{image_id:05d}.jpg"


def list_sequences(root: str | os.PathLike, split: str) -> list[Path]:
    """The sequence pickles of a split, sorted by name."""
    if split not in SPLITS:
        raise ValueError(f"unknown 3DPW split {split!r}; choose one of {SPLITS}")
    folder = Path(root) / "sequenceFiles" / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no 3DPW sequence folder {folder}; pass the 3DPW root, the folder holding "
            "sequenceFiles/ and imageFiles/"
        )
    files = sorted(folder.glob("*.pkl"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .pkl sequence files")
    return files


def read_sequence(path: str | os.PathLike) -> dict:
    """Read one 3DPW sequence pickle (restricted unpickling) and check its keys."""
    content = safe_load_pickle(path)
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, not a 3DPW sequence dict")
    missing = [key for key in SEQUENCE_KEYS if key not in content]
    if missing:
        raise ValueError(
            f"{path} is missing the 3DPW keys {missing} (it has {sorted(content)}); "
            "is it a 3DPW v1.x sequence file?"
        )
    return content


def load_3dpw_body_models(
    body_model: str = "smpl", smpl_dir: str | os.PathLike | None = None
) -> dict[str, BodyModel]:
    """Float64 body models keyed by 3DPW gender code (``'m'``, ``'f'``).

    Args:
        body_model: ``"smpl"`` for the official gendered SMPL models (from
            ``smpl_dir`` or the folder in ``$SPIN_SMPL_DIR``), or ``"open"`` for
            the bundled neutral ``open-lite`` model (smoke tests only: the 3D
            ground truth is then not 3DPW's).
        smpl_dir: folder with the official SMPL files.
    """
    if body_model == "open":
        warnings.warn(
            "converting 3DPW with the bundled neutral open-lite body model: the 3D joints "
            "and meshes are NOT 3DPW's ground truth (it was fitted with the gendered SMPL "
            "models); use this for testing only",
            stacklevel=2,
        )
        model = load_body_model("open-lite").to(torch.float64)
        return {"m": model, "f": model}
    if body_model != "smpl":
        raise ValueError(f"body_model must be 'smpl' or 'open', got {body_model!r}")
    source = smpl_dir if smpl_dir is not None else "smpl"
    return {
        code: load_body_model(source, gender=name).to(torch.float64)
        for code, name in GENDER_NAMES.items()
    }


# --- Pure conversions ---------------------------------------------------------------------


def camera_frame_smpl(
    global_orient: torch.Tensor,
    trans: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    rest_pelvis: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move SMPL's global orientation and translation from the world to a camera frame.

    Args:
        global_orient: ``(..., 3)`` world-frame global orientation (axis-angle).
        trans: ``(..., 3)`` world-frame SMPL translation.
        rotation: ``(..., 3, 3)`` world-to-camera rotation ``R``.
        translation: ``(..., 3)`` world-to-camera translation ``t``.
        rest_pelvis: ``(..., 3)`` the shape's rest pelvis joint ``J0`` (pose zero,
            no translation), the point SMPL rotates the body about.

    Returns:
        ``(..., 3)`` camera-frame orientation ``rotvec(R R_g)`` and ``(..., 3)``
        translation ``R (J0 + trans) + t - J0``.
    """
    orient = rotmat_to_rotvec(rotation @ rotvec_to_rotmat(global_orient))
    moved = (rotation @ (rest_pelvis + trans).unsqueeze(-1)).squeeze(-1)
    return orient, moved + translation - rest_pelvis


def gt_joints_from_body(output: BodyOutput) -> torch.Tensor:
    """SPIN's 24 GT joints of a posed body with confidences, ``(B, 24, 4)``.

    From ``joints_spin`` when the model has SPIN's joints; otherwise the joints the
    SMPL joint set gives (as ``joints_spin`` would) and, for the points SMPL lacks,
    the H36M joint set; the rest get confidence 0.
    """
    if output.joints_spin is not None:
        joints = output.joints_spin[:, _GT_OFFSET:]
        return torch.cat([joints, torch.ones_like(joints[..., :1])], dim=-1)
    sources = [("smpl24", output.joints_smpl)]
    if output.joints_h36m is not None:
        sources.insert(0, ("h36m17", output.joints_h36m))  # later sources win
    like = output.joints_smpl
    gt = torch.zeros(like.shape[0], NUM_GT_JOINTS, 4, dtype=like.dtype, device=like.device)
    for name, joints in sources:
        with_conf = torch.cat([joints, torch.ones_like(joints[..., :1])], dim=-1)
        mapped = convert(with_conf, name, "spin49")[:, _GT_OFFSET:]
        gt = torch.where(mapped[..., 3:] > 0, mapped, gt)
    return gt


def openpose_from_coco18(poses2d: np.ndarray) -> np.ndarray:
    """3DPW's OpenPose COCO-18 detections in BODY_25 order.

    Args:
        poses2d: ``(N, 3, 18)`` rows x, y, confidence.

    Returns:
        ``(N, 25, 3)``; MidHip and the foot joints are zero.
    """
    poses2d = np.asarray(poses2d, dtype=np.float64)
    if poses2d.ndim != 3 or poses2d.shape[1:] != (3, 18):
        raise ValueError(f"expected poses2d of shape (N, 3, 18), got {poses2d.shape}")
    out = np.zeros((poses2d.shape[0], NUM_OPENPOSE_JOINTS, 3))
    out[:, list(COCO18_TO_BODY25)] = poses2d.transpose(0, 2, 1)
    return out


def _inside(points_2d: np.ndarray, depth: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    width, height = image_size
    x, y = points_2d[..., 0], points_2d[..., 1]
    return (depth > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)


def _pose_chunks(model: BodyModel, pose, betas, transl, intrinsics) -> dict[str, torch.Tensor]:
    """Pose the body chunk by chunk; keep joints and the projected mesh's box corners."""
    kept: dict[str, list[torch.Tensor]] = {"gt": [], "smpl": [], "h36m": [], "box": []}
    for i in range(0, len(pose), CHUNK_SIZE):
        part = slice(i, i + CHUNK_SIZE)
        output = model(pose_rotvecs=pose[part], betas=betas[part], transl=transl[part])
        kept["gt"].append(gt_joints_from_body(output))
        kept["smpl"].append(output.joints_smpl)
        if output.joints_h36m is not None:
            kept["h36m"].append(output.joints_h36m)
        vertices_2d = perspective_projection(output.vertices, intrinsics)
        low, high = vertices_2d.amin(dim=1), vertices_2d.amax(dim=1)
        kept["box"].append(torch.stack([low, high], dim=1))
    return {key: torch.cat(value) for key, value in kept.items() if value}


def convert_actor(
    seq: Mapping,
    actor: int,
    frames: np.ndarray,
    model: BodyModel,
    image_size: tuple[int, int],
    conversion: Conversion | None = None,
) -> dict[str, np.ndarray]:
    """Samples of one actor of a sequence at the given frame positions.

    Args:
        seq: a sequence dict (:func:`read_sequence`).
        actor: actor index.
        frames: ``(n,)`` frame positions in the sequence.
        model: the actor's body model (its dtype and device are used; float64
            keeps the conversion exact to ~1e-9 m).
        image_size: ``(width, height)`` of the sequence's images.
        conversion: where to note a mismatch with ``jointPositions``.
    """
    like = model.v_template
    n = len(frames)

    def tensor(array) -> torch.Tensor:
        array = np.asarray(array, dtype=np.float64)
        return torch.as_tensor(array, device=like.device).to(like.dtype)

    def numpy(t: torch.Tensor) -> np.ndarray:
        return t.cpu().numpy().astype(np.float64)

    pose_world = tensor(np.asarray(seq["poses"][actor])[frames])
    trans_world = tensor(np.asarray(seq["trans"][actor])[frames])
    betas = tensor(np.asarray(seq["betas"][actor]).reshape(-1)[:NUM_BETAS]).expand(n, -1)
    extrinsics = tensor(np.asarray(seq["cam_poses"])[frames])
    rotation, translation = extrinsics[:, :3, :3], extrinsics[:, :3, 3]
    intrinsics = tensor(seq["cam_intrinsics"]).reshape(1, 3, 3)

    with torch.no_grad():
        zero_pose = torch.zeros(1, 72, dtype=like.dtype, device=like.device)
        rest_pelvis = model(pose_rotvecs=zero_pose, betas=betas[:1]).joints_smpl[:, 0]
        orient, transl = camera_frame_smpl(
            pose_world[:, :3], trans_world, rotation, translation, rest_pelvis
        )
        pose = torch.cat([orient, pose_world[:, 3:]], dim=1)
        posed = _pose_chunks(model, pose, betas, transl, intrinsics)
        joints_2d = perspective_projection(posed["gt"][..., :3], intrinsics)

    if conversion is not None and "jointPositions" in seq:
        given = tensor(np.asarray(seq["jointPositions"][actor])[frames]).reshape(n, 24, 3)
        given_cam = given @ rotation.transpose(1, 2) + translation[:, None]
        error = float((given_cam - posed["smpl"]).norm(dim=-1).median())
        if error > JOINT_POSITIONS_TOLERANCE:
            conversion.notes.append(
                f"{seq['sequence']} actor {actor}: the body model's joints are {error:.3f} m "
                "(median) from the sequence's jointPositions; is it the official gendered "
                "SMPL model?"
            )

    gt = numpy(posed["gt"])
    joints_2d = numpy(joints_2d)
    visible = _inside(joints_2d, gt[..., 2], image_size) & (gt[..., 3] > 0)
    part = np.concatenate([joints_2d, visible[..., None].astype(np.float64)], axis=-1)
    part[~visible] = 0.0
    center, scale = box_from_points(numpy(posed["box"]))
    image_ids = np.asarray(seq["img_frame_ids"]).astype(np.int64).reshape(-1)[frames]
    sequence = str(seq["sequence"])
    samples = {
        "imgname": np.asarray([image_name(sequence, int(i)) for i in image_ids]),
        "center": center,
        "scale": scale,
        "part": part,
        "openpose": openpose_from_coco18(np.asarray(seq["poses2d"][actor])[frames]),
        "S": gt,
        "pose": numpy(pose),
        "shape": numpy(betas),
        "has_smpl": np.ones(n),
        "gender": np.full(n, str(seq["genders"][actor])),
        "intrinsics": numpy(intrinsics.expand(n, 3, 3)),
        "transl": numpy(transl),
        "image_size": np.tile(np.asarray(image_size, dtype=np.int64), (n, 1)),
        "sequence": np.full(n, sequence),
        "frame": image_ids,
        "actor": np.full(n, actor, dtype=np.int64),
    }
    if "h36m" in posed:
        h36m = numpy(posed["h36m"])
        samples["S_h36m"] = np.concatenate([h36m, np.ones_like(h36m[..., :1])], axis=-1)
    return samples


def select_frames(seq: Mapping, actor: int, every: int = 1) -> np.ndarray:
    """Frame positions of an actor with a valid camera pose, every ``every``-th frame."""
    valid = np.asarray(seq["campose_valid"][actor]).astype(bool).reshape(-1)
    positions = np.arange(len(valid))
    return positions[valid & (positions % every == 0)]


def convert_sequence(
    seq: Mapping,
    models: Mapping[str, BodyModel],
    image_size: tuple[int, int],
    every: int = 1,
    max_samples: int | None = None,
    image_exists: Callable[[str], bool] | None = None,
    conversion: Conversion | None = None,
) -> dict[str, np.ndarray] | None:
    """All samples of a sequence (actor by actor), or None when there are none.

    Args:
        seq: a sequence dict (:func:`read_sequence`).
        models: body model per gender code (``'m'``, ``'f'``).
        image_size: ``(width, height)`` of the sequence's images.
        every: keep frames whose position is a multiple of this.
        max_samples: stop after this many samples.
        image_exists: ``imgname -> bool``; frames without an image are skipped
            (counted in ``conversion``).
        conversion: collects skip counts and notes.
    """
    conversion = conversion if conversion is not None else Conversion({})
    blocks = []
    remaining = max_samples
    image_ids = np.asarray(seq["img_frame_ids"]).astype(np.int64)
    for actor, gender in enumerate(seq["genders"]):
        gender = str(gender)
        if gender not in models:
            raise ValueError(
                f"{seq['sequence']}: actor {actor} has gender {gender!r}; expected one of "
                f"{sorted(models)}"
            )
        valid = np.asarray(seq["campose_valid"][actor]).astype(bool).reshape(-1)
        frames = select_frames(seq, actor, every)
        every_mask = np.arange(len(valid)) % every == 0
        conversion.skip("invalid camera pose", int(np.sum(~valid & every_mask)))
        if image_exists is not None:
            has_image = np.asarray(
                [image_exists(image_name(str(seq["sequence"]), int(image_ids[f]))) for f in frames],
                dtype=bool,
            )
            conversion.skip("image file missing", int(np.sum(~has_image)))
            frames = frames[has_image]
        if remaining is not None:
            frames = frames[:remaining]
            remaining -= len(frames)
        if len(frames):
            blocks.append(convert_actor(seq, actor, frames, models[gender], image_size, conversion))
        if remaining == 0:
            break
    return concatenate_samples(blocks) if blocks else None


# --- Files --------------------------------------------------------------------------------


def _image_lookup(root: Path, sequence: str) -> tuple[Callable[[str], bool], tuple | None]:
    """Whether a frame's image exists, and the image size (from the first image)."""
    folder = root / "imageFiles" / sequence
    names = {p.name for p in folder.glob("*.jpg")} if folder.is_dir() else set()
    size = None
    if names:
        with Image.open(folder / min(names)) as image:
            size = image.size
    return (lambda imgname: Path(imgname).name in names), size


def convert_3dpw(
    root: str | os.PathLike,
    split: str = "test",
    models: Mapping[str, BodyModel] | None = None,
    every: int = 1,
    limit: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Conversion:
    """Convert a 3DPW split to SPIN's format (the arrays of :mod:`spin.data.formats`).

    Args:
        root: the 3DPW root (holding ``sequenceFiles/`` and ``imageFiles/``).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        models: body model per gender code; default the official SMPL models
            (:func:`load_3dpw_body_models`).
        every: keep every ``every``-th frame (by frame position).
        limit: stop after this many samples.
        progress: wraps the sequence list (e.g. ``tqdm``).

    Returns:
        A :class:`~spin.data.formats.Conversion`; frames with an invalid camera pose
        or no image are counted in its ``skipped``.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    root = Path(root)
    files = list_sequences(root, split)
    models = models if models is not None else load_3dpw_body_models()
    conversion = Conversion({})
    blocks = []
    remaining = limit
    for path in progress(files) if progress is not None else files:
        seq = read_sequence(path)
        image_exists, image_size = _image_lookup(root, str(seq["sequence"]))
        if image_size is None:
            conversion.notes.append(
                f"{path.name}: no images in {root / 'imageFiles' / str(seq['sequence'])}; "
                "sequence skipped"
            )
            lost = sum(len(select_frames(seq, a, every)) for a in range(len(seq["genders"])))
            conversion.skip("image folder missing or empty", lost)
            continue
        block = convert_sequence(
            seq, models, image_size, every, remaining, image_exists, conversion
        )
        if block is not None:
            blocks.append(block)
            if remaining is not None:
                remaining -= len(block["imgname"])
                if remaining <= 0:
                    break
    conversion.arrays = concatenate_samples(blocks)
    return conversion
