"""The survey's outputs besides the JSON: a CSV of the rows, heat-maps of PSNR and of time, a short table."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

CSV_COLUMNS = ["model", "footage", "attack", "batch", "frames", "status", "psnr", "ssim", "success",
               "seconds_per_frame", "psnr_native", "iterations", "reason"]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def grid(rows: list[dict[str, Any]], key: str) -> tuple[list[str], list[str], np.ndarray]:
    """(models, columns "footage attack Bb", values) with NaN where a cell has no number."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    columns = list(dict.fromkeys(column(r) for r in rows))
    values = np.full((len(models), len(columns)), np.nan)
    for r in rows:
        if r.get(key) is not None:
            values[models.index(r["model"]), columns.index(column(r))] = r[key]
    return models, columns, values


def column(row: dict[str, Any]) -> str:
    return f"{row['footage']} {row['attack']} B{row['batch']}"


def heatmap(rows: list[dict[str, Any]], key: str, path: Path, title: str, unit: str, log: bool = False) -> Path:
    """A models x (footage, attack, batch) heat-map of `key`; cells without a number are hatched grey
    (their reasons are in the rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    models, columns, values = grid(rows, key)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(columns) + 2.5), 0.5 * len(models) + 2.2))
    ax.set_facecolor("#d9d9d9")
    finite = values[np.isfinite(values)]
    norm = LogNorm(max(finite.min(), 1e-3), max(finite.max(), 1e-3 * 1.01)) if log and finite.size else None
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto", norm=norm)
    for (i, j), v in np.ndenumerate(values):
        text = "n/a" if math.isnan(v) else (f"{v:.0f}" if v >= 10 else f"{v:.2g}")
        bright = math.isnan(v) or image.norm(v) > 0.6  # viridis is light at its top end
        ax.text(j, i, text, ha="center", va="center", fontsize=6, color="black" if bright else "white")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(models)), models, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=unit)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (model, batch): per attack "PSNR dB / success / s per frame", means over footage;
    "-" where no footage has a number."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for batch in sorted({r["batch"] for r in rows}):
            line: dict[str, Any] = {"model": model, "batch": batch}
            for attack in dict.fromkeys(r["attack"] for r in rows):
                got = [r for r in rows if (r["model"], r["batch"], r["attack"]) == (model, batch, attack)
                       and r["psnr"] is not None]
                line[attack] = (f"{np.mean([r['psnr'] for r in got]):.1f}/{np.mean([r['success'] for r in got]):.0%}"
                                f"/{np.mean([r['seconds_per_frame'] for r in got]):.2g}s" if got else "-")
            out.append(line)
    return out


def reasons(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Each distinct stated reason and how many cells give it."""
    found: dict[str, int] = {}
    for r in rows:
        if r["psnr"] is None:
            found[r["reason"]] = found.get(r["reason"], 0) + 1
    return found
