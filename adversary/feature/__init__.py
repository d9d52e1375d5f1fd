"""Feature inversion: reconstruct frames x from tapped split features z = F1(x)."""

from adversary.feature.base import FeatureInversionAttack, WhiteBoxCase
from adversary.feature import do  # noqa: F401  (registers "do")
from adversary.feature.do import DirectOptimisation

__all__ = ["DirectOptimisation", "FeatureInversionAttack", "WhiteBoxCase"]
