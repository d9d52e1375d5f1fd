"""Video sources, preprocessing and PNG frame files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from splitleak.errors import SplitleakError
from splitleak.video import (
    SAMPLES,
    Frame,
    TruthWriter,
    frame_name,
    index_frames,
    load_png,
    open_source,
    parse_frame_name,
    sample_path,
    save_png,
    to_model_input,
    to_uint8_hwc,
)


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_clips_yield_rgb_frames(name: str) -> None:
    with open_source(f"sample:{name}", frames=3) as src:
        frames = list(src)
        assert src.name == f"sample:{name}"
    assert [f.index for f in frames] == [0, 1, 2]
    for f in frames:
        assert isinstance(f, Frame)
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
        assert f.image.shape == frames[0].image.shape
        assert f.capture_ts > 0
    assert frames[0].capture_ts <= frames[-1].capture_ts


def test_sample_is_rgb_and_replays() -> None:
    bgr = cv2.VideoCapture(sample_path("carphone")).read()[1]
    src = open_source("sample:carphone", frames=2)
    first = next(iter(src)).image
    np.testing.assert_array_equal(first, bgr[..., ::-1])
    np.testing.assert_array_equal(list(src)[0].image, first)  # a second pass starts over
    src.close()


def test_frames_limit_stops() -> None:
    assert len(list(open_source("synthetic", frames=5))) == 5
    assert list(open_source("synthetic", frames=0)) == []


def test_synthetic_deterministic_and_moving() -> None:
    a = [f.image for f in open_source("synthetic:96x64", frames=4, seed=3)]
    b = [f.image for f in open_source("synthetic:96x64", frames=4, seed=3)]
    c = [f.image for f in open_source("synthetic:96x64", frames=4, seed=4)]
    assert a[0].shape == (64, 96, 3) and a[0].dtype == np.uint8
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    for x, y in zip(a, a[1:]):
        diff = np.abs(x.astype(int) - y.astype(int)).mean()
        assert 0 < diff < 40  # it moves, yet consecutive frames stay related


def test_synthetic_runs_long_and_default_size() -> None:
    frames = list(open_source("synthetic", frames=300, seed=1))
    assert frames[-1].index == 299 and frames[-1].image.shape == (128, 128, 3)


def test_folder_source(tmp_path) -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    for i, img in enumerate(imgs):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), img[..., ::-1])
    (tmp_path / "notes.txt").write_text("ignored")
    frames = list(open_source(str(tmp_path)))
    assert len(frames) == 3
    for f, img in zip(frames, imgs):
        np.testing.assert_array_equal(f.image, img)
    assert len(list(open_source(str(tmp_path), frames=2))) == 2


def test_video_file_source(tmp_path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for f in open_source("synthetic:32x24", frames=4):
        writer.write(f.image[..., ::-1].copy())
    writer.release()
    frames = list(open_source(str(path)))
    assert len(frames) == 4 and frames[0].image.shape == (24, 32, 3)


@pytest.mark.parametrize(
    "spec",
    ["/no/such/file.mp4", "sample:nope", "camera:x", "synthetic:3x3", "synthetic:big", ""],
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(SplitleakError):
        open_source(spec)


def test_bad_frames_argument() -> None:
    with pytest.raises(SplitleakError):
        open_source("synthetic", frames=-1)


def test_camera_that_cannot_open() -> None:
    with pytest.raises(SplitleakError, match="camera"):
        open_source("camera:97")


def test_empty_folder(tmp_path) -> None:
    with pytest.raises(SplitleakError, match="no images"):
        open_source(str(tmp_path))


def test_unreadable_image_in_folder(tmp_path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SplitleakError, match="bad.png"):
        list(open_source(str(tmp_path)))


@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 40])
def test_corrupt_video(tmp_path, content: bytes) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(SplitleakError, match="cannot decode video"):
        open_source(str(path))


def test_unknown_sample_path() -> None:
    with pytest.raises(SplitleakError, match="unknown sample"):
        sample_path("nope")


def test_to_model_input_shape_and_range() -> None:
    img = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    for size in (16, 32, 64):
        x = to_model_input(img, size)
        assert x.shape == (3, size, size) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0


def test_to_model_input_centre_crop() -> None:
    img = np.zeros((32, 64, 3), dtype=np.uint8)
    img[:, 16:48] = 255  # a white centre band exactly as wide as the crop
    x = to_model_input(img, 32)
    np.testing.assert_array_equal(x, np.ones((3, 32, 32), np.float32))
    tall = np.zeros((64, 32, 3), dtype=np.uint8)
    tall[:32] = 200  # top half
    x = to_model_input(tall, 16)  # shrinks to 32x16 (INTER_AREA), keeps rows 8..24 of it
    assert x.shape == (3, 16, 16)
    np.testing.assert_allclose(x[:, :8], 200 / 255, atol=1e-6)
    np.testing.assert_array_equal(x[:, 8:], 0)
    np.testing.assert_array_equal(to_uint8_hwc(to_model_input(img[:, 16:48], 32)), img[:, 16:48])


def test_to_model_input_rejects_bad_input() -> None:
    with pytest.raises(SplitleakError):
        to_model_input(np.zeros((8, 8), np.uint8), 4)
    with pytest.raises(SplitleakError):
        to_model_input(np.zeros((8, 8, 3), np.uint8), 0)


def test_png_round_trip_exact(tmp_path) -> None:
    grid = np.random.default_rng(1).integers(0, 256, (3, 20, 24)).astype(np.float32) / 255
    path = save_png(tmp_path / "sub" / "a.png", grid)
    np.testing.assert_array_equal(load_png(path), grid)
    assert to_uint8_hwc(np.full((3, 2, 2), 2.0)).max() == 255  # clipped
    assert to_uint8_hwc(np.full((3, 2, 2), -1.0)).max() == 0


def test_load_png_errors(tmp_path) -> None:
    with pytest.raises(SplitleakError):
        load_png(tmp_path / "missing.png")
    (tmp_path / "c.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(SplitleakError):
        load_png(tmp_path / "c.png")


def test_frame_names_round_trip() -> None:
    for stream, seq in [("cam0", 0), ("a_b", 42), ("x.y-z", 1_234_567)]:
        assert parse_frame_name(frame_name(stream, seq)) == (stream, seq)
    assert frame_name("cam 1/../x", 7) == "cam_1_.._x_000007.png"
    assert parse_frame_name("notes.txt") is None and parse_frame_name("a_12.png") is None
    with pytest.raises(SplitleakError):
        frame_name("cam", -1)


def test_truth_writer(tmp_path) -> None:
    writer = TruthWriter(tmp_path / "truth")
    frames = open_source("synthetic:40x30", frames=2)
    xs = [to_model_input(f.image, 16) for f in frames]
    for seq, x in enumerate(xs):
        writer.write("cam0", seq, x)
    index = index_frames(tmp_path / "truth")
    assert sorted(index) == [("cam0", 0), ("cam0", 1)] and writer.count == 2
    np.testing.assert_allclose(load_png(index[("cam0", 1)]), xs[1], atol=0.5 / 255 + 1e-6)
