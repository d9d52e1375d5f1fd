"""Super-resolution of recovered frames (the video-leakage paper's Section IV-B): methods by name.

Each method is a small module that registers an `Enhancer`; `adversary.enhance.methods` imports
the built-in ones.
"""
