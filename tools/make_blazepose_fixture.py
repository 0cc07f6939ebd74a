"""Make tests/fixtures/blazepose_reference.npz: BlazePose outputs from TensorFlow Lite itself.

The project's environment has no TFLite interpreter (and must not get one: MediaPipe and
LiteRT pin conflicting packages), so the reference runs in a throw-away virtual
environment, called as a subprocess::

    python3 -m venv /tmp/litert && /tmp/litert/bin/pip install ai-edge-litert numpy
    python tools/make_blazepose_fixture.py --litert-python /tmp/litert/bin/python \\
        [--lite PATH] [--heavy PATH] [--dump DIR]

(``--lite``/``--heavy``: ``pose_landmark_{lite,heavy}.tflite`` from the npm package
``@mediapipe/pose@0.5.1675469404``; ``full`` comes from the installed MediaPipe.)

Two 256x256 inputs: a real photo (scikit-image's public-domain ``astronaut.png``, 512x512,
every second pixel: no resampling, so the test rebuilds it exactly) and a synthetic render
of the open body model (stored in the fixture as a 128 px PNG, enlarged by repeating
pixels). For each model and input the fixture keeps, from TFLite's reference kernels
(``BUILTIN_REF``): the landmarks, world landmarks, pose flag and 2x2 regression features in
full, and fixed samples of the encoder map, heatmaps and segmentation (strides below); plus
the landmarks of the XNNPACK kernels MediaPipe runs, to show how much two TFLite runtimes
differ. ``--dump`` also writes every
full reference tensor there (not committed).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spin.regressor.blazepose import (  # noqa: E402
    BLAZEPOSE_INPUT_SIZE,
    blazepose_tensors,
    find_blazepose_model,
)
from spin.regressor.tflite import read_tflite  # noqa: E402

OUT = REPO / "tests" / "fixtures" / "blazepose_reference.npz"

ENCODER_CHANNEL_STRIDE = 32
HEATMAP_STRIDE = 16
SEGMENTATION_STRIDE = 32
"""The fixture keeps ``encoder[:, :, ::32]``, ``heatmaps[::16, ::16]`` and
``segmentation[::32, ::32]`` (NHWC, batch dropped)."""

SYNTHETIC_SEED = 7
SYNTHETIC_YAW_DEG = 30.0
"""The synthetic person faces the camera within +-30 degrees, whole in the frame."""

SYNTHETIC_STORED_SIZE = BLAZEPOSE_INPUT_SIZE // 2
"""The synthetic crop is rendered and stored at 128 px (a smaller fixture) and enlarged to
256 px by repeating pixels, which the test redoes exactly (:func:`upsample_synthetic`)."""

# Runs in the LiteRT environment: argv = model, inputs .npy (N, 256, 256, 3) float32,
# comma-separated tensor ids, output .npz.
_LITERT_SCRIPT = r"""
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

model, inputs, ids, out = sys.argv[1], np.load(sys.argv[2]), sys.argv[3], sys.argv[4]
ids = [int(i) for i in ids.split(",")]
reference = Interpreter(
    model_path=model, num_threads=1,
    experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
    experimental_preserve_all_tensors=True,
)
xnnpack = Interpreter(model_path=model, num_threads=1)
result = {}
for n, image in enumerate(inputs):
    for name, interpreter in (("ref", reference), ("xnnpack", xnnpack)):
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        for i in ids if name == "ref" else ids[:1]:
            result[f"{name}_{n}_{i}"] = interpreter.get_tensor(i)[0].copy()
np.savez(out, **result)
"""


def astronaut_input() -> np.ndarray:
    """``(256, 256, 3)`` uint8: scikit-image's astronaut.png, every second pixel."""
    import skimage

    path = Path(skimage.__file__).parent / "data" / "astronaut.png"
    return np.asarray(Image.open(path).convert("RGB"))[::2, ::2].copy()


def upsample_synthetic(stored: np.ndarray) -> np.ndarray:
    """``(128, 128, 3)`` to ``(256, 256, 3)``: every pixel repeated 2x2."""
    return stored.repeat(2, axis=0).repeat(2, axis=1)


def synthetic_input() -> np.ndarray:
    """``(128, 128, 3)`` uint8: one synthetic person, cropped to its box."""
    from spin.data.augment import crop_image
    from spin.data.synthetic import SyntheticConfig, generate_synthetic

    config = SyntheticConfig(
        seed=SYNTHETIC_SEED,
        yaw_range_deg=SYNTHETIC_YAW_DEG,
        truncation_prob=0.0,
        image_size=(SYNTHETIC_STORED_SIZE, SYNTHETIC_STORED_SIZE),
    )
    with tempfile.TemporaryDirectory() as folder:
        npz = generate_synthetic(config, 1, folder, progress=False)
        data = np.load(npz)
        image = np.asarray(Image.open(Path(folder) / str(data["imgname"][0])).convert("RGB"))
        center, scale = data["center"][0], float(data["scale"][0])
        return crop_image(image, center, scale, SYNTHETIC_STORED_SIZE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--litert-python", required=True, help="python with ai-edge-litert")
    parser.add_argument("--lite", type=Path, help="pose_landmark_lite.tflite")
    parser.add_argument("--heavy", type=Path, help="pose_landmark_heavy.tflite")
    parser.add_argument("--dump", type=Path, help="also write the full reference tensors here")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    synthetic = synthetic_input()
    images = {"astronaut": astronaut_input(), "synthetic": upsample_synthetic(synthetic)}
    png = io.BytesIO()
    Image.fromarray(synthetic).save(png, format="PNG", optimize=True)
    fixture: dict[str, np.ndarray] = {
        "synthetic_png": np.frombuffer(png.getvalue(), dtype=np.uint8),
        "encoder_channel_stride": np.array(ENCODER_CHANNEL_STRIDE),
        "heatmap_stride": np.array(HEATMAP_STRIDE),
        "segmentation_stride": np.array(SEGMENTATION_STRIDE),
    }
    batch = np.stack([images[name] for name in images]).astype(np.float32) / 255.0
    models = {"full": find_blazepose_model("full"), "lite": args.lite, "heavy": args.heavy}
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "inputs.npy", batch)
        for variant, path in models.items():
            if path is None:
                continue
            tensors = blazepose_tensors(read_tflite(path))
            names = ["landmarks", *(n for n in tensors if n != "landmarks")]
            out = Path(folder) / f"{variant}.npz"
            subprocess.run(
                [
                    args.litert_python,
                    "-c",
                    _LITERT_SCRIPT,
                    str(path),
                    str(Path(folder) / "inputs.npy"),
                    ",".join(str(tensors[n]) for n in names),
                    str(out),
                ],
                check=True,
            )
            result = np.load(out)
            for n, image in enumerate(images):
                ref = {name: result[f"ref_{n}_{tensors[name]}"] for name in names}
                if args.dump is not None:
                    args.dump.mkdir(parents=True, exist_ok=True)
                    np.savez(args.dump / f"{variant}_{image}.npz", input=batch[n], **ref)
                key = f"{variant}_{image}_"
                for name in ("landmarks", "world_landmarks", "pose_flag", "regression_features"):
                    fixture[key + name] = ref[name]
                fixture[key + "landmarks_xnnpack"] = result[f"xnnpack_{n}_{tensors['landmarks']}"]
                fixture[key + "encoder_sample"] = ref["encoder_features"][
                    :, :, ::ENCODER_CHANNEL_STRIDE
                ]
                fixture[key + "heatmaps_sample"] = ref["heatmaps"][
                    ::HEATMAP_STRIDE, ::HEATMAP_STRIDE
                ]
                fixture[key + "segmentation_sample"] = ref["segmentation"][
                    ::SEGMENTATION_STRIDE, ::SEGMENTATION_STRIDE
                ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **fixture)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(fixture)} arrays)")


if __name__ == "__main__":
    main()
