"""Gradient inversion: reconstruct the inputs (frames or features) behind a tapped gradient."""

import importlib
import importlib.util

from adversary.gradient.base import (
    GradientCase,
    GradientInversionAttack,
    GradientResult,
    cosine_distance,
    dummy_gradients,
    gradient_distance_l2,
    infer_labels_idlg,
    total_variation,
)
from adversary.gradient import dlg, features, idlg, ig  # noqa: F401  (register dlg, fvi, idlg, ig)

for _module in ("rgap", "batched"):  # built alongside; registered once they exist
    if importlib.util.find_spec(f"adversary.gradient.{_module}") is not None:
        importlib.import_module(f"adversary.gradient.{_module}")

__all__ = ["GradientCase", "GradientInversionAttack", "GradientResult", "cosine_distance", "dummy_gradients",
           "gradient_distance_l2", "infer_labels_idlg", "total_variation"]
