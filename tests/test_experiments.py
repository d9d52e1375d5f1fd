"""`splitleak run`: the experiment file checked whole first, a tiny sweep through real cloud and edge
processes, reruns that skip finished cells, failed cells recorded, Ray giving the sequential rows."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from splitleak.cli.main import main

TINY = """
name: tiny
size: 32
frames: 3
sources: synthetic:48x40
models: lenet
splits: conv2
"""
SAME = ("cell", "link", "codec", "attack", "sent", "acked", "lost", "tapped", "attacked", "psnr", "ssim",
        "success_rate", "utility", "status")


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> str:
    path = tmp_path / name
    path.write_text(TINY + text)
    return str(path)


@pytest.mark.parametrize("extra, message", [
    ("colour: red\nattacks: do", "unknown key 'colour'"),
    ("models: nonet\nattacks: do", "models: unknown model 'nonet'"),
    ("splits: layer9\nattacks: do", "splits: lenet has no split point 'layer9'"),
    ("attacks: [do, nosuch]", "attacks[1]: unknown attack 'nosuch'"),
    ("attacks: [{name: do, options: {lambda_zz: 1}}]", "attacks[0]: unknown option 'lambda_zz'"),
    ("attacks: [{name: do, iters: 3}]", "attacks[0]: unknown key 'iters'"),
    ("links: ['rate=fast']\nattacks: do", "links: link spec: bad number in 'rate=fast'"),
    ("codecs: [fp8]\nattacks: do", "codecs: unknown codec 'fp8'"),
    ("defences: ['blur']\nattacks: do", "defences: unknown defence 'blur'"),
    ("congestion: drop\nattacks: do", "congestion: unknown 'drop'"),
    ("attacks: dmb", "prior: an attack takes a diffusion prior"),
    ("frames: 0\nattacks: do", "frames: must be >= 1"),
    ("link_backend: netem\nattacks: do", "link_backend: expected emulator or tc, got 'netem'"),
])
def test_a_bad_file_is_one_line_naming_the_key_before_anything_runs(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["run", write(tmp_path, extra), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_sweep_end_to_end_then_reruns_skip_finished_cells(tmp_path, capsys):
    """Two links x one attack: a clean link, and one that drops every other frame or so; then a bigger
    file over the same folder runs only its new cell, and a cell whose edge fails is recorded."""
    out = tmp_path / "out"
    first = write(tmp_path, "links: ['none', 'loss=50%,drop=1']\nattacks: [{name: do, iterations: 3}]")
    assert main(["run", first, "--out", str(out), "--quiet"]) == 0
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok"] and len({r["cell"] for r in rows}) == 2
    clean, lossy = rows
    assert clean["sent"] == clean["tapped"] == clean["attacked"] == 3 and clean["utility"] == 1.0
    assert clean["psnr"] is not None and clean["utility_metric"] == "top1_agreement"
    # the lossy link: what never reached the cloud is never tapped, never attacked, and costs utility
    assert lossy["lost"] >= 1 and lossy["tapped"] == lossy["acked"] == 3 - lossy["lost"]
    assert lossy["attacked"] == lossy["tapped"] and lossy["utility"] <= lossy["tapped"] / 3 + 1e-3
    for row in rows:
        cell = out / row["cell_dir"]
        for name in ("config.json", "stats.json", "row.json", "attack/metrics.json"):
            assert (cell / name).is_file(), name
        assert len(list((cell / "truth").glob("*.png"))) == 3  # every captured frame is truth
        assert json.loads((cell / "config.json").read_text())["cell"] == row["cell"]
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["cell", "experiment", "source"] and {"psnr", "utility", "status", "cell_dir"} <= set(header)
    assert (out / "plots" / "psnr_vs_link.png").stat().st_size > 1000

    before = (out / clean["cell_dir"] / "row.json").stat().st_mtime_ns
    bigger = write(tmp_path, "links: ['none', 'loss=50%,drop=1', 'loss=100%,drop=1']\n"
                             "attacks: [{name: do, iterations: 3}]", "bigger.yaml")
    assert main(["run", bigger, "--out", str(out), "--quiet"]) == 0
    rows = read_rows(out)
    assert len(rows) == 3 and (out / clean["cell_dir"] / "row.json").stat().st_mtime_ns == before
    failed = rows[-1]
    assert failed["status"] == "failed" and "acknowledged none of the 3 frames" in failed["error"]
    assert failed["sent"] == 3 and failed["psnr"] is None
    assert main(["run", bigger, "--out", str(out), "--quiet", "--resume"]) == 0
    assert len(read_rows(out)) == 3  # --resume skips the failed cell; a plain rerun retries it
    assert main(["run", bigger, "--out", str(out), "--quiet"]) == 0
    assert len(read_rows(out)) == 4 and read_rows(out)[-1]["cell"] == failed["cell"]


@pytest.mark.slow
def test_ray_gives_the_sequential_rows(tmp_path):
    pytest.importorskip("ray", reason="ray is an optional extra: pip install -e '.[ray]'")
    exp = write(tmp_path, "links: ['none', 'rate=1mbit']\nattacks: [{name: do, iterations: 3}]")
    assert main(["run", exp, "--out", str(tmp_path / "seq"), "--quiet"]) == 0
    assert main(["run", exp, "--out", str(tmp_path / "ray"), "--quiet", "--ray", "auto", "--workers", "2"]) == 0
    seq = {r["cell"]: {k: r[k] for k in SAME} for r in read_rows(tmp_path / "seq")}
    ray = {r["cell"]: {k: r[k] for k in SAME} for r in read_rows(tmp_path / "ray")}
    assert seq == ray and len(seq) == 2


def test_success_counts_frames_never_tapped_as_not_recovered(tmp_path):
    from experiments.cell import success
    from experiments.spec import expand

    cell = expand({"sources": "synthetic", "models": "lenet", "splits": "conv2", "size": 32,
                   "attacks": [{"name": "do", "max_frames": 2}]}).cells[0]
    (tmp_path / "truth").mkdir()
    for seq in range(6):
        (tmp_path / "truth" / f"edge0_{seq:06d}.png").write_bytes(b"")
    (tmp_path / "recording").mkdir()
    (tmp_path / "recording" / "items.jsonl").write_text("{}\n" * 4)  # frames 0, 2, 3, 5 tapped
    attack = {"frames": [{"seq": 0, "psnr": 25.0}, {"seq": 2, "psnr": 15.0}]}  # max_frames=2: scope 0..2
    assert success(cell, tmp_path, attack) == (pytest.approx(1 / 3), 2)
    assert success(cell, tmp_path, None) == (0.0, 0)


def test_cells_are_the_product_and_hash_their_config():
    from experiments.spec import expand

    tree = {"sources": "synthetic", "models": "lenet", "splits": "conv2", "size": 32,
            "links": ["none", "rate=1000kbit"], "codecs": ["fp32", "int8"], "attacks": ["do", "do"]}
    cells = expand(tree).cells
    assert len(cells) == 4  # a repeated attack is one cell
    assert {c.link for c in cells} == {"none", "rate=1mbit"}
    assert len({c.id for c in cells}) == 4 and cells[0].id == expand(tree).cells[0].id
    quick = expand({**tree, "attacks": [{"name": "do", "iterations": 500}]}, quick=True).cells[0]
    assert quick.frames == 4 and quick.attack.iterations == 20 and quick.id not in {c.id for c in cells}
    fewer = expand({**tree, "quick": {"codecs": "int8", "frames": 2}}, quick=True).cells
    assert {c.codec for c in fewer} == {"int8"} and {c.frames for c in fewer} == {2} and len(fewer) == 2


def test_multi_frame_groups_break_at_gaps():
    from adversary.feature.groups import consecutive_groups

    frames = [("s", 0), ("s", 1), ("s", 3), ("s", 4), ("s", 5), ("s", 7)]  # 2 and 6 never tapped
    assert consecutive_groups(frames, 8) == [[0, 1], [2, 3, 4], [5]]


def test_tc_refuses_the_emulators_own_link_keys_and_names_why_it_cannot_run(tmp_path, capsys, monkeypatch):
    from splitleak import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    exp = write(tmp_path, "links: ['rate=1mbit', 'loss=10%,drop=1']\nattacks: do")
    assert main(["run", exp, "--out", str(tmp_path / "a"), "--link-backend", "tc"]) == 2
    assert "links: 'loss=10%,drop=1': drop, rto and window are the emulator's" in capsys.readouterr().err
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert main(["run", write(tmp_path, "link_backend: tc\nattacks: do"), "--out", str(tmp_path / "b")]) == 2
    assert "--link-backend tc needs root" in capsys.readouterr().err


def test_the_emulator_backend_keeps_the_cells_hash_and_tc_changes_it():
    from experiments.spec import expand

    tree = {"models": "lenet", "splits": "conv2", "attacks": "do"}
    (plain,) = expand(dict(tree)).cells
    (named,) = expand({**tree, "link_backend": "emulator"}).cells
    assert plain.id == named.id and plain.link_backend == "emulator"
    assert dataclasses.replace(plain, link_backend="tc").id != plain.id


@pytest.mark.slow
def test_a_cell_over_tc_streams_through_the_kernels_shaped_path(tmp_path):
    from tests.test_netns import WHY_NOT, namespaces

    if WHY_NOT is not None:
        pytest.skip(WHY_NOT)
    before = namespaces()
    out = tmp_path / "out"
    exp = write(tmp_path, "links: ['rate=20mbit']\nattacks: [{name: do, iterations: 2}]")
    assert main(["run", exp, "--out", str(out), "--quiet", "--link-backend", "tc"]) == 0
    (row,) = read_rows(out)
    assert row["status"] == "ok", row["error"]
    assert row["link_backend"] == "tc" and row["qdiscs"] == "tbf" and row["link"] == "rate=20mbit"
    assert row["sent"] == row["tapped"] == 3 and row["psnr"] is not None
    stream = next((out / "streams").iterdir())
    assert json.loads((stream / "link.json").read_text())["qdiscs"] == ["tbf"]
    assert "--link none" not in (stream / "edge.log").read_text()  # the edge's own emulator stays out of it
    assert namespaces() == before
