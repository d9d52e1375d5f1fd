"""The load benchmark runs end to end at a tiny size and accounts for every frame it sent."""
import json

import pytest

from benchmarks.load import SCENARIOS, main

EDGE_FIELDS = {"scenario", "edge", "sent", "acked", "lost", "rejected", "pending", "hung", "fps", "acked_fps",
               "p50_ms", "p95_ms", "p99_ms", "reconnects", "error"}
TOTAL_FIELDS = EDGE_FIELDS - {"hung", "error"} | {
    "edges", "delivered_pct", "edges_hung", "recorded", "record_dropped", "tap_frames", "tap_dropped", "tap_error",
    "cloud_rss_start_mb", "cloud_rss_end_mb", "idle_calls", "idle_kind", "idle_ended_by_cloud", "idle_end_codes",
    "cloud_frames"}


@pytest.mark.slow  # three cloud processes, a few seconds each
def test_tiny_load_run(tmp_path, capsys):
    path = tmp_path / "load.json"
    main(["--edges", "2", "--seconds", "2", "--idle-calls", "3", "--json", str(path)])
    written = json.loads(path.read_text())
    rows = written["rows"]
    assert written["config"]["edges"] == 2 and written["config"]["idle_calls"] == 3
    totals = {r["scenario"]: r for r in rows if r["edge"] == "total"}
    assert list(totals) == list(SCENARIOS)
    for row in rows:
        assert row.keys() >= (TOTAL_FIELDS if row["edge"] == "total" else EDGE_FIELDS), row
        assert row["acked"] + row["lost"] + row["rejected"] == row["sent"], row
    for name, total in totals.items():
        edges = [r for r in rows if r["scenario"] == name and r["edge"] != "total"]
        assert [r["edge"] for r in edges] == ["load00", "load01"]
        assert total["sent"] == sum(r["sent"] for r in edges) > 0
        assert total["idle_calls"] == (0 if name == "edges" else 3)
        # what the cloud answered it recorded, and the tap saw (a tiny load loses nothing)
        assert total["recorded"] == total["tap_frames"] == total["cloud_frames"] == total["acked"], total
        assert total["cloud_rss_end_mb"] > 0
    assert totals["edges"]["delivered_pct"] == 100.0
    assert totals["idle-no-token"]["idle_end_codes"] == {"UNAUTHENTICATED": 3}  # a frame without a token is refused
    assert "idle-silent" in capsys.readouterr().out
