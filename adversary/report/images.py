"""Images and videos of a results folder: checked PNGs as data: URIs, truth/reconstruction pairs, video links."""
from __future__ import annotations

import base64
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from adversary.report.results import inside
from splitleak.errors import SplitleakError
from splitleak.video import index_frames

MAX_IMAGE_BYTES = 16 << 20
MAX_IMAGE_SIDE = 8192
GRID_FRAMES = 8
VIDEO_SUFFIXES = (".mp4", ".webm")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Embedded:
    """A PNG ready for an <img>: its data: URI, its size in pixels and the file it came from."""

    uri: str
    width: int
    height: int
    name: str


def embed_png(path: Path, root: Path) -> Embedded:
    """The PNG at `path` as a data: URI, after checking it decodes; SplitleakError when it cannot be shown."""
    real = inside(root, path)
    if not real.is_file():
        raise SplitleakError(f"{path}: image missing")
    if real.stat().st_size > MAX_IMAGE_BYTES:
        raise SplitleakError(f"{path}: image larger than {MAX_IMAGE_BYTES >> 20} MiB")
    data = real.read_bytes()
    if not data.startswith(PNG_MAGIC):
        raise SplitleakError(f"{path}: not a PNG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if max(width, height) > MAX_IMAGE_SIDE:
                    raise SplitleakError(f"{path}: image of {width}x{height} px, larger than {MAX_IMAGE_SIDE} a side")
                image.load()  # a truncated or corrupt stream fails here, not in the browser
    except SplitleakError:
        raise
    except Exception as e:  # PIL raises many types for bad data; all mean the same to the reader
        raise SplitleakError(f"{path}: not a readable PNG ({type(e).__name__})") from None
    return Embedded("data:image/png;base64," + base64.b64encode(data).decode("ascii"), width, height, path.name)


def plots(root: Path) -> list[Embedded]:
    """Every plots/*.png, by name."""
    folder = root / "plots"
    return [embed_png(p, root) for p in sorted(folder.glob("*.png"))] if folder.is_dir() else []


@dataclass(frozen=True)
class Pair:
    seq: int
    stream: str
    truth: Embedded
    recon: Embedded


def cell_pairs(cell: Path, root: Path, limit: int = GRID_FRAMES) -> list[Pair]:
    """Truth and reconstruction of the first `limit` attacked frames that have a truth frame."""
    attack, truth = cell / "attack", cell / "truth"
    if not (attack.is_dir() and truth.is_dir()):
        return []
    recon, real = index_frames(inside(root, attack)), index_frames(inside(root, truth))
    keys = sorted(recon.keys() & real.keys())[:limit]
    return [Pair(seq, stream, embed_png(real[(stream, seq)], root), embed_png(recon[(stream, seq)], root))
            for stream, seq in keys]


def cell_grid(cell: Path, root: Path) -> Embedded | None:
    """The attack's own grid.png, shown when no frame pairs up with a truth frame."""
    path = cell / "attack" / "grid.png"
    return embed_png(path, root) if path.is_file() else None


def videos(cell: Path, root: Path, page_dir: Path) -> list[tuple[str, str]]:
    """(href relative to the page, file name) of each video in the cell folder (two levels deep)."""
    found = [p for pattern in ("*", "*/*") for p in sorted(cell.glob(pattern))
             if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
    links = []
    for path in found:
        real = inside(root, path)
        links.append((quote(Path(os.path.relpath(real, page_dir.resolve())).as_posix()), str(path.relative_to(cell))))
    return links
