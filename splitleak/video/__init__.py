"""Video in and frames out: sources (`open_source`), preprocessing, PNG frame files."""

from splitleak.video.base import Frame, FrameSource
from splitleak.video.images import (
    TruthWriter,
    frame_name,
    index_frames,
    load_png,
    parse_frame_name,
    sanitise_stream,
    save_png,
)
from splitleak.video.preprocess import to_model_input, to_uint8_hwc
from splitleak.video.sources import SAMPLES, open_source, sample_path

__all__ = [
    "SAMPLES",
    "Frame",
    "FrameSource",
    "TruthWriter",
    "frame_name",
    "index_frames",
    "load_png",
    "open_source",
    "parse_frame_name",
    "sample_path",
    "sanitise_stream",
    "save_png",
    "to_model_input",
    "to_uint8_hwc",
]
