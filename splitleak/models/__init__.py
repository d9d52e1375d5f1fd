"""The model zoo: named networks cut at named split points into an edge head and a cloud tail."""

from splitleak.models.cnn6 import CNN6
from splitleak.models.lenet import LeNet
from splitleak.models.specs import ModelSpec, get_spec
from splitleak.models.weights import file_tag
from splitleak.models.zoo import (
    CLASSIFIERS,
    NONE,
    SplitModel,
    build_split_model,
    describe,
    feature_shape,
    model_names,
    split_points,
)

__all__ = [
    "CLASSIFIERS",
    "CNN6",
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
