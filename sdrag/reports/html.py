"""The sweep report: report.html, an explorer over the run folder's cells (opens from disk, fetches nothing but
the folder's own thumbnails), plus the grid PNG pages for papers. Every user string is escaped."""

from __future__ import annotations

import html
import io
from pathlib import Path

from PIL import Image

from ..files import atomic_write_bytes, image_bytes
from ..runs.folder import SweepRun, load_run
from .explorer import write_explorer
from .grids import grid_pages


def png(fig_or_img) -> bytes:
    """PNG bytes of a PIL image or a matplotlib figure (which is closed)."""
    if isinstance(fig_or_img, Image.Image):
        return image_bytes(fig_or_img)
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig_or_img.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig_or_img)
    return buf.getvalue()


def write_grid_pages(run: SweepRun) -> list[tuple[str, str]]:
    """Write the X/Y/Z grid pages as grid_NN.png beside the report; return (file name, title) per page."""
    out = run.out_dir
    pages = grid_pages(run)
    written = []
    for n, (page, img) in enumerate(pages):
        atomic_write_bytes(out / f"grid_{n:02d}.png", png(img))
        written.append((f"grid_{n:02d}.png", page.title))
    for stale in out.glob("grid_*.png"):
        # Pages a previous report had beyond this one's count would otherwise pass for current ones.
        if stale.stem[5:].isdigit() and int(stale.stem[5:]) >= len(pages):
            stale.unlink()
    return written


def write_report(run: SweepRun) -> Path:
    """Write the run's grid pages and its report.html (the explorer, reading thumbnails from the folder)."""
    pages = write_grid_pages(run)
    links = "".join(f"<li><a href='{html.escape(name)}'>{html.escape(name)}</a> — {html.escape(title)}</li>"
                    for name, title in pages)
    extra = f"<section><h2>Grid pages (PNG, for papers)</h2><ul>{links}</ul></section>" if pages else ""
    return write_explorer([run], run.folder.report_path, title=f"sdrag sweep {run.manifest['name']}", extra=extra)


def write_standalone(run_dir: str | Path, out_path: str | Path) -> Path:
    """Write one self-contained HTML file of a (small) run to share: the explorer with every image inside."""
    return write_explorer([load_run(run_dir)], Path(out_path), title=f"sdrag sweep {Path(run_dir).name}",
                          standalone=True)
