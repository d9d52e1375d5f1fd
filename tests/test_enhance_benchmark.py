"""The enhancement benchmark's DLG stage: Low on High's grid, per-frame labels, PSNR at 32 px."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.enhance_dlg import HIGH, LOW, high_frame, labels_csv, psnr32
from edge.labels import Labels
from splitleak.video import to_model_input


def wide_frame(seed: int = 0) -> np.ndarray:
    """A 272x640 frame (bikes' shape): the edge's own crop at 32 px would not sit on the 128 px grid."""
    rng = np.random.default_rng(seed)
    smooth = rng.random((17, 40, 3)).astype(np.float32)
    return (np.clip(np.kron(smooth, np.ones((16, 16, 1))), 0, 1) * 255).astype(np.uint8)


def test_the_edges_input_is_high_pooled_4x4() -> None:
    image = wide_frame()
    high = torch.from_numpy(to_model_input(image, HIGH))[None]
    low = torch.from_numpy(to_model_input(high_frame(image), LOW))[None]
    assert (low - F.avg_pool2d(high, HIGH // LOW)).abs().max() <= 1 / 255
    own_crop = torch.from_numpy(to_model_input(image, LOW))[None]  # what streaming the original gives
    assert (own_crop - F.avg_pool2d(high, HIGH // LOW)).abs().max() > 4 / 255


def test_cycling_labels_give_frame_i_class_i_mod_10(tmp_path: Path) -> None:
    labels = Labels(0, 10, labels_csv(23, tmp_path / "labels.csv"))
    assert [labels(i) for i in range(23)] == [i % 10 for i in range(23)]


def test_psnr32_scores_against_the_edges_input() -> None:
    images = [wide_frame(k) for k in range(2)]
    truth = torch.from_numpy(np.stack([to_model_input(high_frame(im), LOW) for im in images]))
    exact, noisy = psnr32(truth, images, [0, 1]), psnr32((truth + 0.1).clamp(0, 1), images, [0, 1])
    assert min(exact) >= 90 and max(noisy) < 25
