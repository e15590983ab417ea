"""Small hand-written SVG charts, rendered on the server.

No JavaScript, no CDN, no network: the dashboard works offline, prints, and
shows in a screenshot. Every chart is one ``<svg>`` with a ``viewBox`` (it
scales to its container), a ``<title>`` per bar or point (the browser's
tooltip), ``role="img"`` and an ``aria-label``. Every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

# One colour per delivery status, used by every chart and legend.
STATUS_COLOURS = {
    "sent": "#43a047",
    "delivered": "#1b5e20",
    "pending": "#1e88e5",
    "sending": "#64b5f6",
    "digest": "#8e24aa",
    "skipped": "#9e9e9e",
    "cancelled": "#8d6e63",
    "bounced": "#fb8c00",
    "failed": "#e53935",
    "dead": "#7f0000",
}
SERIES_COLOURS = ("#1e88e5", "#8e24aa", "#43a047", "#fb8c00", "#e53935", "#00897b", "#6d4c41")
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:12px"
AXIS = "#757575"
GRID = "#e0e0e0"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float]
    colour: str


def nice_ceiling(value: float) -> float:
    """The next 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def short(value: float) -> str:
    """1234 -> "1.2k", 3400000 -> "3.4M"; small values as they are."""
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M".replace(".0M", "M")
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    if value == int(value):
        return str(int(value))
    return f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}"


def seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def legend(series: Sequence[Series]) -> SafeString:
    return format_html(
        '<ul class="chart-legend">{}</ul>',
        format_html_join(
            "",
            '<li><span class="swatch" style="background:{}"></span>{}</li>',
            ((s.colour, s.name) for s in series),
        ),
    )


def _svg(width: int, height: int, label: str, body: str) -> SafeString:
    """Scales down with its container, never up (text stays at its size)."""
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" width="{}" height="{}" role="img" '
        'aria-label="{}" xmlns="http://www.w3.org/2000/svg" style="{};max-width:100%;'
        'height:auto">{}</svg>',
        width,
        height,
        width,
        height,
        label,
        FONT,
        mark_safe(body),  # noqa: S308 - built from escaped parts below
    )


def _y_axis(top: float, left: int, plot_w: int, plot_h: int, pad_top: int, fmt=short) -> str:
    parts = []
    for i in range(5):
        value = top * i / 4
        y = pad_top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end" fill="{AXIS}">'
            f"{escape(fmt(value))}</text>"
        )
    return "".join(parts)


def _x_labels(labels: Sequence[str], left: int, step: float, y: float, room: float) -> str:
    """Every n-th label, so that they do not touch (``room``: the plot width)."""
    widest = max((len(label) for label in labels), default=1) * 6.8 + 10
    every = max(1, math.ceil(len(labels) * widest / room))
    parts = []
    for i, label in enumerate(labels):
        if i % every:
            continue
        x = left + step * (i + 0.5)
        anchor = "middle"
        if x + widest / 2 > left + room:  # the last one ends at the edge
            x, anchor = left + room, "end"
        parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{AXIS}">'
            f"{escape(label)}</text>"
        )
    return "".join(parts)


def stacked_bars(
    labels: Sequence[str],
    series: Sequence[Series],
    label: str,
    width: int = 560,
    height: int = 220,
    partial_last: bool = False,
) -> SafeString:
    """Vertical bars per label, each stacking the series' values; with
    ``partial_last`` the last bar (the current, unfinished bucket) is paler."""
    left, right, pad_top, bottom = 48, 8, 10, 24
    plot_w, plot_h = width - left - right, height - pad_top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = nice_ceiling(max(totals, default=0))
    step = plot_w / max(1, len(labels))
    bar_w = max(1.0, step * 0.78)
    parts = [_y_axis(top, left, plot_w, plot_h, pad_top)]
    for i, name in enumerate(labels):
        y = pad_top + plot_h
        x = left + step * i + (step - bar_w) / 2
        pale = ' opacity="0.5"' if partial_last and i == len(labels) - 1 else ""
        for s in series:
            value = s.values[i]
            if not value:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{s.colour}"{pale}><title>{escape(name)}: {escape(s.name)} {value:,}'
                "</title></rect>"
            )
    parts.append(_x_labels(labels, left, step, height - 8, plot_w))
    return _svg(width, height, label, "".join(parts))


def lines(
    labels: Sequence[str],
    series: Sequence[Series],
    label: str,
    width: int = 560,
    height: int = 220,
    partial_last: bool = False,
) -> SafeString:
    """One line (with a dot per value) per series; with ``partial_last`` the
    last stretch (to the current, unfinished bucket) is dashed."""
    left, right, pad_top, bottom = 48, 8, 10, 24
    plot_w, plot_h = width - left - right, height - pad_top - bottom
    top = nice_ceiling(max((v for s in series for v in s.values), default=0))
    step = plot_w / max(1, len(labels))
    parts = [_y_axis(top, left, plot_w, plot_h, pad_top)]
    for s in series:
        points = [
            (left + step * (i + 0.5), pad_top + plot_h - plot_h * value / top)
            for i, value in enumerate(s.values)
        ]
        whole = points[:-1] if partial_last and len(points) > 1 else points
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in whole)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="2"/>'
        )
        if whole is not points:
            (x1, y1), (x2, y2) = points[-2], points[-1]
            parts.append(
                f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                f'stroke="{s.colour}" stroke-width="2" stroke-dasharray="4 3"/>'
            )
        parts += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{s.colour}">'
            f"<title>{escape(labels[i])}: {escape(s.name)} {s.values[i]:,}</title></circle>"
            for i, (x, y) in enumerate(points)
        ]
    parts.append(_x_labels(labels, left, step, height - 8, plot_w))
    return _svg(width, height, label, "".join(parts))


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    value: float
    colour: str


def horizontal_bars(
    rows: Sequence[tuple[str, Sequence[Segment]]],
    label: str,
    width: int = 560,
    fmt=short,
    left: int = 150,
) -> SafeString:
    """One horizontal bar per row, stacking its segments; the total at the end."""
    right, row_h, pad = 56, 22, 6
    height = max(1, len(rows)) * row_h + pad * 2
    plot_w = width - left - right
    top = max((sum(seg.value for seg in segs) for _, segs in rows), default=0) or 1
    parts = []
    for i, (name, segments) in enumerate(rows):
        y = pad + i * row_h
        parts.append(
            f'<text x="{left - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end" fill="currentColor">'
            f"{escape(name)}</text>"
        )
        x = float(left)
        for seg in segments:
            if not seg.value:
                continue
            w = plot_w * seg.value / top
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="{row_h - 6}" '
                f'fill="{seg.colour}"><title>{escape(name)}: {escape(seg.name)} '
                f"{escape(fmt(seg.value))}</title></rect>"
            )
            x += w
        total = sum(seg.value for seg in segments)
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + row_h / 2 + 4:.1f}" fill="{AXIS}">'
            f"{escape(fmt(total))}</text>"
        )
    return _svg(width, height, label, "".join(parts))


def grouped_bars(
    rows: Sequence[tuple[str, Sequence[Segment]]],
    label: str,
    width: int = 560,
    fmt=seconds,
) -> SafeString:
    """Horizontal bars side by side per row (p50, p95, p99), each with its value."""
    left, right, bar_h, gap, pad = 172, 84, 12, 10, 6
    per_row = max((len(segs) for _, segs in rows), default=1)
    row_h = per_row * bar_h + gap
    height = max(1, len(rows)) * row_h + pad * 2
    plot_w = width - left - right
    top = max((seg.value for _, segs in rows for seg in segs), default=0) or 1
    parts = []
    for i, (name, segments) in enumerate(rows):
        y = pad + i * row_h
        parts.append(
            f'<text x="{left - 8}" y="{y + per_row * bar_h / 2 + 4:.1f}" text-anchor="end" '
            f'fill="currentColor">{escape(name)}</text>'
        )
        for j, seg in enumerate(segments):
            w = max(0.5, plot_w * seg.value / top)
            by = y + j * bar_h
            parts.append(
                f'<rect x="{left}" y="{by + 1}" width="{w:.1f}" height="{bar_h - 2}" '
                f'fill="{seg.colour}"><title>{escape(name)} {escape(seg.name)}: '
                f"{escape(fmt(seg.value))}</title></rect>"
                f'<text x="{left + w + 5:.1f}" y="{by + bar_h - 2.5:.1f}" fill="{AXIS}">'
                f"{escape(seg.name)} {escape(fmt(seg.value))}</text>"
            )
    return _svg(width, height, label, "".join(parts))
