"""splitleak: measure how much of a private video stream leaks out of split inference."""

__version__ = "0.1.0"
