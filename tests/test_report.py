"""`splitleak report`: the page from a small fixture results folder; hostile strings, bad folders, Chromium."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adversary.report import write_report
from splitleak.cli.main import main
from splitleak.errors import SplitleakError
from splitleak.video import save_png

HOSTILE = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"


def scene(seed: int, size: int = 32) -> np.ndarray:
    """A colourful (3, H, W) frame in [0, 1]: gradients plus a seeded square, never flat."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, (x + y) / 2]).astype(np.float32)
    lo = seed % (size // 2)
    img[:, lo:lo + size // 4, lo:lo + size // 4] = [[[1.0]], [[0.2 * seed % 1]], [[0.1]]]
    return img


def make_results(root: Path, cells: int = 2, frames: int = 3) -> Path:
    """A results folder in the shape docs/experiments.md gives: rows, plots, cells with truth and attack PNGs."""
    rows = []
    for i in range(cells):
        cell = f"c{i:011x}"
        folder = root / "cells" / cell
        for seq in range(frames):
            save_png(folder / "truth" / f"edge0_{seq:06d}.png", scene(seq))
            save_png(folder / "attack" / f"edge0_{seq:06d}.png", np.clip(scene(seq) + 0.1 * i, 0, 1))
        (folder / "stats.json").write_text(json.dumps({"sent": frames, "acked": frames}))
        rows.append({"cell": cell, "link": f"rate={10 * (i + 1)}mbit", "codec": "fp32", "defence": "none",
                     "attack": "do", "sent": frames, "acked": frames, "lost": 0, "fps": 12.5, "psnr": 20.0 + i,
                     "ssim": 0.5, "success_rate": 0.5, "seconds": 3.0, "utility": 1.0, "status": "ok",
                     "error": None, "cell_dir": f"cells/{cell}"})
    (root / "plots").mkdir(parents=True)
    plot = np.zeros((60, 90, 3), np.uint8)
    plot[..., 0] = np.linspace(0, 255, 90, dtype=np.uint8)
    plot[20:40, 30:60] = [0, 120, 255]
    Image.fromarray(plot).save(root / "plots" / "psnr_vs_link.png")
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_report_holds_table_plots_grids_and_video_links(tmp_path):
    root = make_results(tmp_path / "out")
    (root / "cells" / "c00000000000" / "edge.mp4").write_bytes(b"not really a video")
    done = write_report(root)
    page = (root / "report.html").read_text()
    assert done["rows"] == 2 and done["images"] == 1 + 2 * 2 * 3 and done["videos"] == 1
    assert page.count("<tr class") == 0 and page.count("rate=10mbit") >= 2
    assert page.count("data:image/png;base64,") == 13
    assert "href=\"cells/c00000000000/edge.mp4\"" in page  # relative to the page, so it opens from disk
    assert "src=\"cells/" not in page and "file:" not in page  # every image embedded


def test_video_link_is_relative_to_the_page_elsewhere(tmp_path):
    root = make_results(tmp_path / "out", cells=1)
    (root / "cells" / "c00000000000" / "edge.mp4").write_bytes(b"x")
    write_report(root, tmp_path / "pages" / "r.html")
    target = tmp_path / "pages" / "r.html"
    assert "href=\"../out/cells/c00000000000/edge.mp4\"" in target.read_text()


def test_every_string_from_the_files_is_escaped(tmp_path):
    root = make_results(tmp_path / "out", cells=1)
    row = json.loads((root / "results.jsonl").read_text())
    row.update(link=HOSTILE, status="failed", error=HOSTILE, **{HOSTILE: HOSTILE})
    (root / "results.jsonl").write_text(json.dumps(row) + "\n")
    (root / "experiment.json").write_text(json.dumps({"name": HOSTILE}))
    write_report(root)
    page = (root / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page  # no tag came from the files
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;") >= 4  # title, key, value, error


def rewrite(text):
    return lambda root: (root / "results.jsonl").write_text(text)


def replace_with_link(path, target):
    path.unlink()
    path.symlink_to(target)


CELL0 = Path("cells") / "c00000000000"


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "results.jsonl").unlink(), "no results.jsonl"),
    (rewrite("{\"cell\": \"a\"\n"), "line 1: not valid JSON"),
    (rewrite("[1, 2]\n"), "expected a JSON object"),
    (rewrite(""), "no result rows"),
    (rewrite(json.dumps({"cell": "../../etc"}) + "\n"), "bad or missing cell id"),
    (rewrite(json.dumps({"cell": "a", "cell_dir": "/etc"}) + "\n"), "cell_dir must be"),
    (lambda root: (root / "plots" / "psnr_vs_link.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated"), "not a readable PNG"),
    (lambda root: (root / CELL0 / "attack" / "edge0_000001.png").write_text("text"), "not a PNG file"),
    (lambda root: shutil.rmtree(root / "cells" / "c00000000001"), "folder of a finished cell is missing"),
    (lambda root: replace_with_link(root / CELL0 / "truth" / "edge0_000000.png", "/etc/hostname"),
     "outside the results folder"),
])
def test_missing_or_corrupt_results_are_one_line_errors(tmp_path, capsys, damage, message):
    root = make_results(tmp_path / "out")
    damage(root)
    with pytest.raises(SplitleakError, match=message):
        write_report(root)
    assert main(["report", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (root / "report.html").exists()


def test_missing_results_folder_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "results folder not found" in capsys.readouterr().err


def test_cli_writes_the_page(tmp_path, capsys):
    root = make_results(tmp_path / "out")
    assert main(["report", str(root), "--out", str(tmp_path / "r.html")]) == 0
    assert "2 cells, 13 images" in capsys.readouterr().err
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


# --- real headless Chromium -------------------------------------------------------------------------------

# Appended to a copy of the page beside it (so relative links resolve alike): after load, it writes how many
# images decoded and how many table rows exist into <body>'s attributes, which --dump-dom then prints.
PROBE = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  document.body.setAttribute("data-images", imgs.length);
  document.body.setAttribute("data-loaded", imgs.filter(i => i.complete && i.naturalWidth > 0).length);
  document.body.setAttribute("data-rows", document.querySelectorAll("#results tbody tr").length);
});</script>"""


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get when it runs as root)")
    return path


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # two browser starts, a few seconds each
def test_report_renders_in_headless_chromium(tmp_path):
    binary = chromium()
    root = make_results(tmp_path / "out")
    write_report(root)
    page = root / "report.html"
    probe = root / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = headless(binary, tmp_path / "profile", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-images="13"' in dom.stdout and 'data-loaded="13"' in dom.stdout, dom.stdout[:300]
    assert 'data-rows="2"' in dom.stdout

    shot = tmp_path / "report.png"
    run = headless(binary, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,900", page.as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (900, 1280)
    assert pixels.std() > 10  # text, tables and images, not a blank page
    assert (pixels < 128).mean() > 0.01  # some dark content (text) on the white background


def test_a_broken_image_is_seen_by_the_probe(tmp_path):
    """The Chromium check can fail: a page with a broken reference reads fewer loaded images."""
    binary = chromium()
    page = tmp_path / "broken.html"
    page.write_text("<html><body><table id=\"results\"><tbody><tr><td>x</td></tr></tbody></table>"
                    "<img src=\"missing.png\"></body></html>".replace("</body>", PROBE + "</body>"))
    dom = headless(binary, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert 'data-images="1"' in dom.stdout and 'data-loaded="0"' in dom.stdout, dom.stdout[:300]
