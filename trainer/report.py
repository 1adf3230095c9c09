"""A version's report: one self-contained HTML page a person would rather look at than read.

Training curves, the test split's confusion matrix as a heatmap, per-class precision, recall
and F1, and the units that weigh most toward each class (the model card's
globalExplanation). The figures are inline SVG drawn here: no script, no font or style from
the network, so the page opens anywhere, offline, from the store. Class names and units come
from the user's data, so every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

# Beyond this many classes a heatmap's cells are too small to read; the table still lists all.
MAX_HEATMAP_CLASSES = 40
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI','Noto Sans CJK SC','WenQuanYi Zen Hei',
sans-serif;margin:24px;color:#222;
max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#666;margin:0 0 16px}.row{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;border:1px solid #ddd;border-radius:6px;padding:8px;background:#fff}
figcaption{font-size:13px;color:#444;margin-bottom:4px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
svg text{font-family:inherit;font-size:11px;fill:#333}
.metrics span{display:inline-block;margin-right:18px;font-size:15px}
"""


def render_report(
    card: Mapping[str, Any], metrics: Mapping[str, Any], history: Mapping[str, Sequence[float]]
) -> str:
    """The page for a version: `card` is model_card.json, `metrics` metrics.json, `history`
    the per-epoch figures (Keras' names: loss, accuracy, val_loss, val_accuracy)."""
    name = escape(str(card.get("name", "model")))
    version = escape(str(card.get("version", "")))
    classes = [str(c) for c in metrics.get("classes") or card.get("classes") or []]
    headline = "".join(
        f"<span><b>{key}</b> {float(metrics[key]):.4f}</span>"
        for key in ("accuracy", "precision", "recall", "f1")
        if isinstance(metrics.get(key), int | float)
    )
    examples = metrics.get("examples") or {}
    counts = ", ".join(f"{escape(str(k))} {int(v)}" for k, v in examples.items())
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{name} version {version}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{name} — version {version}</h1>",
        f"<p class='sub'>{escape(str(card.get('architecture', '')))}, trained "
        f"{escape(str(card.get('trainedAt', '')))}; examples: {counts}</p>",
        f"<p class='metrics'>test split (macro averages): {headline}</p>",
        "<h2>Training curves</h2><div class='row'>",
        _figure("Loss per epoch", _line_chart(_series(history, "loss"), y_label="loss")),
        _figure(
            "Accuracy per epoch",
            _line_chart(_series(history, "accuracy"), y_label="accuracy", unit_range=True),
        ),
        "</div>",
        "<h2>Test split</h2><div class='row'>",
        _figure(
            "Confusion matrix (rows: true class, columns: predicted; colour: share of the row)",
            _heatmap(metrics.get("confusion_matrix") or [], classes),
        ),
        _figure("Per-class precision, recall, F1", _per_class(metrics.get("per_class") or {})),
        "</div>",
        _top_units(card.get("globalExplanation") or {}),
        "</body></html>",
    ]
    return "\n".join(parts)


def _figure(caption: str, body: str) -> str:
    return f"<figure><figcaption>{escape(caption)}</figcaption>{body}</figure>"


def _series(history: Mapping[str, Sequence[float]], metric: str) -> dict[str, list[float]]:
    found = {}
    for label, key in (("train", metric), ("validation", f"val_{metric}")):
        values = [float(v) for v in history.get(key) or [] if math.isfinite(float(v))]
        if values:
            found[label] = values
    return found


def _line_chart(
    series: Mapping[str, Sequence[float]], *, y_label: str, unit_range: bool = False
) -> str:
    width, height, left, right, top, bottom = 460, 260, 48, 12, 12, 34
    if not series:
        return "<p>no epochs recorded</p>"
    epochs = max(len(values) for values in series.values())
    everything = [v for values in series.values() for v in values]
    low, high = (0.0, 1.0) if unit_range else (min(0.0, min(everything)), max(everything))
    if high <= low:
        high = low + 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(epoch: int) -> float:  # epochs are 1-based
        return left + (plot_w * (epoch - 1) / (epochs - 1) if epochs > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (high - low))

    shapes = [
        f"<rect x='{left}' y='{top}' width='{plot_w}' height='{plot_h}' fill='#fafafa' "
        "stroke='#ccc'/>"
    ]
    for tick in range(5):
        value = low + (high - low) * tick / 4
        shapes.append(
            f"<line x1='{left}' x2='{left + plot_w}' y1='{y(value):.1f}' y2='{y(value):.1f}' "
            f"stroke='#e5e5e5'/><text x='{left - 6}' y='{y(value) + 4:.1f}' "
            f"text-anchor='end'>{value:.2f}</text>"
        )
    step = max(1, math.ceil(epochs / 10))
    for epoch in range(1, epochs + 1, step):
        shapes.append(
            f"<text x='{x(epoch):.1f}' y='{top + plot_h + 14}' text-anchor='middle'>{epoch}</text>"
        )
    shapes.append(
        f"<text x='{left + plot_w / 2}' y='{height - 4}' text-anchor='middle'>epoch</text>"
        f"<text x='12' y='{top + plot_h / 2}' text-anchor='middle' "
        f"transform='rotate(-90 12 {top + plot_h / 2})'>{escape(y_label)}</text>"
    )
    for index, (label, values) in enumerate(series.items()):
        color = _COLORS[index % len(_COLORS)]
        points = " ".join(f"{x(i + 1):.1f},{y(v):.1f}" for i, v in enumerate(values))
        shapes.append(
            f"<polyline class='curve' points='{points}' fill='none' stroke='{color}' "
            "stroke-width='2'/>"
        )
        shapes.extend(
            f"<circle cx='{x(i + 1):.1f}' cy='{y(v):.1f}' r='2.5' fill='{color}'/>"
            for i, v in enumerate(values)
        )
        legend_y = top + 14 + 16 * index
        shapes.append(
            f"<rect x='{left + plot_w - 96}' y='{legend_y - 9}' width='12' height='12' "
            f"fill='{color}'/><text x='{left + plot_w - 80}' y='{legend_y + 1}'>"
            f"{escape(label)}</text>"
        )
    return _svg(width, height, "".join(shapes))


def _heatmap(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    size = len(classes)
    if not size or len(matrix) != size or any(len(row) != size for row in matrix):
        return "<p>no confusion matrix recorded</p>"
    if size > MAX_HEATMAP_CLASSES:
        return f"<p>{size} classes: too many to draw; see the table</p>"
    cell = max(18, min(72, 360 // size))
    label_w, label_h = 110, 80  # row labels on the left, column labels slanted above
    width, height = label_w + cell * size + 60, label_h + cell * size + 10
    shapes = []
    for row, counts in enumerate(matrix):
        total = sum(int(c) for c in counts) or 1
        for column, count in enumerate(counts):
            share = int(count) / total
            # White (0) to dark blue (1): the diagonal stands out when the model is right.
            shade = (int(247 - 239 * share), int(251 - 203 * share), int(255 - 148 * share))
            text_color = "#fff" if share > 0.5 else "#222"
            cx, cy = label_w + column * cell, label_h + row * cell
            shapes.append(
                f"<rect class='cell' x='{cx}' y='{cy}' width='{cell}' height='{cell}' "
                f"fill='rgb{shade}' stroke='#fff'><title>true {escape(classes[row])}, predicted "
                f"{escape(classes[column])}: {int(count)}</title></rect>"
            )
            if cell >= 30:
                shapes.append(
                    f"<text x='{cx + cell / 2}' y='{cy + cell / 2 + 4}' text-anchor='middle' "
                    f"style='fill:{text_color}'>{int(count)}</text>"
                )
    for index, name in enumerate(classes):
        short = escape(name[:16])
        row_middle = label_h + index * cell + cell / 2
        column_middle = label_w + index * cell + cell / 2
        shapes.append(
            f"<text x='{label_w - 6}' y='{row_middle + 4}' text-anchor='end'>{short}</text>"
            f"<text x='{column_middle}' y='{label_h - 6}' text-anchor='start' "
            f"transform='rotate(-45 {column_middle} {label_h - 6})'>{short}</text>"
        )
    return _svg(width, height, "".join(shapes))


def _per_class(per_class: Mapping[str, Mapping[str, Any]]) -> str:
    if not per_class:
        return "<p>no per-class figures recorded</p>"
    rows = [
        "<table><tr><th class='l'>class</th><th>precision</th><th>recall</th><th>F1</th>"
        "<th>support</th><th class='l'>F1</th></tr>"
    ]
    for name, figures in per_class.items():
        f1 = float(figures.get("f1", 0.0))
        bar = _svg(
            120,
            12,
            f"<rect x='0' y='1' width='120' height='10' fill='#eee'/>"
            f"<rect class='bar' x='0' y='1' width='{120 * max(0.0, min(f1, 1.0)):.1f}' "
            "height='10' fill='#2ca02c'/>",
        )
        rows.append(
            f"<tr><td class='l'>{escape(str(name))}</td>"
            + "".join(
                f"<td>{float(figures.get(key, 0.0)):.4f}</td>"
                for key in ("precision", "recall", "f1")
            )
            + f"<td>{int(figures.get('support', 0))}</td><td class='l'>{bar}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _top_units(explanation: Mapping[str, Any]) -> str:
    per_class = explanation.get("topUnitsPerClass") or {}
    if not per_class:
        return ""
    figures = []
    for name, units in per_class.items():
        units = [u for u in units if isinstance(u, Mapping)][:10]
        if not units:
            continue
        peak = max(float(u.get("meanAttribution", 0.0)) for u in units) or 1.0
        row_h, label_w, bar_w = 20, 90, 200
        shapes = []
        for index, unit in enumerate(units):
            value = float(unit.get("meanAttribution", 0.0))
            y = index * row_h
            shapes.append(
                f"<text x='{label_w - 6}' y='{y + 14}' text-anchor='end'>"
                f"{escape(str(unit.get('unit', ''))[:24])}</text>"
                f"<rect class='bar' x='{label_w}' y='{y + 3}' "
                f"width='{bar_w * max(value, 0.0) / peak:.1f}' height='{row_h - 6}' "
                f"fill='#ff7f0e'/><text x='{label_w + bar_w + 6}' y='{y + 14}'>{value:.3f}</text>"
            )
        figures.append(
            _figure(
                f"toward {name}",
                _svg(label_w + bar_w + 50, row_h * len(units) + 4, "".join(shapes)),
            )
        )
    how = escape(str(explanation.get("how", "")))
    return (
        "<h2>Units that weigh most toward each class</h2>"
        f"<p class='sub'>{how}</p><div class='row'>{''.join(figures)}</div>"
    )


def _svg(width: float, height: float, body: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img'>{body}</svg>"
    )
