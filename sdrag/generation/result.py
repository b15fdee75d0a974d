"""The Result of one run of the chain: images, edge map, what was retrieved, resolved parameters, timings."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..files import atomic_save_image, atomic_write_bytes, atomic_write_json, safe_name
from ..plotting import PLAIN_TEXT, plain_text_figures
from ..retrieval.entries import Style


@dataclass
class Result:
    """One run of the chain: images, the edge map, what was retrieved, the resolved parameters and timings."""

    images: list[Image.Image]
    edges: Image.Image
    sketch: Image.Image
    hits: list[Style]
    references: list[tuple[Style, float]]
    params: dict
    timings: dict[str, float]
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def image(self) -> Image.Image:
        """The first generated image."""
        return self.images[0]

    def __repr__(self) -> str:
        style = self.style
        picked = repr(style.name if style else None)
        if style is not None and style.score is not None:
            picked += f" ({style.score:.3f})"
        w, h = self.image.size
        return (f"Result({len(self.images)} image(s) {w}x{h}, seed {self.seed}, style {picked}, "
                f"{self.timings.get('total', 0):.2f}s)")

    @property
    def seed(self) -> int:
        """The seed of the first image."""
        seeds = self.params["seed"]
        return seeds[0] if isinstance(seeds, list) else seeds

    @property
    def style(self) -> Style | None:
        """The (first) style reference used."""
        return self.references[0][0] if self.references else None

    def panel(self):
        """Return a matplotlib Figure: sketch | edges | style | result (prompt and style name as plain text)."""
        import matplotlib.pyplot as plt

        style = self.style
        style_title = "style: (none)"
        if style is not None:
            score = f" ({style.score:.3f})" if style.score is not None else ""
            more = f" +{len(self.references) - 1} blended" if len(self.references) > 1 else ""
            style_title = f"style: {style.name}{score}{more}"
        panes = [(self.sketch, "sketch"), (self.edges, f"edges {tuple(self.params['canny'])}"),
                 (style.image() if style else Image.new("RGB", (64, 64), "white"), style_title),
                 (self.image, f"result (seed {self.seed})")]
        with plain_text_figures():
            fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
            for ax, (img, title) in zip(axes, panes):
                ax.imshow(img)
                ax.set_title(title, fontsize=9, **PLAIN_TEXT)
                ax.axis("off")
            fig.suptitle(self.params["prompt"][:120], fontsize=10, **PLAIN_TEXT)
            fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        """The run's record (JSON-serialisable): params, hits, references, timings, info."""
        return {"params": self.params, "notes": self.notes, "hits": [h.to_dict() for h in self.hits],
                "references": [{"id": s.id, "name": s.name, "weight": w} for s, w in self.references],
                "timings": self.timings, "info": self.info}

    def save(self, folder: str | Path, name: str | None = None) -> dict[str, Path]:
        """Write image(s), edge map, panel and a JSON record into `folder` (atomically); return the paths."""
        import matplotlib.pyplot as plt

        folder = Path(folder)
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:10]
        stem = safe_name(name, "result name") if name else f"result-{self.seed}-{digest}"
        paths = {"image": atomic_save_image(self.image, folder / f"{stem}.png"),
                 "edges": atomic_save_image(self.edges, folder / f"{stem}_edges.png")}
        for i, img in enumerate(self.images[1:], start=1):
            paths[f"image_{i}"] = atomic_save_image(img, folder / f"{stem}_{i}.png")
        fig = self.panel()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        paths["panel"] = atomic_write_bytes(folder / f"{stem}_panel.png", buf.getvalue())
        paths["record"] = atomic_write_json(folder / f"{stem}.json", self.to_dict())
        return paths
