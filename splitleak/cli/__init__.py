"""The `splitleak` command line: one sub-command per module, registered in main.COMMANDS."""
