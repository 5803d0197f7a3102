"""Flame graphs of call trees (diagnostics/profile.py) as SVG: pure strings, no script.

The outermost frame is the bottom row; each frame sits on its caller, as wide as its
share of the samples. Hovering a frame shows its function, file:line, samples and
share (an SVG ``<title>``: no script, so the graph works in a dashboard page whose
Content-Security-Policy forbids inline script, and in a file opened offline).

The number of rectangles is bounded (:data:`MAX_RECTS`): the widest frames are drawn
first and frames narrower than :data:`MIN_WIDTH` pixels are left out (their time
shows in their caller), so a huge tree makes a graph of the same bounded size.
Every name from the tree is escaped. :data:`CSS` adds frame borders and a hover
outline; the graph is legible without it.
"""
from __future__ import annotations

import hashlib
import heapq
from html import escape
from typing import Any

WIDTH = 1200        # px of the whole graph
ROW = 18            # px per frame row
MAX_RECTS = 2_000   # frames drawn at most
MIN_WIDTH = 0.5     # px: narrower frames are left out
CHAR_WIDTH = 7.0    # px per character of the 12px labels (to cut labels that do not fit)

CSS = """\
svg.flame { font: 12px monospace; display: block; }
svg.flame rect { stroke: #fff; stroke-width: 0.5; }
svg.flame g.frame:hover rect { stroke: #000; stroke-width: 1; }
svg.flame text { pointer-events: none; fill: #000; }
"""


def _colour(name: str) -> str:
    """A warm colour fixed by the function's name (the same function looks the same
    in every graph)."""
    h = hashlib.blake2b(name.encode("utf-8", "backslashreplace"), digest_size=2).digest()
    return f"hsl({int(h[0]) * 50 // 255},{70 + h[1] % 25}%,{55 + h[1] % 15}%)"


def _label(node: dict[str, Any]) -> str:
    d = node["description"]
    return str(d.get("name", "")) or str(node.get("identifier", ""))


def _where(node: dict[str, Any]) -> str:
    d = node["description"]
    return f"{d.get('filename', '')}:{d.get('line_number', 0)}"


def _layout(tree: dict[str, Any], max_rects: int, min_count: float) -> list[tuple[dict[str, Any], float, int]]:
    """(node, first sample, depth) of the frames to draw, widest first, at most
    ``max_rects``; a frame is drawn only if its caller is."""
    out: list[tuple[dict[str, Any], float, int]] = []
    heap: list[tuple[int, int, dict[str, Any], float, int]] = []
    order = 0  # (ties keep insertion order; dicts are not comparable)

    def push_children(node: dict[str, Any], x: float, depth: int) -> None:
        nonlocal order
        for child in sorted(node["children"].values(), key=_label):
            if child["count"] >= min_count:
                heapq.heappush(heap, (-child["count"], order, child, x, depth))
                order += 1
            x += child["count"]

    push_children(tree, 0.0, 1)
    while heap and len(out) < max_rects:
        _, _, node, x, depth = heapq.heappop(heap)
        out.append((node, x, depth))
        push_children(node, x, depth + 1)
    return out


def flame_svg(tree: dict[str, Any], width: int = WIDTH, max_rects: int = MAX_RECTS) -> str:
    """An ``<svg>`` element drawing ``tree`` as a flame graph (an empty tree draws a note)."""
    total = tree.get("count", 0)
    if not total:
        return (f'<svg class="flame" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{ROW * 2}">'
                f'<text x="4" y="{ROW}">no samples</text></svg>')
    scale = width / total
    frames = _layout(tree, max_rects - 1, MIN_WIDTH / scale)
    depth = max((d for _, _, d in frames), default=0)
    height = (depth + 1) * ROW
    # (Font as attributes: the graph reads right in a page without this module's CSS.)
    parts = [f'<svg class="flame" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">',
             _rect("all", f"{total} samples, 100%", 0.0, height - ROW, width, "hsl(0,0%,80%)")]
    for node, x, d in frames:
        name = _label(node)
        share = 100 * node["count"] / total
        tip = f"{name}\n{_where(node)}\n{node['count']} samples, {share:.1f}%"
        line = node["description"].get("line")
        if line:
            tip += f"\n{line}"
        parts.append(_rect(name, tip, x * scale, height - (d + 1) * ROW, node["count"] * scale, _colour(name)))
    parts.append("</svg>")
    return "".join(parts)


def _rect(name: str, tip: str, x: float, y: float, w: float, fill: str) -> str:
    chars = int((w - 4) / CHAR_WIDTH)
    label = ""
    if chars >= 3:
        label = name if len(name) <= chars else name[: chars - 2] + ".."
    text = (f'<text x="{x + 2:.1f}" y="{y + ROW - 5:.1f}">{escape(label)}</text>' if label else "")
    return (f'<g class="frame"><title>{escape(tip)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{ROW - 1}" fill="{fill}"/>{text}</g>')


def flame_html(tree: dict[str, Any], title: str = "actorrt profile") -> str:
    """A whole HTML page with the flame graph of ``tree``: self-contained (inline CSS
    and SVG, no script, nothing fetched), to open offline or share."""
    e = escape
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }}
h1 {{ font-size: 1.3em; }}
p.note {{ color: #555; }}
{CSS}</style>
</head>
<body>
<h1>{e(title)}</h1>
<p class="note">{tree.get("count", 0)} samples. Each box is a line of a function, as wide as its share
of the samples, on top of its caller; hover a box for its file, line and share.</p>
{flame_svg(tree)}
</body>
</html>
"""
