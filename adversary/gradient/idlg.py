"""iDLG: improved Deep Leakage from Gradients (Zhao et al., 2020).

The label comes analytically from the last layer's gradient (`infer_labels_idlg`: the negative
entry of the bias gradient, or the argmin row sum of the weight gradient where there is no
bias); then only the inputs are optimised, with DLG's L-BFGS protocol. Label accuracy against
the labels on the wire is reported in `extra` when the update carried them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from adversary.gradient.base import GradientCase, infer_labels_idlg
from adversary.gradient.dlg import LbfgsGradientAttack
from adversary.registry import register


@register
class IDLG(LbfgsGradientAttack):
    """Labels from the last layer's gradient, then L-BFGS on the inputs only."""

    name: ClassVar[str] = "idlg"
    joint_labels: ClassVar[bool] = False

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labels": "inferred from the last layer's gradient (iDLG; LLG-style greedy "
                                                "for batch > 1), never read from the wire"}

    def fixed_labels(self, case: GradientCase) -> torch.Tensor:
        return infer_labels_idlg(case)
