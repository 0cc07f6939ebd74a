"""Fit a 3D body to a person in a photo: 2D keypoints, an optional regressor, SMPLify.

:mod:`spin.demo.keypoints` gets 2D keypoints (MediaPipe offline, OpenPose / COCO JSON files)
and person boxes; :mod:`spin.demo.pipeline` runs the fit (:func:`run_demo`) and renders and
saves its result. ``spin-demo`` (:mod:`spin.cli.demo`) is the command.
"""

from spin.demo.keypoints import box_from_keypoints, detect_mediapipe, read_keypoints_file
from spin.demo.pipeline import DemoConfig, DemoResult, render_result, run_demo

__all__ = [
    "DemoConfig",
    "DemoResult",
    "box_from_keypoints",
    "detect_mediapipe",
    "read_keypoints_file",
    "render_result",
    "run_demo",
]
