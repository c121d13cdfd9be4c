"""A tiny builder for self-contained HTML reports (figures inlined as base64 PNG)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from spurlab.utils import atomic_write_bytes, atomic_write_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2rem auto;
padding:0 1rem;color:#1d2330;line-height:1.45}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
.meta{color:#667;font-size:.9rem}.verdict{background:#f3f6fb;border-left:4px solid #3b6fd8;padding:.8rem 1rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}td,th{border:1px solid #d6dae3;padding:.25rem .55rem;
text-align:right}th{background:#eef1f7}td:first-child,th:first-child{text-align:left}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #e3e6ee}
figcaption{color:#556;font-size:.85rem}
.warn{color:#a4420b}p,figcaption,h1,h2,h3,caption{overflow-wrap:anywhere}
.table-box{max-width:100%;overflow-x:auto;margin:.6rem 0}.table-box table{margin:0}
caption{text-align:left;caption-side:top;color:#556;font-size:.85rem;padding-bottom:.2rem}
"""


def figure_png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


class HtmlReport:
    """Collect headings, text, tables and figures; ``write(path)`` saves one HTML file."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self.figures: dict[str, bytes] = {}

    def heading(self, text: str, level: int = 2) -> HtmlReport:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def text(self, text: str, css_class: str | None = None) -> HtmlReport:
        cls = f' class="{css_class}"' if css_class else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def raw(self, markup: str) -> HtmlReport:
        self._parts.append(markup)
        return self

    def table(self, frame: pd.DataFrame, caption: str | None = None, max_rows: int = 200) -> HtmlReport:
        shown = frame.head(max_rows)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
        rows = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                       for row in shown.itertuples(index=False))
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        more = (f'<p class="meta">{len(frame) - max_rows} more rows in the CSV.</p>'
                if len(frame) > max_rows else "")
        # a wide table scrolls inside its own box instead of widening the page
        self._parts.append(f'<div class="table-box"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
                           f'</table></div>{more}')
        return self

    def figure(self, name: str, fig_or_png, caption: str = "") -> HtmlReport:
        """Inline a figure; ``name`` is its file stem when figures are also saved as PNG."""
        png = fig_or_png if isinstance(fig_or_png, bytes) else figure_png(fig_or_png)
        self.figures[name] = png
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">{cap}</figure>')
        return self

    def render(self) -> str:
        sub = f'<p class="meta">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        body = "\n".join(self._parts)
        return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>"
                f"<body><h1>{html.escape(self.title)}</h1>{sub}\n{body}\n</body></html>\n")

    def write(self, path: str | Path, save_figures: bool = False) -> Path:
        path = Path(path)
        if save_figures:
            for name, png in self.figures.items():
                atomic_write_bytes(path.parent / f"{name}.png", png)
        return atomic_write_text(path, self.render())
