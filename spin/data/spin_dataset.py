"""A dataset over SPIN's preprocessed ``.npz`` format plus an image folder.

The file is read and checked by :func:`spin.data.formats.load_spin_npz`, the one validator
of the format (keys, shapes, kinds, flags, relations between keys), with
:data:`DATASET_RULES`: three rules of the format are relaxed because this dataset handles
what they guard itself:

- ``part`` and ``openpose`` may be absent (SPIN's own files do without them): a missing
  block reads as keypoints of zero confidence, as SPIN does. Absent ``S``/``pose``/
  ``shape`` read as zeros, absent ``has_smpl`` as 1 where ``pose`` is present.
- NaN/inf values and non-positive scales are problems of single samples, dealt with per
  sample (below) instead of refusing the file.
- ``imgname`` paths are checked against the image folder instead (``../`` and absolute
  paths, with ``allow_outside_images``).

The 49 keypoints of a sample are ``concat(openpose, part)`` (SPIN-49 order).

Errors and bad samples:

- At construction, a file that breaks the format (with the rules above), missing image
  files and ``imgname`` entries that lead outside the image folder (``../``, absolute
  paths) raise :class:`DatasetFormatError` naming what is wrong (every format problem;
  missing files: the first few and the count). ``allow_missing=True`` turns missing
  files into load-time skips instead; ``allow_outside_images=True`` accepts paths
  outside the folder.
- A sample whose box is not usable (``center``/``scale`` not finite, ``scale <= 0``,
  a box side outside ``[MIN_BOX_PX, MAX_BOX_PX]``, a centre beyond ``MAX_BOX_PX`` of
  the origin, or no visible keypoint within one box side of the centre) is dropped
  like an unreadable image: replaced by the next usable sample, counted
  (:attr:`SpinDataset.bad_boxes`, :meth:`SpinDataset.summary`) and warned about once.
- A file with no samples raises :class:`DatasetFormatError` at construction.
- Non-finite labels never reach a loss: at construction a 2D keypoint with a NaN or
  infinite value gets zero coordinates and confidence, a sample whose ``S`` has one
  loses its whole 3D label (all confidences 0: its pelvis would be wrong), and a
  sample with a non-finite ``pose``, ``shape`` or ``has_smpl`` loses its SMPL label
  (zeros, ``has_smpl`` 0). The samples stay in the dataset (their images and other
  labels still train); the drops are counted (:attr:`SpinDataset.dropped_labels`,
  :meth:`SpinDataset.summary`) and reported in one warning.
- At load time an unreadable image (missing or corrupt) never raises: the sample is
  replaced by the next readable one (index + 1, + 2, ... wrapping around), the skip
  is counted (:attr:`SpinDataset.skipped`, :meth:`SpinDataset.summary`) and a
  warning is issued once per file. With a ``DataLoader`` using workers the counters
  live in the worker processes; the main process can still count substitutions from
  items whose ``sample_index`` differs from ``requested_index``.

Augmentation is drawn per sample from ``(seed, epoch, index[, draw])``, so an item
is reproducible; call :meth:`SpinDataset.set_epoch` at the start of each epoch.

The network input ``img`` is the RGB crop by default, or an intermediate representation
(a one-hot part map read from a segmentation folder, or keypoint heatmaps; see
:mod:`spin.data.representations`). A missing or unreadable part map is handled like an
unreadable image.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from spin.data.augment import (
    AugmentationConfig,
    AugmentationParams,
    augment_pose_rotvecs,
    crop_camera_intrinsics,
    crop_pixels_to_normalized,
    crop_transform,
    flip_joints_3d,
    flip_keypoints,
    identity_params,
    rotate_joints_3d,
    sample_augmentation,
    transform_points,
    warp_image,
)
from spin.data.formats import FormatRules, SpinNpzError, load_spin_npz
from spin.data.representations import (
    HEATMAP_SIGMA,
    INPUT_REPRESENTATIONS,
    heatmap_keypoints,
    keypoint_heatmaps,
    keypoint_vector,
    part_map_one_hot,
    part_map_path,
    read_part_map,
    warp_part_map,
)
from spin.geometry.cameras import CROP_SIZE
from spin.npz import NpzError, NpzObjectArrayError

__all__ = [
    "DATASET_RULES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetFormatError",
    "SpinDataset",
    "denormalize_image",
    "normalize_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet RGB images in [0, 1], subtracted from every crop."""

IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet RGB images in [0, 1]."""

DATASET_RULES = FormatRules(keypoints_required=False, sample_values=False, relative_imgname=False)
"""The format's rules as this dataset reads files (the module docstring says why each)."""

NO_PIXEL_NOISE = (1.0, 1.0, 1.0)
"""The per-channel pixel noise of an un-augmented crop."""

MIN_BOX_PX = 4.0
"""Smallest person box side (pixels) a sample may have; ``scale`` is the side / 200."""

MAX_BOX_PX = 1.0e5
"""Largest box side, and largest distance of a box centre from the image origin (pixels)."""

BOX_SCALE_UNIT = 200.0
"""SPIN's ``scale`` is the box side in units of 200 pixels."""

MISSING_FILES_SHOWN = 5
"""How many missing or unreadable file names an error or summary lists."""

_UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class DatasetFormatError(ValueError):
    """A dataset file is malformed or refers to images that do not exist."""


def box_problems(
    center: np.ndarray, scale: np.ndarray, keypoints: np.ndarray | None = None
) -> dict[int, str]:
    """Samples whose person box cannot be cropped: sample index -> what is wrong.

    Args:
        center: ``(N, 2)`` box centres in pixels; scale: ``(N,)`` box sides / 200.
        keypoints: ``(N, J, 3)`` 2D keypoints with confidences in the same pixels: a box
            with no visible keypoint within one box side of its centre is not this person's.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        side = np.asarray(scale, dtype=np.float64) * BOX_SCALE_UNIT
        center = np.asarray(center, dtype=np.float64)
        problems = {}
        for i in np.flatnonzero(~np.isfinite(center).all(axis=-1) | ~np.isfinite(side)):
            problems[int(i)] = "non-finite center or scale"
        for i in np.flatnonzero(np.isfinite(side) & ~((side >= MIN_BOX_PX) & (side <= MAX_BOX_PX))):
            problems[int(i)] = f"box side {side[i]:.3g} px outside [{MIN_BOX_PX:g}, {MAX_BOX_PX:g}]"
        far = np.isfinite(center).all(axis=-1) & (np.abs(center).max(axis=-1) > MAX_BOX_PX)
        for i in np.flatnonzero(far):
            problems.setdefault(int(i), f"box centre {center[i].tolist()} beyond {MAX_BOX_PX:g} px")
        if keypoints is not None:
            visible = keypoints[..., 2] > 0
            reach = np.abs(keypoints[..., :2] - center[:, None]).max(axis=-1) <= side[:, None]
            astray = visible.any(axis=1) & ~(visible & reach).any(axis=1)
            for i in np.flatnonzero(astray):
                problems.setdefault(int(i), "no visible keypoint within one box side of the centre")
    return problems


def _load_npz(path: Path, allow_pickle: bool) -> dict[str, np.ndarray]:
    """The file's known keys, read and validated by :func:`load_spin_npz` with
    :data:`DATASET_RULES`."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    try:
        return load_spin_npz(path, rules=DATASET_RULES, allow_pickle=allow_pickle)
    except NpzObjectArrayError:
        raise DatasetFormatError(
            f"{path}: contains object arrays, which numpy only loads by unpickling; "
            "pass allow_pickle=True if you trust the file, or re-save its string "
            "arrays as fixed-width str (np.asarray(x, dtype=str))"
        ) from None
    except (NpzError, SpinNpzError) as error:
        raise DatasetFormatError(str(error)) from None


def denormalize_image(img) -> np.ndarray:
    """Undo the ImageNet normalisation of a network input, for visualisation.

    Args:
        img: ``(3, S, S)`` normalised image, torch or numpy.

    Returns:
        ``(S, S, 3)`` uint8 RGB image.
    """
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected a normalised image of shape (3, S, S), got {img.shape}")
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
    rgb = np.clip((img * std + mean) * 255.0 + 0.5, 0, 255)
    return rgb.astype(np.uint8).transpose(1, 2, 0)


def normalize_image(
    crop: np.ndarray, pixel_noise: tuple[float, float, float] = NO_PIXEL_NOISE
) -> torch.Tensor:
    """``(S, S, 3)`` uint8 crop -> ``(3, S, S)`` float32 network input: per-channel pixel
    noise, clip to [0, 1], ImageNet normalisation."""
    rgb = crop.astype(np.float32) / 255.0 * np.asarray(pixel_noise, dtype=np.float32)
    rgb = np.clip(rgb, 0.0, 1.0)
    rgb = (rgb - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def _f32(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


class SpinDataset(Dataset):
    """SPIN-format samples as cropped, augmented network inputs and targets.

    Args:
        npz_path: the ``.npz`` annotation file (format in the module docstring).
        image_folder: folder that ``imgname`` entries are relative to.
        name: dataset name used by the fits cache and in messages; defaults to the
            file's stem.
        img_size: side of the square network input in pixels.
        augmentation: augmentation ranges; used only when ``is_train``.
        is_train: augment (True) or return un-augmented crops (False).
        seed: base seed of the per-sample augmentation.
        allow_missing: skip missing image files at load time instead of raising at
            construction.
        allow_pickle: let numpy unpickle object arrays in the ``.npz`` (trusted
            files only).
        allow_outside_images: accept ``imgname`` entries that lead outside
            ``image_folder`` (``../``, absolute paths); refused by default.
        input_representation: what ``img`` is: ``"rgb"``, ``"part_segmentation"`` or
            ``"keypoint_heatmaps"`` (:mod:`spin.data.representations`).
        part_maps: segmentation folder, needed for ``"part_segmentation"``
            (:func:`~spin.data.representations.part_map_path` gives the layout).
        heatmap_sigma: heatmap Gaussian std as a fraction of ``img_size``.

    Items are dicts (see :meth:`__getitem__`).
    """

    def __init__(
        self,
        npz_path: str | os.PathLike,
        image_folder: str | os.PathLike,
        name: str | None = None,
        img_size: int = CROP_SIZE,
        augmentation: AugmentationConfig | None = None,
        is_train: bool = True,
        seed: int = 0,
        allow_missing: bool = False,
        allow_pickle: bool = False,
        input_representation: str = "rgb",
        part_maps: str | os.PathLike | None = None,
        heatmap_sigma: float = HEATMAP_SIGMA,
        allow_outside_images: bool = False,
    ) -> None:
        npz_path = Path(npz_path)
        if input_representation not in INPUT_REPRESENTATIONS:
            raise ValueError(
                f"unknown input_representation {input_representation!r}; expected one of "
                f"{list(INPUT_REPRESENTATIONS)}"
            )
        if input_representation == "part_segmentation" and part_maps is None:
            raise ValueError(
                f"dataset {npz_path}: input_representation 'part_segmentation' needs a folder "
                "of part maps; set part_maps (the dataset entry's part_maps in a config)"
            )
        if heatmap_sigma <= 0:
            raise ValueError(f"heatmap_sigma must be > 0, got {heatmap_sigma}")
        self.input_representation = input_representation
        self.part_maps = Path(part_maps) if part_maps is not None else None
        self.heatmap_sigma = float(heatmap_sigma)
        self.name = name if name is not None else npz_path.stem
        self.image_folder = Path(image_folder)
        self.img_size = int(img_size)
        self.augmentation = augmentation if augmentation is not None else AugmentationConfig()
        self.is_train = is_train
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.seed = int(seed)
        self.epoch = 0

        arrays = _load_npz(npz_path, allow_pickle)
        num = len(arrays["imgname"])
        if num == 0:
            raise DatasetFormatError(
                f"{npz_path}: no samples ('imgname' is empty); a dataset needs at least one "
                "sample, so remove this one from the configuration or regenerate it"
            )
        self.imgname = np.asarray(arrays["imgname"])
        self.center = np.asarray(arrays["center"], dtype=np.float64)
        self.scale = np.asarray(arrays["scale"], dtype=np.float64)

        def optional(key: str) -> np.ndarray | None:
            return np.asarray(arrays[key], dtype=np.float64) if key in arrays else None

        openpose = optional("openpose")
        part = optional("part")
        self.keypoints = np.concatenate(
            [
                openpose if openpose is not None else np.zeros((num, 25, 3)),
                part if part is not None else np.zeros((num, 24, 3)),
            ],
            axis=1,
        )
        self.joints_3d = optional("S")
        self.pose = optional("pose")
        self.betas = optional("shape")
        if "has_smpl" in arrays:
            self.has_smpl = np.asarray(arrays["has_smpl"], dtype=np.float64)
        else:
            self.has_smpl = np.full(num, 1.0 if self.pose is not None else 0.0)
        self.gender = np.asarray(arrays["gender"]) if "gender" in arrays else np.full(num, "n")
        self.intrinsics = optional("intrinsics")
        self.transl = optional("transl")
        self.dropped_labels = self._drop_nonfinite_labels(npz_path)

        self._bad_files: dict[str, str] = {}  # imgname -> why it cannot be read
        self._skip_counts: Counter[str] = Counter()
        # index -> what is wrong with the box (after non-finite keypoints were dropped)
        self.bad_boxes = box_problems(self.center, self.scale, self.keypoints)
        self._warn_bad_boxes(npz_path)
        if not allow_outside_images:
            self._check_images_inside_folder(npz_path)
        self._check_image_files(allow_missing)
        if self.input_representation == "part_segmentation":
            self._check_part_map_files(allow_missing)

    # --- construction checks -----------------------------------------------------------

    def _warn_bad_boxes(self, source: Path) -> None:
        if not self.bad_boxes:
            return
        if len(self.bad_boxes) == len(self):
            raise DatasetFormatError(
                f"{source}: no sample has a usable box (center/scale); first: sample "
                f"{min(self.bad_boxes)}, {self.bad_boxes[min(self.bad_boxes)]}"
            )
        first = min(self.bad_boxes)
        warnings.warn(
            f"dataset {self.name!r} ({source}): {len(self.bad_boxes)} sample(s) with an "
            f"unusable box are dropped (first: sample {first}, {self.bad_boxes[first]})",
            stacklevel=3,
        )

    def _check_images_inside_folder(self, source: Path) -> None:
        # Lexically (``..`` and absolute paths), not through symlinks: a folder of links to
        # images stored elsewhere is a common and legitimate layout.
        root = os.path.abspath(self.image_folder)
        outside = [
            name
            for name in dict.fromkeys(self.imgname)
            if os.path.commonpath([root, os.path.normpath(os.path.join(root, name))]) != root
        ]
        if outside:
            raise DatasetFormatError(
                f"{source}: {len(outside)} imgname entr{'y' if len(outside) == 1 else 'ies'} "
                f"lead outside the image folder {self.image_folder} (first: {outside[0]!r}); "
                "fix the file, or pass allow_outside_images=True (a config's dataset entry: "
                "allow_outside_images: true) if that is intended"
            )

    def _check_image_files(self, allow_missing: bool) -> None:
        missing = [
            name for name in dict.fromkeys(self.imgname) if not (self.image_folder / name).is_file()
        ]
        if not missing:
            return
        shown = ", ".join(missing[:MISSING_FILES_SHOWN])
        more = (
            f" and {len(missing) - MISSING_FILES_SHOWN} more"
            if len(missing) > MISSING_FILES_SHOWN
            else ""
        )
        if not allow_missing:
            raise DatasetFormatError(
                f"dataset {self.name!r}: {len(missing)} image file(s) missing under "
                f"{self.image_folder}: {shown}{more}. Check the image folder, or pass "
                "allow_missing=True to skip those samples at load time"
            )
        warnings.warn(
            f"dataset {self.name!r}: {len(missing)} image file(s) missing under "
            f"{self.image_folder} ({shown}{more}); their samples will be skipped",
            stacklevel=3,
        )
        for name in missing:
            self._bad_files[name] = "missing"

    def _drop_nonfinite_labels(self, source: Path) -> dict[str, int]:
        """Zero the labels holding NaN or inf (see the module docstring); returns how many
        samples lost each kind of label (kinds with none are left out)."""
        dropped: dict[str, int] = {}
        first: dict[str, int] = {}

        def record(kind: str, bad_samples: np.ndarray) -> None:
            if bad_samples.any():
                dropped[kind] = int(bad_samples.sum())
                first[kind] = int(np.flatnonzero(bad_samples)[0])

        bad_keypoints = ~np.isfinite(self.keypoints).all(axis=-1)  # (N, 49)
        self.keypoints[bad_keypoints] = 0.0
        record("2D keypoints", bad_keypoints.any(axis=-1))
        if self.joints_3d is not None:
            bad = ~np.isfinite(self.joints_3d).all(axis=(1, 2))
            self.joints_3d[bad] = 0.0
            record("3D joints", bad)
        bad = ~np.isfinite(self.has_smpl)
        for values in (self.pose, self.betas):
            if values is not None:
                bad |= ~np.isfinite(values).all(axis=-1)
        for values in (self.pose, self.betas):
            if values is not None:
                values[bad] = 0.0
        self.has_smpl[bad] = 0.0
        record("SMPL pose/shape", bad)
        if dropped:
            details = ", ".join(
                f"{kind} of {count} sample(s) (first: sample {first[kind]})"
                for kind, count in dropped.items()
            )
            warnings.warn(
                f"dataset {self.name!r} ({source}): NaN or infinite labels dropped: {details}; "
                "those samples train without them",
                stacklevel=3,
            )
        return dropped

    def _check_part_map_files(self, allow_missing: bool) -> None:
        missing = [
            name
            for name in dict.fromkeys(self.imgname)
            if not part_map_path(self.part_maps, name).is_file()
        ]
        if not missing:
            return
        shown = ", ".join(
            str(part_map_path(self.part_maps, n)) for n in missing[:MISSING_FILES_SHOWN]
        )
        more = len(missing) - MISSING_FILES_SHOWN
        more = f" and {more} more" if more > 0 else ""
        if not allow_missing:
            raise DatasetFormatError(
                f"dataset {self.name!r}: {len(missing)} part map(s) missing under "
                f"{self.part_maps}: {shown}{more}. Point part_maps at the segmentation folder "
                "(synthetic data: regenerate with write_part_maps), or pass allow_missing=True "
                "to skip those samples at load time"
            )
        warnings.warn(
            f"dataset {self.name!r}: {len(missing)} part map(s) missing under {self.part_maps} "
            f"({shown}{more}); their samples will be skipped",
            stacklevel=3,
        )
        for name in missing:
            self._bad_files.setdefault(name, "part map missing")

    def keep_3d_labels(self, fraction: float, seed: int = 0) -> int:
        """Hide the 3D labels (``S`` and SMPL parameters) of all but ``fraction`` of the
        samples, so that one dataset serves experiments on how much 3D supervision is needed.

        The kept samples are a prefix of a seeded permutation of the labelled samples, so a
        larger fraction keeps a superset of a smaller one. Returns how many samples keep
        labels; raises ``ValueError`` when the file has labels on fewer samples than asked.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction of 3D labels must be in [0, 1], got {fraction}")
        has_3d = self.has_smpl > 0.5
        if self.joints_3d is not None:
            has_3d |= (self.joints_3d[:, :, 3] > 0).any(axis=1)
        labelled = np.flatnonzero(has_3d)
        wanted = round(fraction * len(self))
        if wanted > len(labelled):
            raise ValueError(
                f"dataset {self.name!r} has 3D labels on {len(labelled)} of {len(self)} samples "
                f"({len(labelled) / max(len(self), 1):.0%}); cannot keep {fraction:.0%}. "
                "Regenerate it with more 3D labels (spin-make-synthetic --fraction-3d 1)"
            )
        order = np.random.default_rng([int(seed), 3]).permutation(labelled)
        hidden = order[wanted:]
        # Zero the hidden values too, like a file that never had them: nothing can leak.
        # The arrays are this dataset's own (see _drop_nonfinite_labels), so in place.
        for values in (self.has_smpl, self.joints_3d, self.pose, self.betas):
            if values is not None:
                values[hidden] = 0.0
        return wanted

    # --- bookkeeping ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.imgname)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations :meth:`__getitem__` draws."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch}")
        self.epoch = int(epoch)

    @property
    def skipped(self) -> int:
        """How many loads so far were replaced because their image was unreadable."""
        return sum(self._skip_counts.values())

    @property
    def skipped_files(self) -> dict[str, int]:
        """Unreadable image -> how many loads it caused to be skipped."""
        return dict(self._skip_counts)

    def summary(self) -> str:
        """One line on this dataset's skipped samples, naming the files, and on the samples
        whose non-finite labels were dropped."""
        dropped = "".join(
            f"; {kind} dropped (NaN/inf) on {count} sample(s)"
            for kind, count in self.dropped_labels.items()
        )
        if self.bad_boxes:
            dropped += f"; {len(self.bad_boxes)} sample(s) with an unusable box dropped"
        if not self._skip_counts:
            return f"dataset {self.name!r}: {len(self)} samples, none skipped{dropped}"
        files = [
            f"{name} ({self._bad_files.get(name, 'unreadable')}, {count}x)"
            for name, count in self._skip_counts.most_common(MISSING_FILES_SHOWN)
        ]
        more = len(self._skip_counts) - len(files)
        tail = f" and {more} more" if more > 0 else ""
        return (
            f"dataset {self.name!r}: {len(self)} samples, {self.skipped} load(s) skipped "
            f"over {len(self._skip_counts)} unreadable file(s): {', '.join(files)}{tail}{dropped}"
        )

    def augmentation_params(self, index: int, draw: int | None = None) -> AugmentationParams:
        """The augmentation of sample ``index`` in the current epoch.

        Args:
            index: sample index.
            draw: optional extra key, so that a sample drawn several times in one
                epoch (e.g. by :class:`~spin.data.mixed_dataset.MixedDataset`) gets
                independent augmentations.
        """
        if not self.is_train or not self.augmentation.enabled:
            return identity_params()
        key = [self.seed, self.epoch, int(index)] + ([] if draw is None else [int(draw)])
        return sample_augmentation(self.augmentation, np.random.default_rng(key))

    # --- loading ---------------------------------------------------------------------------

    def _read_image(self, index: int) -> Image.Image | None:
        """The sample's RGB image, or None (counted, warned once) when it is unreadable."""

        def read(path: Path) -> Image.Image:
            with Image.open(path) as image:
                return image.convert("RGB")

        name = str(self.imgname[index])
        return self._read_or_skip(name, self.image_folder / name, read, "image", ("", "corrupt"))

    def _read_part_map(self, index: int) -> np.ndarray | None:
        """The sample's part map, or None (counted, warned once) when it cannot be used."""
        name = str(self.imgname[index])
        path = part_map_path(self.part_maps, name)
        return self._read_or_skip(
            name, path, read_part_map, "part map", ("part map ", "part map unusable")
        )

    def _read_or_skip(self, name: str, path: Path, read, what: str, labels: tuple[str, str]):
        """``read(path)``, or None when the file of sample ``name`` cannot be used: the
        reason is remembered (``labels``: prefix of "missing", word for a corrupt file), the
        first failure warned about, every skip counted."""
        if name not in self._bad_files:
            try:
                return read(path)
            except FileNotFoundError:
                self._bad_files[name] = f"{labels[0]}missing"
            except _UNREADABLE_IMAGE_ERRORS as error:
                self._bad_files[name] = f"{labels[1]}: {type(error).__name__}: {error}"
            warnings.warn(
                f"dataset {self.name!r}: cannot use {what} {path} ({self._bad_files[name]}); "
                "using another sample instead",
                stacklevel=4,
            )
        self._skip_counts[name] += 1
        return None

    def __getitem__(self, index: int) -> dict:
        return self.get(index)

    def get(
        self, index: int, draw: int | None = None, params: AugmentationParams | None = None
    ) -> dict:
        """Sample ``index`` (or the next readable one), cropped and augmented.

        Args:
            index: sample index in ``[-N, N)``.
            draw: extra augmentation key, see :meth:`augmentation_params`.
            params: use this augmentation instead of drawing one (tests,
                visualisation, test-time augmentation); applies even when not
                ``is_train``.

        Returns:
            A dict with torch tensors (float32 unless noted):

            - ``img`` ``(3, S, S)`` ImageNet-normalised crop, or with another
              ``input_representation`` ``(25, S, S)`` one-hot part map or keypoint
              heatmaps (:mod:`spin.data.representations`);
            - ``keypoints`` ``(49, 3)`` SPIN-49 keypoints in normalised crop
              coordinates + confidence, augmented;
            - ``keypoints_orig`` ``(49, 3)`` the same in original pixels, un-augmented;
            - ``pose`` ``(72,)`` augmented SMPL pose, ``betas`` ``(10,)`` (zeros if absent);
            - ``pose_3d`` ``(24, 4)`` augmented 3D joints + confidence (zeros if absent);
            - ``has_smpl``, ``has_pose_3d`` scalars (0 or 1);
            - ``center`` ``(2,)``, ``scale`` (box scale times the scale augmentation);
            - ``orig_shape`` ``(2,)`` int64 image ``(height, width)``;
            - ``is_flipped`` bool, ``rot_angle`` (degrees), ``scale_factor``,
              ``pixel_noise`` ``(3,)``: the augmentation;
            - ``sample_index`` and ``requested_index`` (int; they differ when the
              requested sample's image was unreadable), ``dataset_name``,
              ``imgname``, ``gender`` (str);
            - if the file has them: ``intrinsics`` ``(3, 3)`` and ``transl`` ``(3,)``
              as stored (original image, un-augmented), and ``crop_intrinsics``
              ``(3, 3)``, the camera that projects ``pose_3d`` onto ``keypoints``
              in crop pixels (:func:`~spin.data.augment.crop_camera_intrinsics`).
        """
        num = len(self)
        if not -num <= index < num:
            raise IndexError(f"index {index} out of range for dataset {self.name!r} of {num}")
        index = int(index) % num
        part_map = None
        for offset in range(num):
            sample = (index + offset) % num
            if sample in self.bad_boxes:
                self._skip_counts[f"{self.imgname[sample]} (sample {sample}: bad box)"] += 1
                continue
            image = self._read_image(sample)
            if image is None:
                continue
            if self.input_representation != "part_segmentation":
                break
            part_map = self._read_part_map(sample)
            if part_map is not None and part_map.shape == (image.height, image.width):
                break
            if part_map is not None:  # a map of another image size cannot be aligned
                name = str(self.imgname[sample])
                self._bad_files[name] = (
                    f"part map of size {part_map.shape[::-1]}, image {image.size}"
                )
                warnings.warn(
                    f"dataset {self.name!r}: part map of {name} is {part_map.shape[1]}x"
                    f"{part_map.shape[0]} but the image is {image.width}x{image.height}; "
                    "using another sample instead",
                    stacklevel=2,
                )
                self._skip_counts[name] += 1
        else:
            raise RuntimeError(f"no readable image left; {self.summary()}")
        if params is None:
            params = self.augmentation_params(sample, draw)
        item = self._make_item(sample, image, params, part_map)
        item["requested_index"] = index
        return item

    def _make_item(
        self,
        index: int,
        image: Image.Image,
        params: AugmentationParams,
        part_map: np.ndarray | None = None,
    ) -> dict:
        size = self.img_size
        scale = self.scale[index] * params.scale_factor
        center = self.center[index]
        rotation, flip = params.rotation_deg, params.flip

        crop_affine = crop_transform(center, scale, size, rotation, flip)
        if self.input_representation == "rgb":
            img = normalize_image(warp_image(image, crop_affine, size), params.pixel_noise)
        elif self.input_representation == "part_segmentation":
            img = part_map_one_hot(warp_part_map(part_map, crop_affine, size, flip))

        keypoints_orig = self.keypoints[index]
        unflipped = crop_transform(center, scale, size, rotation, flip=False)
        keypoints = np.concatenate(
            [transform_points(keypoints_orig[:, :2], unflipped), keypoints_orig[:, 2:]], axis=1
        )
        keypoints = crop_pixels_to_normalized(keypoints, size)
        if flip:
            keypoints = flip_keypoints(keypoints, "spin49")
        if self.input_representation == "keypoint_heatmaps":
            img = keypoint_heatmaps(heatmap_keypoints(keypoints), size, self.heatmap_sigma)
        elif self.input_representation == "keypoints":
            img = keypoint_vector(heatmap_keypoints(keypoints))

        if self.joints_3d is not None:
            pose_3d = rotate_joints_3d(self.joints_3d[index], rotation)
            pose_3d = flip_joints_3d(pose_3d) if flip else pose_3d
            has_pose_3d = float((self.joints_3d[index][:, 3] > 0).any())
        else:
            pose_3d, has_pose_3d = np.zeros((24, 4)), 0.0
        if self.pose is not None:
            pose = augment_pose_rotvecs(self.pose[index], rotation, flip)
        else:
            pose = np.zeros(72)
        betas = self.betas[index] if self.betas is not None else np.zeros(10)

        item = {
            "img": img,
            "keypoints": _f32(keypoints),
            "keypoints_orig": _f32(keypoints_orig),
            "pose": _f32(pose),
            "betas": _f32(betas),
            "pose_3d": _f32(pose_3d),
            "has_smpl": _f32(self.has_smpl[index]),
            "has_pose_3d": _f32(has_pose_3d),
            "center": _f32(center),
            "scale": _f32(scale),
            "orig_shape": torch.tensor([image.height, image.width], dtype=torch.int64),
            "is_flipped": torch.tensor(flip),
            "rot_angle": _f32(rotation),
            "scale_factor": _f32(params.scale_factor),
            "pixel_noise": _f32(params.pixel_noise),
            "sample_index": index,
            "dataset_name": self.name,
            "imgname": str(self.imgname[index]),
            "gender": str(self.gender[index]),
        }
        if self.intrinsics is not None:
            item["intrinsics"] = _f32(self.intrinsics[index])
            item["crop_intrinsics"] = _f32(
                crop_camera_intrinsics(self.intrinsics[index], crop_affine, rotation, flip)
            )
        if self.transl is not None:
            item["transl"] = _f32(self.transl[index])
        return item
