"""Fit 3D bodies to the people in a photo: 2D keypoints, an optional regressor, SMPLify.

:mod:`spin.demo.keypoints` gets 2D keypoints (MediaPipe offline, for one person or everyone
in the photo; OpenPose / COCO JSON files) and person boxes; :mod:`spin.demo.pipeline` runs
the fit (:func:`run_demo` for one person, :func:`run_demo_people` for everyone MediaPipe
finds) and renders and saves the results. ``spin-demo`` (:mod:`spin.cli.demo`) is the
command.
"""

from spin.demo.keypoints import (
    box_from_keypoints,
    detect_mediapipe,
    detect_people_mediapipe,
    read_keypoints_file,
)
from spin.demo.pipeline import (
    DemoConfig,
    DemoPerson,
    DemoResult,
    render_people,
    render_result,
    run_demo,
    run_demo_people,
)

__all__ = [
    "DemoConfig",
    "DemoPerson",
    "DemoResult",
    "box_from_keypoints",
    "detect_mediapipe",
    "detect_people_mediapipe",
    "read_keypoints_file",
    "render_people",
    "render_result",
    "run_demo",
    "run_demo_people",
]
