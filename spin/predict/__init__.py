"""Prediction with a trained regressor, whatever its input representation.

- :mod:`spin.predict.checkpoint`: reading a ``spin-train`` checkpoint safely.
- :mod:`spin.predict.inputs`: the network's input for a person in a photo (image crop, or
  keypoint representations from 2D keypoints), made like the dataset makes it.
- :mod:`spin.predict.refine`: SMPLify from a prediction in SPIN's crop camera.
- :mod:`spin.predict.predictor`: :class:`Predictor` and :func:`load_predictor`.

``spin-eval``, ``spin-demo`` and the trainer's validation use it; :mod:`spin.train` may import
this package, never the reverse.

Example::

    from spin.predict import load_predictor

    predictor = load_predictor("runs/spin/checkpoint.pt")
    inputs = predictor.input_for_person(center, side, image=photo, keypoints=kp,
                                        convention="mediapipe33")
    prediction = predictor.predict(inputs)      # pose, betas, crop camera
    refined = predictor.refine(
        prediction, predictor.crop_keypoints(kp, "mediapipe33", center, side)
    )
"""

from spin.predict.checkpoint import CheckpointContents, read_checkpoint
from spin.predict.inputs import (
    InputConfig,
    InputUnavailableError,
    crop_box,
    keypoints_in_crop,
    make_input,
)
from spin.predict.predictor import (
    BodyModelMismatchError,
    CheckpointInfo,
    Predictor,
    PredictorConfig,
    load_predictor,
    predictor_config,
)
from spin.predict.refine import Refinement, crop_pixels, refine_in_crop, refine_with_smplify

__all__ = [
    "BodyModelMismatchError",
    "CheckpointContents",
    "CheckpointInfo",
    "InputConfig",
    "InputUnavailableError",
    "Predictor",
    "PredictorConfig",
    "Refinement",
    "crop_box",
    "crop_pixels",
    "keypoints_in_crop",
    "load_predictor",
    "make_input",
    "predictor_config",
    "read_checkpoint",
    "refine_in_crop",
    "refine_with_smplify",
]
