"""The audit's outputs: audit.json ({"rows", "config"}), audit.csv (the rows' flat figures) and audit.png
(the score and its parts across the audited split points)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from splitleak.recording import write_json

CSV_COLUMNS = ["model", "split", "mode", "score", "distance_part", "invertibility_part", "attack_part", "spearman",
               "spread_ratio", "r2", "effective_rank", "condition", "stable_rank", "stable_rank_share",
               "attack_psnr", "rgap_unique_layers", "seconds"]


def label(row: dict[str, Any]) -> str:
    return f"{row['model']}/{row.get('split') or row.get('mode')}"


def write_outputs(out: Path, rows: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "audit.json", "csv": out / "audit.csv", "png": out / "audit.png"}
    write_json(paths["json"], {"rows": rows, "config": config})  # atomic, as every other output's JSON
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, paths["png"])
    return paths


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(rows) + 2), 4))
    xs = range(len(rows))
    ax.plot(xs, [r["score"] for r in rows], "k-o", lw=2, label="score")
    for part, style in (("distance_part", "--s"), ("invertibility_part", "--^"), ("attack_part", "--v")):
        ax.plot(xs, [r[part] for r in rows], style, label=part.replace("_part", ""))
    ax.set_xticks(list(xs), [label(r) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="exposure (higher = more exposed)", title="privacy audit")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
