"""Reading a user's YAML file (experiments, attack configs): safe_load only, one-line errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from splitleak.errors import SplitleakError


def read_yaml(path: str, what: str) -> Any:
    """The file's YAML tree (None for an empty file); SplitleakError naming `what` ("config file") when
    it cannot be read or parsed."""
    import yaml  # light start-up for commands that never read one

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise SplitleakError(f"cannot read {what} {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SplitleakError(f"{what} {path} is not valid YAML: {str(err).splitlines()[0]}") from None
