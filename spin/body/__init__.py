"""Body models: loading, the stateless layer, joint conventions and bundled assets."""

from spin.body.layer import BodyModel, BodyOutput
from spin.body.loading import (
    UnsafeModelFileError,
    load_body_model,
    load_body_model_data,
    save_body_model_data,
)
from spin.body.model_data import BodyModelData

__all__ = [
    "BodyModel",
    "BodyModelData",
    "BodyOutput",
    "UnsafeModelFileError",
    "load_body_model",
    "load_body_model_data",
    "save_body_model_data",
]
