"""Import the built-in methods so they register; callers look methods up through the registry."""

from adversary.enhance import bicubic  # noqa: F401
from adversary.enhance import reference  # noqa: F401
from adversary.enhance import video  # noqa: F401
from adversary.enhance.registry import get_method, method_names  # noqa: F401
