"""Import the built-in methods so they register; callers look methods up through the registry."""

from adversary.enhance import bicubic, noref, reference, video  # noqa: F401
from adversary.enhance.registry import get_method, get_trainer, method_names, trainer_names  # noqa: F401
