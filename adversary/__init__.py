"""The adversary: attacks on what crossed the wire, and their evaluation against ground truth."""

from adversary.registry import attack_names, get_attack, register

__all__ = ["attack_names", "get_attack", "register"]
