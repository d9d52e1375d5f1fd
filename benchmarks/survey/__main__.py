"""`python -m benchmarks.survey`: see benchmarks/survey/__init__.py."""
from benchmarks.survey.cli import main

main()
