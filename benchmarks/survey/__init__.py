"""The gradient-inversion survey's matrix on this testbed: models x footage x attacks x batch, quality and time.

(sizing: written after the probes; see below)
"""
