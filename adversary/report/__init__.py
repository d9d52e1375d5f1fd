"""`splitleak report`: one self-contained HTML page over a `splitleak run` results folder.

The folder's files may be hostile (results travel between machines): every string is escaped,
every path must stay inside the folder, every image must decode before it is embedded.
"""
from adversary.report.page import write_report

__all__ = ["write_report"]
