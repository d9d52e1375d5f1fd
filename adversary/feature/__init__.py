"""Feature inversion: reconstruct frames x from tapped split features z = F1(x).
Importing the package registers its attacks."""

from adversary.feature import blackbox, db, dmb, dmb_multi, do  # noqa: F401  (register the attacks)
from adversary.feature.base import FeatureInversionAttack, FeatureResult, WhiteBoxCase
from adversary.feature.db import DecoderBased
from adversary.feature.dmb import DiffusionBased
from adversary.feature.dmb_multi import MultiFrameDiffusionBased
from adversary.feature.do import DirectOptimisation

__all__ = ["DecoderBased", "DiffusionBased", "DirectOptimisation", "FeatureInversionAttack", "FeatureResult",
           "MultiFrameDiffusionBased", "WhiteBoxCase"]
