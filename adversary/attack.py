"""What every attack shares: a name, the access it needs, and a typed config it never changes.

`reconstruct` is the one verb; it returns a result and leaves the attack object as it was, so one
attack object serves batch after batch the same way (black-box attacks keep their trained inverters
in a cache keyed by everything that made them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from adversary.configs import as_dict, build, with_options
from splitleak.errors import SplitleakError


class Attack:
    """Base class: subclasses set `name`, `family`, `access` and `Config`, and implement `reconstruct`."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    access: ClassVar[frozenset[str]] = frozenset()
    Config: ClassVar[type]

    def __init__(self, config: Any = None, **options: Any) -> None:
        """`config` (default: the Config's defaults) with keyword `options` applied and checked."""
        base = self.Config() if config is None else config
        if not isinstance(base, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(base).__name__}")
        self.config = with_options(base, options)

    @classmethod
    def from_options(cls, preset: str | None = None, options: Mapping[str, Any] | None = None) -> "Attack":
        """The attack with a named preset (default `best`) and then `options` applied."""
        return cls(build(cls.Config, preset, options))

    def describe(self) -> dict[str, Any]:
        """The attack's hyper-parameters, for config.json."""
        return as_dict(self.config)

    def check_access(self, case: Any) -> None:
        """SplitleakError if the attack needs something the case does not grant."""
        missing = self.access - case.grants
        if missing:
            raise SplitleakError(f"attack {self.name!r} needs {', '.join(sorted(missing))}, "
                                 f"which this threat model does not grant")
