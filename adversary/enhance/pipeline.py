"""`splitleak enhance` as a function: frame folder in, enhanced frame folder (+ scores, video) out.

Frames are read as the attacks write them (STREAM_SEQ.png), grouped by stream in sequence order,
enhanced in batches (a temporal method also sees `context` neighbours on each side of a batch),
and written under the same names with a config.json. With `truth`, the enhanced frames are scored
(Table I's three comparisons, adversary.evaluate) into metrics.json; with `video`, a labelled
side-by-side video (original | recovered | enhanced) and a contact sheet PNG are written.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adversary.enhance.base import Enhancer
from adversary.evaluate import IMAGE_SUFFIXES, evaluate_folders
from splitleak.errors import SplitleakError
from splitleak.recording import write_json
from splitleak.video import frame_name, index_frames, load_png, save_png
from splitleak.video.mp4 import Column, write_comparison_video, write_contact_sheet

Key = tuple[str, int]


def stream_frames(in_dir: str | Path) -> dict[str, list[int]]:
    """stream -> its sequence numbers in order, for the STREAM_SEQ.png frames in `in_dir`; SplitleakError if none."""
    if not Path(in_dir).is_dir():
        raise SplitleakError(f"input folder not found: {in_dir}")
    streams: dict[str, list[int]] = defaultdict(list)
    for stream, seq in sorted(index_frames(in_dir)):
        streams[stream].append(seq)
    if not streams:
        raise SplitleakError(f"no frames named STREAM_SEQ.png (e.g. cam0_000001.png) in {in_dir}")
    return dict(streams)


def load_stream(in_dir: str | Path, stream: str, seqs: list[int]) -> torch.Tensor:
    """The frames of one stream as (N, 3, h, w); SplitleakError if their sizes differ."""
    frames = [load_png(Path(in_dir) / frame_name(stream, s)) for s in seqs]
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise SplitleakError(f"the frames of stream {stream!r} in {in_dir} differ in size: "
                             f"{', '.join(f'{w}x{h}' for _, h, w in sorted(sizes))}")
    return torch.from_numpy(np.stack(frames))


def load_refs(specs: list[str] | None) -> torch.Tensor | None:
    """Reference frames from files and folders (every image in a folder, by name) as (R, 3, H, W)."""
    if not specs:
        return None
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise SplitleakError(f"no images in the reference folder {spec}")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise SplitleakError(f"reference not found: {spec}")
    refs = [load_png(p) for p in paths]
    for path, ref in zip(paths, refs):
        if ref.shape != refs[0].shape:
            raise SplitleakError(f"reference {path} is {ref.shape[2]}x{ref.shape[1]} but {paths[0]} is "
                                 f"{refs[0].shape[2]}x{refs[0].shape[1]}; references must share one size")
    return torch.from_numpy(np.stack(refs))


def check_refs(enhancer: Enhancer, refs: torch.Tensor | None, first_frames: list[torch.Tensor]) -> None:
    """Before any work: the method takes this many references, of the size every stream needs."""
    count = 0 if refs is None else refs.shape[0]
    if enhancer.refs == "none" and count:
        raise SplitleakError(f"method {enhancer.name!r} uses no reference frames; drop --refs")
    if enhancer.refs == "one" and count > 1:
        raise SplitleakError(f"method {enhancer.name!r} takes one reference frame, got {count}")
    for frame in first_frames:
        enhancer.check_input(frame, refs)


def enhance_batches(enhancer: Enhancer, low: torch.Tensor, refs: torch.Tensor | None, batch: int,
                    bar: Any = None) -> torch.Tensor:
    """Enhance one stream's frames `batch` at a time; temporal methods get `context` neighbours each side."""
    context = enhancer.context if enhancer.temporal else 0
    outs = []
    for start in range(0, low.shape[0], batch):
        stop = min(start + batch, low.shape[0])
        lo, hi = max(0, start - context), min(low.shape[0], stop + context)
        out = enhancer.enhance(low[lo:hi], refs)[start - lo:stop - lo]
        outs.append(out.cpu())
        if bar is not None:
            bar.update(stop - start)
    return torch.cat(outs)


def enhance_folder(in_dir: str, out_dir: str, enhancer: Enhancer, *, refs: list[str] | None = None,
                   batch: int = 16, truth: str | None = None, size: int = 128, video: str | None = None,
                   fps: float = 30.0, progress: bool = True) -> dict[str, Any]:
    """Enhance every frame of `in_dir` into `out_dir` (same names) and write config.json there; with
    `truth`, metrics.json (Table I); with `video`, the comparison video and its contact sheet.
    Returns {"config": ..., "summary": ...} (summary None without truth)."""
    from tqdm import tqdm

    out = _check_out(in_dir, out_dir, truth)
    streams = stream_frames(in_dir)
    if truth is not None:
        _check_truth(streams, truth)
    ref_frames = load_refs(refs)
    lows = {s: load_stream(in_dir, s, seqs) for s, seqs in streams.items()}
    check_refs(enhancer, ref_frames, [low[:1] for low in lows.values()])
    total, seconds = sum(len(v) for v in streams.values()), 0.0
    enhanced: dict[str, torch.Tensor] = {}
    with tqdm(total=total, desc=f"enhance {enhancer.name}", disable=not progress, leave=False) as bar:
        for stream, low in lows.items():
            start = time.perf_counter()
            enhanced[stream] = enhance_batches(enhancer, low, ref_frames, batch, bar)
            seconds += time.perf_counter() - start
            for seq, frame in zip(streams[stream], enhanced[stream].numpy()):
                save_png(out / frame_name(stream, seq), frame)
    config = _config(in_dir, enhancer, refs, ref_frames, streams, lows, batch, seconds, total)
    write_json(out / "config.json", config)
    result: dict[str, Any] = {"config": config, "summary": None}
    if truth is not None:
        result["summary"] = evaluate_folders(str(out), truth, str(out), size=size, low_dir=in_dir)["summary"]
    if video is not None:
        result["video"] = write_video(video, streams, lows, enhanced, truth, fps, size)
    return result


def write_video(path: str, streams: dict[str, list[int]], lows: dict[str, torch.Tensor],
                enhanced: dict[str, torch.Tensor] | None, truth: str | None, fps: float, cell: int) -> dict[str, Any]:
    """original (if truth) | recovered | enhanced (if any), every stream in turn; plus PATH.png, a contact sheet."""
    keys = [(s, q) for s, seqs in streams.items() for q in seqs]
    columns = []
    if truth is not None:
        truths = index_frames(truth)
        blank = np.zeros((3, cell, cell), np.float32)  # a frame with no truth shows black
        columns.append(Column("original", [load_png(truths[k]) if k in truths else blank for k in keys]))
    low_size = next(iter(lows.values())).shape[-1]
    columns.append(Column(f"recovered {low_size}px", [f for s in streams for f in lows[s].numpy()]))
    if enhanced is not None:
        columns.append(Column("enhanced", [f for s in streams for f in enhanced[s].numpy()]))
    codec = write_comparison_video(path, columns, fps=fps, cell=cell)
    sheet = write_contact_sheet(Path(path).with_suffix(".png"), columns, cell=cell)
    return {"path": str(path), "codec": codec, "frames": len(keys), "fps": fps, "contact_sheet": str(sheet)}


def _check_out(in_dir: str, out_dir: str, truth: str | None) -> Path:
    out = Path(out_dir)
    for other, what in ((in_dir, "input"), (truth, "truth")):
        if other is not None and Path(other).resolve() == out.resolve():
            raise SplitleakError(f"output folder {out_dir} is the {what} folder; choose another")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_truth(streams: dict[str, list[int]], truth: str) -> None:
    if not Path(truth).is_dir():
        raise SplitleakError(f"truth folder not found: {truth}")
    keys = {(s, q) for s, seqs in streams.items() for q in seqs}
    if not keys & index_frames(truth).keys():
        raise SplitleakError(f"no truth frame in {truth} matches the frames to enhance "
                             f"(streams {', '.join(sorted(streams))}; names STREAM_SEQ.png)")


def _config(in_dir: str, enhancer: Enhancer, refs: list[str] | None, ref_frames: torch.Tensor | None,
            streams: dict[str, list[int]], lows: dict[str, torch.Tensor], batch: int, seconds: float,
            total: int) -> dict[str, Any]:
    sizes = sorted({f"{low.shape[3]}x{low.shape[2]}" for low in lows.values()})
    return {"method": enhancer.name, "scale": enhancer.scale, "weights": enhancer.weights_path,
            "architecture": getattr(enhancer, "architecture", None), "refs": refs,
            "ref_frames": 0 if ref_frames is None else int(ref_frames.shape[0]), "device": str(enhancer.device),
            "batch": batch, "in": str(in_dir), "frames": total, "streams": {s: len(v) for s, v in streams.items()},
            "input_sizes": sizes, "seconds": round(seconds, 4), "seconds_per_frame": seconds / total,
            "torch": torch.__version__}
