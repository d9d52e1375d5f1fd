"""Deserializers that never raise: garbage bytes become a Malformed marker the servicer answers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from google.protobuf.message import DecodeError, Message


@dataclass(frozen=True)
class Malformed:
    reason: str


def tolerant(message_type: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError) as err:
            return Malformed(f"cannot parse {message_type.__name__}: {err or 'malformed bytes'}")

    return parse
