"""splitleak audit: the CLI's outputs and errors, and the measures checked against exact answers."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from adversary.audit import distance, invertibility
from adversary.audit.probe import Probe
from adversary.audit.score import exposure
from splitleak.cli.main import main
from splitleak.models import build_split_model
from splitleak.video import save_png

FAST = ["--size", "16", "--frames", "4", "--rank", "4", "--attack-iterations", "2", "--device", "cpu", "--quiet"]


@pytest.fixture
def folder(tmp_path):
    """A folder of 5 PNG frames: a smooth scene drifting, so neighbours are close and far frames are not."""
    out = tmp_path / "frames"
    yy, xx = np.mgrid[0:24, 0:24] / 24.0
    for i in range(5):
        img = np.stack([np.sin(3 * xx + 0.4 * i), np.cos(2 * yy - 0.3 * i), xx * yy]) * 0.5 + 0.5
        save_png(out / f"frame_{i:03d}.png", img.astype(np.float32))
    return out


def audit(tmp_path, folder, *args):
    out = tmp_path / "audit"
    return main(["audit", *args, "--source", str(folder), "--out", str(out), *FAST]), out


def test_cli_writes_json_csv_and_plot_with_the_schema(tmp_path, folder, one_thread):
    code, out = audit(tmp_path, folder, "--model", "lenet", "--split", "conv2")
    assert code == 0
    doc = json.loads((out / "audit.json").read_text())
    assert set(doc) == {"rows", "config"} and doc["config"]["model"] == "lenet"
    (row,) = doc["rows"]
    assert row["model"] == "lenet" and row["split"] == "conv2" and "mode" not in row
    for key in ("score", "distance_part", "invertibility_part", "attack_part", "spearman", "spread_ratio",
                "effective_rank", "condition", "stable_rank", "attack_psnr", "seconds"):
        assert np.isfinite(row[key]), key
    assert 0 <= row["score"] <= 1
    assert row["score"] == pytest.approx((row["distance_part"] + row["invertibility_part"] + row["attack_part"]) / 3)
    with (out / "audit.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["score"]) == pytest.approx(row["score"])
    assert (out / "audit.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "distance_lenet_conv2.png").stat().st_size > 0


def test_split_all_gives_one_row_per_split_point(tmp_path, folder, one_thread):
    code, out = audit(tmp_path, folder, "--model", "lenet", "--split", "all")
    assert code == 0
    rows = json.loads((out / "audit.json").read_text())["rows"]
    assert [r["split"] for r in rows] == ["conv1", "conv2", "conv3"]


def test_fedsgd_row_has_its_mode_and_rgap_ranks_on_a_bias_free_model(tmp_path, folder, one_thread):
    out = tmp_path / "audit"
    assert main(["audit", "--model", "cnn6", "--mode", "fedsgd", "--source", str(folder), "--out", str(out),
                 "--size", "8", "--frames", "4", "--rank", "4", "--attack-iterations", "1", "--quiet"]) == 0
    (row,) = json.loads((out / "audit.json").read_text())["rows"]
    assert row["mode"] == "fedsgd" and "split" not in row
    assert [r["layer"] for r in row["rgap_rank_report"]][0] == "conv1.0"
    assert row["rgap_unique_layers"].endswith(f"/{len(row['rgap_rank_report'])}")
    assert row["attack"] == "rgap" and row["attack_iterations"] == 0  # the closed form: the cheapest that fits


def test_short_gradient_attack_falls_back_to_idlg_batched_where_rgap_cannot_read_the_model(one_thread):
    from adversary.audit.probe import probe_for
    from adversary.audit.short_attack import Budget, run_short_attack

    torch.manual_seed(0)
    probe = probe_for(build_split_model("mobilenet_v3_small", "none", size=16))  # BatchNorm: no rgap
    out = run_short_attack(probe, torch.rand(1, *probe.input_shape), Budget(gradient_iterations=1, frames=1))
    assert out["attack"] == "idlg-batched" and out["iterations"] == 1 and np.isfinite(out["psnr"])


@pytest.mark.parametrize("args, reason", [
    (["--model", "nope", "--split", "conv1"], "unknown model 'nope'"),
    (["--model", "lenet", "--split", "layer9"], "unknown split point 'layer9' for lenet"),
    (["--model", "lenet", "--split", "conv1", "--frames", "9"], "gave 5 frames"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, folder, capsys, args, reason):
    out = tmp_path / "audit"
    argv = ["audit", *args, "--source", str(folder), "--out", str(out), "--size", "16", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0]
    assert not (out / "audit.json").exists()


def dense_singular_values(f, x: torch.Tensor) -> np.ndarray:
    jac = torch.autograd.functional.jacobian(f, x).reshape(-1, x.numel())
    return torch.linalg.svdvals(jac.double()).numpy()


@pytest.mark.parametrize("split, size", [("conv1", 8), ("none", 4)])  # features; FedSGD gradients
def test_randomised_spectrum_matches_the_dense_jacobian(split, size, one_thread):
    torch.manual_seed(0)
    probe = Probe(build_split_model("lenet", split, size=size), "features" if split != "none" else "gradients")
    x = torch.rand(probe.input_shape)
    exact = dense_singular_values(probe.single(), x)
    est = invertibility.randomized_spectrum(lambda v: probe.jvp(x, v), lambda u: probe.vjp(x, u),
                                            probe.input_shape, k=6, oversample=26, power=3)
    np.testing.assert_allclose(est.singular_values, exact[:6], rtol=0.02)
    exact_stable = float((exact ** 2).sum() / exact[0] ** 2)
    assert est.stable_rank == pytest.approx(exact_stable, rel=0.5)  # Hutchinson with 32 probes


def test_identity_map_has_rank_correlation_one_and_no_spread():
    frames = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    rel = distance.measure(lambda x: x.flatten(1), frames)
    assert rel.spearman == pytest.approx(1.0, abs=1e-9)
    assert rel.r2 == pytest.approx(1.0, abs=1e-9) and rel.slope == pytest.approx(1.0, abs=1e-6)


def test_a_map_that_forgets_the_input_has_no_rank_correlation():
    frames = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    rel = distance.measure(lambda x: x.mean(dim=(1, 2, 3))[:, None] * 0 + 1.0, frames)
    assert rel.spearman == 0.0 and rel.spread_ratio == pytest.approx(1.0)
    linear = torch.randn(192, 256, generator=torch.Generator().manual_seed(1))
    assert distance.measure(lambda x: x.flatten(1) @ linear, frames).spearman > 0.9


def test_score_rises_with_each_part():
    base = exposure(0.5, 0.5, 10.0, 1000, 20.0)
    assert exposure(0.9, 0.5, 10.0, 1000, 20.0)["score"] > base["score"]
    assert exposure(0.5, 0.2, 10.0, 1000, 20.0)["score"] > base["score"]
    assert exposure(0.5, 0.5, 100.0, 1000, 20.0)["score"] > base["score"]
    assert exposure(0.5, 0.5, 10.0, 1000, 30.0)["score"] > base["score"]
    assert exposure(1.0, 0.0, 1000.0, 1000, 40.0)["score"] == pytest.approx(1.0)


def test_split_and_mode_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["audit", "--model", "lenet", "--split", "conv1", "--mode", "fedsgd", "--out", str(tmp_path / "a")])
    assert done.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_benchmark_correlations_read_score_against_attack_psnr():
    from benchmarks.audit import correlations

    rows = [{"score": s, "psnr": p, "attack_psnr": p, "time_ratio": r}
            for s, p, r in ((0.2, 12.0, 0.05), (0.5, 20.0, 0.02), (0.4, 25.0, 0.1), (0.9, 30.0, 0.01))]
    got = correlations(rows)
    assert got["spearman"] == pytest.approx(0.8) and got["kendall"] == pytest.approx(2 / 3)
    assert got["max_time_ratio"] == 0.1 and got["configurations"] == 4
