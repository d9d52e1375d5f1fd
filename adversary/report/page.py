"""The report page: header, results table, failed cells, plots, one section per cell. No script, inline CSS."""
from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

import adversary.report.images as images
from adversary.report.results import columns, load_rows, read_json
from splitleak.errors import SplitleakError

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}h3{font-size:15px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#eef;position:sticky;top:0}
td.text{text-align:left}
tr.failed td{background:#fee}
figure{display:inline-block;margin:8px;vertical-align:top}
figure img{max-width:640px;border:1px solid #ccc}
.grid td{border:none;text-align:center;font-size:11px}
.grid img{width:128px;height:128px;image-rendering:pixelated;border:1px solid #ccc}
.cell{margin-bottom:24px}
.muted{color:#777}
"""
CELL_SUMMARY = ("link", "codec", "defence", "congestion", "attack", "seed", "psnr", "ssim", "success_rate",
                "utility", "tapped", "attacked", "status")


def write_report(results_dir: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Render the folder's report to `out` (default RESULTS_DIR/report.html); returns what went in."""
    root = Path(results_dir)
    rows = load_rows(root)
    target = Path(out) if out is not None else root / "report.html"
    plots = images.plots(root)
    sections, embedded, video_count = [], len(plots), 0
    for row in rows:
        section, count, videos = cell_section(row, root, target.parent)
        sections.append(section)
        embedded, video_count = embedded + count, video_count + videos
    experiment = read_json(root / "experiment.json", root)
    name = experiment.get("name") if isinstance(experiment, dict) else None
    body = [header(root, rows, name), results_table(rows), failed_list(rows), plot_section(plots),
            "<h2>Cells: truth above, reconstruction below</h2>", *sections]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{text(title(name))}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
    except OSError as e:
        raise SplitleakError(f"cannot write {target}: {e.strerror}") from None
    return {"path": str(target), "rows": len(rows), "images": embedded, "videos": video_count, "bytes": len(page)}


def text(value: Any) -> str:
    """Any value as escaped HTML text; floats to 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else escape(str(value))
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)[:500]
    return escape(str(value), quote=True)


def title(name: Any) -> str:
    return f"splitleak report: {name}" if isinstance(name, str) and name else "splitleak report"


def header(root: Path, rows: list[dict[str, Any]], name: Any) -> str:
    ok = sum(1 for r in rows if r.get("status") == "ok")
    return (f"<h1>{text(title(name))}</h1>\n<p>Results folder <code>{text(str(root))}</code>: {len(rows)} cells, "
            f"{ok} ok, {len(rows) - ok} not ok. PSNR/SSIM are over the attacked frames; success rate counts "
            "frames never tapped as not recovered (docs/experiments.md).</p>")


def results_table(rows: list[dict[str, Any]]) -> str:
    cols = columns(rows)
    head = "".join(f"<th>{text(c)}</th>" for c in cols)
    lines = []
    for row in rows:
        cls = "" if row.get("status") == "ok" else " class=\"failed\""
        cells = []
        for c in cols:
            value = row.get(c)
            if c == "cell":
                cells.append(f"<td class=\"text\"><a href=\"#cell-{text(value)}\">{text(value)}</a></td>")
            else:
                kind = "" if isinstance(value, (int, float)) and not isinstance(value, bool) else " class=\"text\""
                cells.append(f"<td{kind}>{text(value)}</td>")
        lines.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f"<h2>Results ({len(rows)} rows)</h2>\n<div class=\"scroll\"><table id=\"results\">"
            f"<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(lines) + "\n</tbody></table></div>")


def failed_list(rows: list[dict[str, Any]]) -> str:
    failed = [r for r in rows if r.get("status") != "ok"]
    if not failed:
        return ""
    items = "".join(f"<li><a href=\"#cell-{text(r['cell'])}\">{text(r['cell'])}</a>: {text(r.get('error'))}</li>"
                    for r in failed)
    return f"<h2>Cells that did not finish ok ({len(failed)})</h2>\n<ul id=\"failed\">{items}</ul>"


def img(image: images.Embedded, alt: str, extra: str = "") -> str:
    return (f"<img src=\"{image.uri}\" width=\"{image.width}\" height=\"{image.height}\" "
            f"alt=\"{text(alt)}\" title=\"{text(image.name)}\"{extra}>")


def plot_section(plots: list[images.Embedded]) -> str:
    if not plots:
        return "<h2>Plots</h2>\n<p class=\"muted\">No plots in this folder.</p>"
    figures = "".join(f"<figure>{img(p, p.name)}<figcaption>{text(p.name)}</figcaption></figure>" for p in plots)
    return f"<h2>Plots</h2>\n<div id=\"plots\">{figures}</div>"


def cell_section(row: dict[str, Any], root: Path, page_dir: Path) -> tuple[str, int, int]:
    """One cell's summary, its truth/reconstruction grid and video links; (html, images, videos)."""
    cell = root / "cells" / row["cell"]
    summary = ", ".join(f"{text(k)} {text(row[k])}" for k in CELL_SUMMARY if k in row)
    parts = [f"<div class=\"cell\" id=\"cell-{text(row['cell'])}\"><h3>{text(row['cell'])}</h3><p>{summary}</p>"]
    count, links = 0, []
    if not cell.is_dir():
        if row.get("status") == "ok":
            raise SplitleakError(f"{cell}: the folder of a finished cell is missing")
        parts.append("<p class=\"muted\">No cell folder.</p>")
    else:
        pairs = images.cell_pairs(cell, root)
        grid = None if pairs else images.cell_grid(cell, root)
        if pairs:
            parts.append(pair_grid(pairs))
            count = 2 * len(pairs)
        elif grid:
            parts.append(f"<p>{img(grid, 'attack grid')}</p>")
            count = 1
        else:
            parts.append("<p class=\"muted\">No reconstruction with a truth frame.</p>")
        links = images.videos(cell, root, page_dir)
        if links:
            parts.append("<p>Videos: " + ", ".join(f"<a href=\"{text(href)}\">{text(name)}</a>" for href, name in links)
                         + "</p>")
    parts.append("</div>")
    return "".join(parts), count, len(links)


def pair_grid(pairs: list[images.Pair]) -> str:
    top = "".join(f"<td>{img(p.truth, f'truth {p.stream} {p.seq}')}</td>" for p in pairs)
    bottom = "".join(f"<td>{img(p.recon, f'reconstruction {p.stream} {p.seq}')}</td>" for p in pairs)
    captions = "".join(f"<td>{text(p.stream)} #{p.seq}</td>" for p in pairs)
    return (f"<table class=\"grid\"><tr><th>truth</th>{top}</tr><tr><th>reconstruction</th>{bottom}</tr>"
            f"<tr><th></th>{captions}</tr></table>")
