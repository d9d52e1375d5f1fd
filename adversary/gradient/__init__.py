"""Gradient inversion: reconstruct the inputs (frames or features) behind a tapped gradient."""

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
from adversary.gradient import batched, dlg, features, idlg, ig, rgap  # noqa: F401  (register the attacks)

__all__ = ["GradientCase", "GradientInversionAttack", "GradientResult", "cosine_distance", "dummy_gradients",
           "gradient_distance_l2", "infer_labels_idlg", "total_variation"]
