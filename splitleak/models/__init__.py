"""The model zoo: named networks cut at named split points into an edge head and a cloud tail."""

from splitleak.models.lenet import LeNet
from splitleak.models.specs import ModelSpec, get_spec
from splitleak.models.weights import file_tag
from splitleak.models.zoo import (
    NONE,
    SplitModel,
    build_split_model,
    describe,
    feature_shape,
    model_names,
    split_points,
)

__all__ = [
    "NONE",
    "LeNet",
    "ModelSpec",
    "SplitModel",
    "build_split_model",
    "describe",
    "feature_shape",
    "file_tag",
    "get_spec",
    "model_names",
    "split_points",
]
