"""The run explorer widget: one run folder as a grid of cell thumbnails, two axes at a time.

A thin skin over `sdrag.reports.explore.explorer_data`, which the report page's explorer reads too. X and Y
pick the grid's columns and rows, "within" sets one more axis side by side inside each column (seeds, by
default), and every other axis gets a selector holding it at one value. With `watch`, a background thread
redraws the grid whenever the folder's rows/ change, so a sweep can be watched while it runs.
"""

from __future__ import annotations

import html
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import ipywidgets as w

from ..generation.params import Params
from ..reports.explore import axis_label, expected_cells, explorer_data, sort_key
from ..runs.folder import OK, load_run
from .widgets import error_html

NONE = "(none)"
# Toggle buttons read well for a few short values; longer axes get a slider.
_TOGGLE_MAX = 4
# viridis, sampled: dark for a metric's minimum, yellow for its maximum (readable by colour-blind users).
_STOPS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def span_text(lo: float, hi: float) -> tuple[str, str]:
    """`lo` and `hi` with the fewest decimals (2 to 8) that tell them apart."""
    for decimals in range(2, 9):
        a, b = f"{lo:.{decimals}f}", f"{hi:.{decimals}f}"
        if a != b:
            break
    return a, b


def colour(t: float) -> str:
    """A CSS colour for `t` in [0, 1] on the viridis scale."""
    t = min(max(t, 0.0), 1.0) * (len(_STOPS) - 1)
    i = min(int(t), len(_STOPS) - 2)
    f = t - i
    rgb = (round(a + (b - a) * f) for a, b in zip(_STOPS[i], _STOPS[i + 1]))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _text(value) -> str:
    """A parameter value as the explorer shows it, escaped (None shows as a dash)."""
    return "—" if value is None else html.escape(axis_label(value))


def _style_lines(data: dict, cell: dict) -> list[str]:
    """The styles a cell used (by name, with weight) and retrieved (by name, with score)."""
    def name(sid: str) -> str:
        return html.escape(data["styles"].get(sid, {}).get("name") or sid)

    unused = "" if cell["style_used"] else " <b>unused</b> (IP-Adapter scale 0: no style reached the image)"
    used = ", ".join(f"{name(s)} (weight {_text(wt)})" for s, wt in cell["refs"]) or "none"
    why = cell.get("why") or [""] * len(cell["retrieved"])
    found = ", ".join(f"{name(s)} (score {_text(sc)}{' · ' + html.escape(w) if w else ''})"
                      for (s, sc), w in zip(cell["retrieved"], why)) or "none"
    return [f"<b>styles</b>: {used}{unused}", f"<b>retrieved</b>: {found}"]


def details_html(data: dict, cell: dict) -> str:
    """Everything known about one cell as HTML: every parameter (those common to the run too), metrics, time,
    styles by name and the error; all user text escaped."""
    params = {**data["common"][cell["run"]], **cell["p"]}
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{_text(params[n])}</td></tr>"
                   for n in Params.names() if n in params)
    metrics = ", ".join(f"{html.escape(m)} {'—' if v is None else f'{v:.4f}'}"
                        for m, v in zip(data["metrics"], cell["m"])) or "none"
    seconds = "—" if cell["seconds"] is None else f"{cell['seconds']:.2f} s"
    peak = "" if cell["peak_mb"] is None else f" · peak {cell['peak_mb']:.0f} MB"
    error = f"<div style='color:#a00;white-space:pre-wrap'><b>error</b>: {html.escape(cell['error'])}</div>" \
        if cell["error"] else ""
    lines = [f"<b>cell {html.escape(cell['id'])}</b> · {html.escape(cell['status'])}",
             f"<b>metrics</b>: {metrics}", f"<b>time</b>: {seconds}{peak}", *_style_lines(data, cell)]
    return "<br>".join(lines) + error + f"<table style='font-size:12px'>{rows}</table>"


@dataclass
class Snapshot:
    """One reading of a run folder: the explorer data, each axis's values in numeric order, cells by value."""

    folder: Path
    data: dict
    axes: dict[str, list[str]]
    cells: dict[tuple, dict]
    expected: int
    read_at: str

    @classmethod
    def read(cls, run_dir: str | Path) -> Snapshot:
        """Read `run_dir` (thumbnails made in its thumbs/ as needed); a SweepError says why it cannot."""
        run = load_run(run_dir)
        data = explorer_data(run, run.out_dir)
        labels = [a["values"] for a in data["axes"]]
        cells = {tuple(values[i] for values, i in zip(labels, c["v"])): c for c in data["cells"]}
        axes = {a["name"]: sorted(a["values"], key=sort_key) for a in data["axes"]}
        return cls(run.out_dir, data, axes, cells, expected_cells(run.manifest["spec"]),
                   time.strftime("%H:%M:%S"))

    def status(self) -> str:
        """'N of M cells done' with failures and the time of this reading."""
        cells = self.data["cells"]
        failed = sum(c["status"] != OK for c in cells)
        failures = f" ({failed} failed)" if failed else ""
        return f"<b>{html.escape(self.data['runs'][0]['name'])}</b> · {len(cells)} of {self.expected} cells done" \
               f"{failures} · updated {self.read_at}"

    def metric_range(self, metric: str) -> tuple[float, float] | None:
        """The smallest and largest value of `metric` over the run's cells (None when no cell has one)."""
        at = self.data["metrics"].index(metric)
        found = [c["m"][at] for c in self.data["cells"] if c["m"][at] is not None]
        return (min(found), max(found)) if found else None


def _rows_signature(folder: Path) -> tuple:
    """What changes when a sweep records a cell or starts again: rows/ files and manifest.json, with mtimes."""
    found = []
    for path in [folder / "manifest.json", *(folder / "rows").glob("*.json")]:
        try:
            st = path.stat()
        except OSError:  # not there yet, or removed between listing and stat: absent either way
            continue
        found.append((path.name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(found))


class RunExplorer:
    """A run folder as a grid of thumbnails: X and Y axes as dropdowns, the other axes held by selectors, a
    details button under each cell; `watch` seconds: redraw whenever the sweep records a cell (`close()` stops)."""

    def __init__(self, run_dir: str | Path, watch: float | None = None, *, tile: int = 128):
        """Open `run_dir` (a sweep's out_dir, finished or still running) and show cells `tile` px wide."""
        self.run_dir, self.tile = Path(run_dir), tile
        self.snapshot: Snapshot | None = None
        self._lock = threading.RLock()
        self._busy = False  # set while the explorer itself moves the dropdowns: no redraw per change
        self._chosen: dict[str, str] = {}  # other axes' values as the user left them, kept across redraws
        self._selectors: dict[str, w.ValueWidget] = {}
        self._shown: list[str] = []
        self._buttons: dict[str, w.Button] = {}
        self._signature: tuple = ()
        self.x, self.y = w.Dropdown(description="X"), w.Dropdown(description="Y")
        self.within = w.Dropdown(description="within")
        self.colour = w.Dropdown(description="colour by")
        for dropdown in (self.x, self.y, self.within):
            dropdown.observe(self._on_axis, names="value")
        self.colour.observe(self._on_colour, names="value")
        self.status, self.message, self.legend = w.HTML(), w.HTML(), w.HTML()
        self.selector_box, self.grid = w.VBox(), w.GridBox()
        self.details, self.details_image = w.HTML(), w.Image(format="png", layout=w.Layout(
            width="256px", height="auto", object_fit="contain", flex="0 0 auto"))
        self.widget = w.VBox([self.status, self.message, w.HBox([self.x, self.y, self.within, self.colour]),
                              self.selector_box, self.legend, self.grid,
                              w.HBox([self.details_image, self.details], layout=w.Layout(align_items="flex-start"))])
        self._stop = threading.Event()
        self.refresh()
        self._thread = None
        if watch is not None:
            self._thread = threading.Thread(target=self._watch, args=(watch,), daemon=True,
                                            name=f"sdrag-explorer-{self.run_dir.name}")
            self._thread.start()

    # -- reading -------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the folder again and redraw, keeping the axes, selections and colouring the user chose."""
        with self._lock:
            self._signature = _rows_signature(self.run_dir)
            try:
                snapshot = Snapshot.read(self.run_dir)
            except Exception as exc:  # shown in the widget: an unreadable folder must not leave a traceback
                self.message.value = error_html(exc)
                return
            self.snapshot, self.message.value = snapshot, ""
            self._set_options(snapshot)
            self._redraw_safely()

    def _watch(self, every: float) -> None:
        while not self._stop.wait(every):
            if _rows_signature(self.run_dir) != self._signature:
                self.refresh()

    def close(self) -> None:
        """Stop watching the folder (the widget stays as it was last drawn)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- controls ------------------------------------------------------------------------------------------

    @contextmanager
    def _quiet(self):
        """While the explorer itself sets its controls, their observers neither redraw nor record a choice."""
        was, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = was

    def _set_options(self, snapshot: Snapshot) -> None:
        """Give the dropdowns this reading's axes and metrics; a choice still on offer stays chosen."""
        names, first = list(snapshot.axes), not self.x.options
        seed = "seed" if "seed" in names[2:] else NONE
        defaults = (names[0] if names else NONE, names[1] if len(names) > 1 else NONE, seed)
        with self._quiet():
            for dropdown, default in zip((self.x, self.y, self.within), defaults):
                # "(none)" chosen by the user stays; an axis the folder no longer has falls back to the default.
                kept = dropdown.value in names or (dropdown.value == NONE and not first)
                keep = dropdown.value if kept else default
                dropdown.options = [*names, NONE] if dropdown is self.x else [NONE, *names]
                dropdown.value = keep
            keep = self.colour.value
            self.colour.options = [NONE, *snapshot.data["metrics"]]
            self.colour.value = keep if keep in self.colour.options else NONE

    def _on_axis(self, change) -> None:
        """An axis cannot be two roles: the role that held the newly chosen axis takes the old one instead."""
        # Inside the lock: a user's change made while the watcher redraws waits for it rather than being lost.
        with self._lock:
            if self._busy:
                return
            with self._quiet():
                for other in (self.x, self.y, self.within):
                    if other is not change["owner"] and other.value == change["new"] != NONE:
                        other.value = change["old"]
            self._redraw_safely()

    def _on_colour(self, _change) -> None:
        with self._lock:
            if not self._busy:
                self._redraw_safely()

    def _selector(self, name: str, values: list[str]) -> w.ValueWidget:
        """The widget holding axis `name` at one value (made once per axis and set of values)."""
        made = self._selectors.get(name)
        if made is None or list(made.options) != values:
            kind = w.ToggleButtons if len(values) <= _TOGGLE_MAX and max(map(len, values), default=0) <= 12 \
                else w.SelectionSlider
            made = kind(options=values, description=name, style={"description_width": "initial"})
            made.observe(lambda change, n=name: self._on_select(n, change["new"]), names="value")
            self._selectors[name] = made
        with self._quiet():
            made.value = self._chosen.get(name) if self._chosen.get(name) in values else values[0]
        return made

    def _on_select(self, name: str, value: str) -> None:
        with self._lock:
            if not self._busy:
                self._chosen[name] = value
                self._redraw_safely()

    # -- drawing -------------------------------------------------------------------------------------------

    def _redraw_safely(self) -> None:
        with self._lock:
            if self.snapshot is None:
                return
            try:
                self._redraw(self.snapshot)
            except Exception as exc:  # shown in the widget, never a traceback (a thumbnail gone mid-redraw)
                self.message.value = error_html(exc)

    def _redraw(self, snap: Snapshot) -> None:
        roles = [d.value for d in (self.x, self.y, self.within)]
        others = [n for n in snap.axes if n not in roles]
        self.selector_box.children = [self._selector(n, snap.axes[n]) for n in others]
        for name in others:
            self._chosen[name] = self._selectors[name].value
        xs, ys, ins = ([(v, n) for n in snap.axes.get(v, [])] or [(NONE, None)] for v in roles)
        columns = [(x, i) for x in xs for i in ins]
        children = [w.HTML("")] + [w.HTML(self._label([x, i])) for x, i in columns]
        self._shown, self._buttons = [], {}
        scale = self._scale(snap)
        for y in ys:
            children.append(w.HTML(self._label([y])))
            for x, i in columns:
                children.append(self._tile(snap, {**self._chosen, **dict([x, y, i])}, scale))
        self.grid.children = children
        self.grid.layout = w.Layout(grid_template_columns=f"auto repeat({len(columns)}, {self.tile + 8}px)",
                                    grid_gap="4px", overflow="auto")
        self.status.value = snap.status()

    @staticmethod
    def _label(pairs: list[tuple]) -> str:
        text = "<br>".join(f"{html.escape(n)}: {html.escape(v)}" for n, v in pairs if n != NONE)
        return f"<div style='font-size:12px;text-align:center'>{text}</div>"

    def _scale(self, snap: Snapshot):
        """The outline colour of a cell by the chosen metric (None: no colouring), and its legend."""
        metric = self.colour.value
        found = snap.metric_range(metric) if metric != NONE else None
        if found is None:
            self.legend.value = "" if metric == NONE else f"no cell has {html.escape(metric)} yet"
            return None
        lo, hi = found
        low, high = span_text(lo, hi)
        bar = ", ".join(colour(k / 4) for k in range(5))
        self.legend.value = (f"<span style='font-size:12px'>{html.escape(metric)}: min {low} <span style='display:"
                             f"inline-block;width:120px;height:10px;background:linear-gradient(to right,{bar})'>"
                             f"</span> max {high} (grey: no value)</span>")
        at = snap.data["metrics"].index(metric)
        return lambda cell: "#bbb" if cell["m"][at] is None else colour(
            0.5 if hi == lo else (cell["m"][at] - lo) / (hi - lo))

    def _tile(self, snap: Snapshot, chosen: dict, scale) -> w.Widget:
        """One grid place: the cell's thumbnail, a red tile with its error, or 'pending' when not there yet."""
        cell = snap.cells.get(tuple(chosen.get(name) for name in snap.axes))
        box = w.Layout(width=f"{self.tile + 8}px", padding="2px")
        if cell is None:
            word = "pending" if len(snap.data["cells"]) < snap.expected else "no cell"
            return w.HTML(f"<div style='color:#888;border:1px dashed #bbb;height:{self.tile // 2}px;"
                          f"text-align:center'>{word}</div>", layout=box)
        self._shown.append(cell["id"])
        button = w.Button(description="details", tooltip=cell["id"], layout=w.Layout(width=f"{self.tile}px"))
        button.on_click(lambda _b, c=cell: self.show_details(c["id"]))
        self._buttons[cell["id"]] = button
        if cell["status"] != OK:
            face = w.HTML(f"<div style='background:#fdd;color:#a00;height:{self.tile}px;overflow:hidden;"
                          f"font-size:11px;white-space:pre-wrap'><b>failed</b>: {html.escape(cell['error'])}</div>")
        elif cell["thumb"]:
            face = w.Image(value=(snap.folder / unquote(cell["thumb"])).read_bytes(), format="jpeg",
                           layout=w.Layout(width=f"{self.tile}px"))
        else:
            face = w.HTML("<div style='color:#a00'>image missing</div>")
        if scale is not None:
            box.border = f"3px solid {scale(cell)}"
        return w.VBox([face, button], layout=box)

    # -- what tests and users read -------------------------------------------------------------------------

    def shown_ids(self) -> list[str]:
        """The ids of the cells the grid shows now, row by row."""
        return list(self._shown)

    def button(self, cell_id: str) -> w.Button:
        """The details button under a shown cell."""
        return self._buttons[cell_id]

    def show_details(self, cell_id: str) -> None:
        """Show one cell's parameters, metrics, styles and error, and its image at full size."""
        snap = self.snapshot
        cell = next(c for c in snap.data["cells"] if c["id"] == cell_id)
        self.details.value = details_html(snap.data, cell)
        image = snap.folder / unquote(cell["image"]) if cell["image"] else None
        self.details_image.value = image.read_bytes() if image is not None and image.is_file() else b""
