"""benchmarks.survey: the planner's matrix and reasons, the footage cut, the outputs, one tiny run end to end."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

from benchmarks.survey.cli import main, survey
from benchmarks.survey.footage import FOOTAGE, held_out_range
from benchmarks.survey.plan import ATTACKS, BATCHES, MODELS, message_mb, plan
from benchmarks.survey.report import grid, heatmap, summary_table
from splitleak.errors import SplitleakError


def test_plan_enumerates_every_cell_and_says_why_one_does_not_run():
    cells = plan(False)
    assert [(c.model, c.footage, c.batch, c.attack) for c in cells] == list(itertools.product(MODELS, FOOTAGE,
                                                                                             BATCHES, ATTACKS))
    by = {(c.model, c.footage, c.attack, c.batch): c for c in cells}
    assert all(c.reason for c in cells if not c.runs)
    assert "batch size 1 only" in by["lenet", "bikes", "rgap", 4].reason
    assert "BatchNorm2d" in by["resnet18", "bikes", "rgap", 1].reason
    assert message_mb("vit_b_16") > 330 and message_mb("lenet") == 256  # vit_b_16 streams at a raised limit
    for model in ("lenet", "cnn6", "simple", "moderate"):  # R-GAP's own models: its chain takes them
        assert by[model, "stills", "rgap", 1].runs
    assert all(c.runs for c in cells if c.attack != "rgap")
    assert {c.frames for c in cells if c.batch == 4} == {4} and {c.frames for c in cells if c.batch == 1} == {2}


def test_quick_plan_is_one_footage_with_smaller_budgets():
    quick = {(c.model, c.attack, c.batch): c for c in plan(True)}
    full = {(c.model, c.attack, c.batch): c for c in plan(False, footage=("bikes",))}
    assert {c.footage for c in quick.values()} == {"bikes"} and quick.keys() == full.keys()
    for key, cell in quick.items():
        if cell.runs and cell.iterations is not None:
            assert cell.iterations <= (full[key].iterations or 10**6)


def test_plan_refuses_an_unknown_model():
    with pytest.raises(SplitleakError, match="unknown model"):
        plan(True, models=("alexnet",))


def test_cli_refuses_an_unknown_name_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--quick", "--attacks", "dlg,fgsm"])
    assert exit_.value.code == 2 and "fgsm" in capsys.readouterr().err


def test_held_out_stills_are_the_last_30_percent():
    assert held_out_range("stills", 4) == (10, 14)
    with pytest.raises(ValueError, match="cannot take 5"):
        held_out_range("stills", 5)


def test_heatmap_marks_a_refused_cell_and_the_table_averages_over_footage(tmp_path):
    rows = [{"model": "lenet", "footage": f, "attack": "idlg", "batch": 1, "psnr": p, "success": s,
             "seconds_per_frame": 2.0} for f, p, s in (("bikes", 20.0, 0.0), ("stills", 40.0, 1.0))]
    rows.append({"model": "lenet", "footage": "bikes", "attack": "rgap", "batch": 4, "psnr": None,
                 "success": None, "seconds_per_frame": None, "reason": "rgap: batch 1 only"})
    models, columns, values = grid(rows, "psnr")
    assert models == ["lenet"] and columns == ["bikes idlg B1", "stills idlg B1", "bikes rgap B4"]
    assert values[0, :2].tolist() == [20.0, 40.0] and torch.isnan(torch.tensor(values[0, 2]))
    assert heatmap(rows, "psnr", tmp_path / "p.png", "t", "dB").stat().st_size > 0
    table = {(r["model"], r["batch"]): r for r in summary_table(rows)}
    assert table["lenet", 1]["idlg"] == "30.0/50%/2s" and table["lenet", 4]["idlg"] == "-"


def test_a_tiny_survey_records_attacks_and_writes_rows_and_heatmaps(tmp_path):
    rows = survey(tmp_path, quick=True, models=("lenet",), footage=("stills",), attacks=("idlg", "rgap"),
                  batches=(1,), frames=1, iterations=2, size=16)
    assert [(r["attack"], r["status"]) for r in rows] == [("idlg", "measured"), ("rgap", "measured")]
    for r in rows:
        assert r["frames"] == 1 and r["first_frame"] == 10 and 0 <= r["success"] <= 1
        assert r["psnr"] > 0 and r["seconds_per_frame"] > 0
    assert rows[0]["iterations"] == 2
    saved = json.loads((tmp_path / "survey.json").read_text())
    assert [r["attack"] for r in saved["rows"]] == ["idlg", "rgap"] and saved["config"]["quick"] is True
    assert (tmp_path / "survey.csv").read_text().splitlines()[0].startswith("model,footage,attack,batch")
    assert (tmp_path / "psnr.png").stat().st_size > 0 and (tmp_path / "time.png").stat().st_size > 0


def test_resume_redoes_no_finished_cell_and_reuses_a_killed_runs_recording(tmp_path, monkeypatch):
    import benchmarks.survey.measure as measure

    tiny = dict(models=("lenet",), footage=("stills",), attacks=("idlg",), batches=(1,), frames=1, size=16)
    first = survey(tmp_path, quick=True, iterations=2, **tiny)
    saved = list((tmp_path / "cells").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["psnr"] == first[0]["psnr"]
    assert not list((tmp_path / "recordings").iterdir())  # deleted once its attacks were done

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished cell was redone")

    real_record, real_attack = measure.record, measure.run_attack
    monkeypatch.setattr(measure, "record", must_not_run)
    monkeypatch.setattr(measure, "run_attack", must_not_run)
    again = survey(tmp_path, quick=True, iterations=2, resume=True, **tiny)
    assert again[0]["resumed"] and {**again[0], "resumed": None} == {**first[0], "resumed": None}
    assert json.loads((tmp_path / "survey.json").read_text())["config"]["cells_resumed"] == 1

    # another budget is another cell; a run killed during its attack leaves a complete recording ...
    monkeypatch.setattr(measure, "record", real_record)
    monkeypatch.setattr(measure, "run_attack", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        survey(tmp_path, quick=True, iterations=3, resume=True, **tiny)
    assert len(list((tmp_path / "recordings").glob("*/done.json"))) == 1
    # ... which the next --resume attacks without recording again
    monkeypatch.setattr(measure, "record", must_not_run)
    monkeypatch.setattr(measure, "run_attack", real_attack)
    third = survey(tmp_path, quick=True, iterations=3, resume=True, **tiny)
    assert third[0]["status"] == "measured" and third[0]["iterations"] == 3 and "resumed" not in third[0]
    assert len(list((tmp_path / "cells").glob("*.json"))) == 2
