"""The `splitleak` command line: the entry point (main), shared argument helpers (common) and the
core's own `models` command; each actor (and the demo) adds its sub-commands from its own `cli` module."""
