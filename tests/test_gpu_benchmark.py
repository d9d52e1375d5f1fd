"""benchmarks.gpu: its refusals are one-line errors with exit code 2; what it counts per iteration."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_device_is_a_one_line_error(capsys) -> None:
    assert gpu.main(["--device", "cuda", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0]


def test_unknown_workloads_and_bad_priors_are_refused(capsys, tmp_path) -> None:
    assert gpu.main(["--rows", "dmb,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert gpu.main(["--prior", str(tmp_path)]) == 2
    assert "not a prior folder" in capsys.readouterr().err


def test_per_iteration_counts_what_each_iteration_adds() -> None:
    """Read-backs and aten ops of an n- and a 2n-iteration run, differenced: setup and read-out cancel, and an
    iteration with twice the work counts twice the ops."""
    def runner(work: int):
        def run(n: int) -> float:
            x = torch.ones(3)
            for _ in range(n):
                for _ in range(work):
                    x = x * 2 + 1
                float(x.sum())  # one read-back per iteration
            return float(x.mean())  # one more, once
        return run

    syncs, ops = gpu.per_iteration(runner(1), 3)
    syncs2, ops2 = gpu.per_iteration(runner(3), 2)
    assert syncs == syncs2 == 1
    assert ops > 0 and ops2 - ops == pytest.approx(2 * (ops - gpu.per_iteration(runner(0), 2)[1]))


def test_speedups_compare_frames_per_second_with_the_cpu_row() -> None:
    rows = [gpu.row("dmb-iteration", "cuda", 64, 0.5), gpu.row("dmb-iteration", "cpu", 2, 1.0),
            gpu.row("do", "cuda", 8, 1.0), gpu.row("do", "cpu", 8, 4.0)]
    gpu.add_ratios(rows)
    assert rows[0]["speedup_over_cpu"] == pytest.approx(64 / 0.5 / 2) and rows[0]["cpu_frames"] == 2
    assert rows[2]["speedup_over_cpu"] == pytest.approx(4.0)
    assert "speedup_over_cpu" not in rows[1]
