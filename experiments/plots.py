"""Plots of a results table (PNG, matplotlib's Agg backend): attack PSNR and success against link,
codec, defence and the fraction of frames tapped; privacy (PSNR) against utility. A plot whose axis
holds one value is not drawn."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

Row = dict[str, Any]


def write_plots(rows: list[Row], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    ok = [r for r in rows if r.get("status") == "ok" and r.get("psnr") is not None]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, axis, label in (("psnr_vs_link", "link", "link"), ("psnr_vs_codec", "codec", "codec"),
                              ("psnr_vs_defence", "defence", "defence"),
                              ("psnr_vs_congestion", "congestion", "on congestion")):
        if len({r[axis] for r in ok}) > 1:
            written.append(by_category(ok, axis, label, folder / f"{name}.png"))
    if len({r.get("utility") for r in ok}) > 1:
        written.append(privacy_vs_utility(ok, folder / "privacy_vs_utility.png"))
    if len({tapped_share(r) for r in ok}) > 1:
        written.append(missing_frames(ok, folder / "missing_frames.png"))
    return written


def series_key(row: Row, axis: str) -> str:
    """One line per combination of the other axes that vary."""
    return " ".join(f"{row[k]}" for k in ("attack", "codec", "defence", "link", "congestion") if k != axis)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def grouped(rows: list[Row], axis: str, value: Callable[[Row], float]) -> dict[str, dict[str, float]]:
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if value(r) is not None:
            acc[series_key(r, axis)][r[axis]].append(value(r))
    return {s: {x: mean(v) for x, v in xs.items()} for s, xs in acc.items()}


def by_category(rows: list[Row], axis: str, label: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    order = list(dict.fromkeys(r[axis] for r in rows))  # the file's order
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for ax, value, ylabel in ((top, lambda r: r["psnr"], "attack PSNR (dB)"),
                              (bottom, lambda r: r["success_rate"], "success rate (missing = not recovered)")):
        for series, points in sorted(grouped(rows, axis, value).items()):
            xs = [order.index(x) for x in order if x in points]
            ax.plot(xs, [points[order[i]] for i in xs], marker="o", label=series)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    bottom.set_xticks(range(len(order)), order, rotation=20, ha="right")
    bottom.set_xlabel(label)
    top.legend(fontsize=7, ncol=2)
    top.set_title(f"attack against {label}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def privacy_vs_utility(rows: list[Row], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    marks = "os^vD<>px*"
    for i, defence in enumerate(dict.fromkeys(r["defence"] for r in rows)):
        pts = [(r["utility"], r["psnr"]) for r in rows if r["defence"] == defence and r.get("utility") is not None]
        ax.scatter([u for u, _ in pts], [p for _, p in pts], marker=marks[i % len(marks)], label=defence)
    return save_axes(fig, ax, path, f"utility ({rows[0].get('utility_metric') or 'utility'})",
                     "attack PSNR (dB): privacy lost", "privacy against utility, one point per cell")


def save_axes(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, grid and legend a one-axes figure, write it to `path` and free it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tapped_share(row: Row) -> float | None:
    return round(row["tapped"] / row["frames"], 3) if row.get("frames") else None


def missing_frames(rows: list[Row], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for attack in dict.fromkeys(r["attack"] for r in rows):
        pts = sorted((tapped_share(r), r["success_rate"], r["psnr"]) for r in rows if r["attack"] == attack)
        ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=f"{attack} PSNR")
    return save_axes(fig, ax, path, "share of captured frames tapped", "attack PSNR on tapped frames (dB)",
                     "single- vs multi-frame attacks when frames go missing")
