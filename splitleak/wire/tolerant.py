"""Deserializers that never raise: garbage bytes become a Malformed marker the servicer answers.

A message that does not parse may still carry a readable stream id and seq (say, a frame
whose tensor bytes are cut short): they are read off the raw wire format, so the answer can
name the frame it refuses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from google.protobuf.message import DecodeError, Message

STREAM_ID_FIELD, SEQ_FIELD = 1, 2  # in FrameMeta
LENGTH_DELIMITED, VARINT = 2, 0


@dataclass(frozen=True)
class Malformed:
    reason: str
    stream_id: str = ""
    seq: int = 0


def tolerant(message_type: type[Message], meta_path: tuple[int, ...] = ()) -> Callable[[bytes], Message | Malformed]:
    """A deserializer for `message_type`; `meta_path`: the field numbers leading to its FrameMeta."""

    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError) as err:
            reason = f"cannot parse {message_type.__name__}: {err or 'malformed bytes'}"
            stream_id, seq = readable_ids(data, meta_path) if meta_path else ("", 0)
            return Malformed(reason, stream_id, seq)

    return parse


def readable_ids(data: bytes, meta_path: tuple[int, ...]) -> tuple[str, int]:
    """The stream id and seq a FrameMeta nested at `meta_path` carries, where readable."""
    for number in meta_path:  # repeated occurrences of a message field merge: join their bytes
        data = b"".join(value for field, wire, value in _fields(data) if field == number and wire == LENGTH_DELIMITED)
    stream_id, seq = "", 0
    for field, wire, value in _fields(data):
        if field == STREAM_ID_FIELD and wire == LENGTH_DELIMITED:
            try:
                stream_id = value.decode("utf-8")
            except UnicodeDecodeError:
                stream_id = ""
        elif field == SEQ_FIELD and wire == VARINT:
            seq = value & (2**64 - 1)
    return stream_id, seq


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of each top-level field, up to the first unreadable byte."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire == VARINT:
            value, pos = _varint(data, pos)
        elif wire == LENGTH_DELIMITED:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                return
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):  # fixed64, fixed32
            value, pos = b"", pos + (8 if wire == 1 else 4)
        else:
            return
        if pos > len(data):
            return
        yield field, wire, value


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A base-128 varint at `pos`; past the end or over 10 bytes reads as the end of the data."""
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            return 0, len(data) + 1
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    return 0, len(data) + 1
