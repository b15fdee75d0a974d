"""The RAG studio: sketch, prompt and knobs in; retrieved styles, edges and result out, never a stale picture.

What it shows is decided by plain functions in `widgets.py` (`same_settings`, `eta_text`, `style_line`, ...)
and `runs/spec.py` (`spec_from_params`, `write_spec`); `RagStudio` wires them to widgets.
"""

from __future__ import annotations

import html
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import ipywidgets as w
from PIL import Image

from ..errors import GenerationCancelled, SdragError
from ..files import pixels_sha256
from ..generation.canny import canny_edges
from ..generation.params import Params
from ..generation.result import Result
from ..images import SAMPLE_SKETCH, ImageLike, load_image
from ..retrieval.entries import Style
from ..runs.spec import spec_from_params, write_spec
from .widgets import (
    WIDE,
    Knobs,
    banner_html,
    candidates_html,
    caption,
    error_html,
    eta_text,
    png_bytes,
    read_upload,
    references_html,
    same_settings,
    seed_axis,
    settings_text,
    spec_stem,
    style_caption,
    style_line,
)

STALE, OUTDATED = "sdrag-stale", "sdrag-outdated"
# ipywidgets layouts have no opacity: a style sheet in an HTML widget gives the state classes their look.
CSS = ("<style>.sdrag-stale{opacity:.3;filter:grayscale(1)}.sdrag-outdated{opacity:.55}"
       ".sdrag-note{color:#a15c00;font-weight:bold}</style>")
NOTES = {"running": "generating — what is below is the previous result",
         "failed": "not updated: the last run failed — what is below is an earlier result",
         "outdated": "out of date — Generate to update"}
CANDIDATES = 5  # shown whatever top_k is, so a user sees what k=1 left out
HISTORY = 12


@dataclass(eq=False)  # one run is one entry: two runs are never "equal", whatever they hold
class Shot:
    """A result as the studio shows it: with the settings and sketch that made it, and the prompt's candidates."""

    result: Result
    params: Params
    sketch: Image.Image
    sketch_sha: str
    candidates: list[Style] = field(default_factory=list)
    number: int = 0

    @property
    def retrieved(self) -> bool:
        """Whether the style was retrieved (False: picked by hand)."""
        return self.result.info.get("retrieved", True)


class RagStudio(Knobs):
    """The interactive app: sketch, prompt and knobs in; retrieved styles, edges and result out.

    Whatever it shows is true now: results from other settings are greyed and marked, Save saves only a result
    of the current settings, and the edge panel follows the Canny sliders live. Earlier results stay in a
    history strip (a click brings one back with its settings); Send to sweep writes the settings as a spec.
    """

    def __init__(self, workbench, sketch: ImageLike = SAMPLE_SKETCH, params: Params | None = None,
                 out_dir: str | Path = "experiments/studio", spec_dir: str | Path | None = None):
        """Lay out the widgets over `workbench`, starting from `params` (defaults: the prototype's).

        Save writes into `out_dir`; Send to sweep into `spec_dir` (default: `specs/` beside `out_dir`).
        """
        self.wb = workbench
        self.out_dir = Path(out_dir)
        self.spec_dir = Path(spec_dir) if spec_dir is not None else self.out_dir.parent / "specs"
        self.shown: Shot | None = None
        self.history: list[Shot] = []
        self.history_buttons: list[w.Button] = []
        self._running = self._failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pace: tuple[float, int] | None = None
        super().__init__(workbench.library)
        self._build_outputs()
        self._set_sketch(load_image(sketch))
        self.set_params(params or Params(prompt="a neon glowing city street at night"))
        self._wire()
        self.widget = self._layout()

    @property
    def result(self) -> Result | None:
        """The result on show (current or not: see `state()`)."""
        return self.shown.result if self.shown else None

    # -- building ------------------------------------------------------------------------------------------

    def _build_outputs(self) -> None:
        self.banner = w.HTML(banner_html(self.wb.sources.preset))
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="sketch")
        self.generate_button = w.Button(description="Generate", button_style="primary")
        self.stop_button = w.Button(description="Stop", disabled=True)
        self.save_button = w.Button(description="Save", disabled=True,
                                    tooltip="saves the shown result (only while it matches the settings)")
        self.sweep_button = w.Button(description="Send to sweep", tooltip="write a sweep spec of these settings")
        self.progress = w.IntProgress(min=0, max=1, description="steps", style=WIDE)
        self.progress_text, self.note, self.sweep_note = w.HTML(), w.HTML(), w.HTML()
        self.hits, self.references, self.candidates = w.HTML(), w.HTML(), w.HTML()
        self.images = {name: w.Image(format="png", layout=w.Layout(width="210px"))
                       for name in ("sketch", "edges", "style", "result")}
        self.captions = {name: w.HTML(layout=w.Layout(width="210px")) for name in self.images}
        self.panels = {name: w.VBox([self.images[name], self.captions[name]]) for name in self.images}
        self.output = w.VBox([self.hits, w.HBox([self.panels["style"], self.panels["result"]]), self.references,
                              self.candidates], layout=w.Layout(width="auto"))
        self.history_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))

    def _layout(self) -> w.VBox:
        studio = w.VBox([
            w.HTML(CSS), self.banner, w.HBox([self.upload, self.prompt]), self.negative, self.knob_rows(),
            w.HBox([self.generate_button, self.stop_button, self.save_button, self.sweep_button]),
            w.HBox([self.progress, self.progress_text]), self.message, self.note,
            w.HBox([self.panels["sketch"], self.panels["edges"], self.output]), self.sweep_note,
            w.HTML("<b>history</b> — click one to show it again and put its settings back"), self.history_box,
        ])
        studio.add_class("sdrag-studio")
        self.note.add_class("sdrag-note")
        return studio

    def _wire(self) -> None:
        self.generate_button.on_click(lambda _b: self.generate())
        self.stop_button.on_click(lambda _b: self.stop())
        self.save_button.on_click(lambda _b: self.save())
        self.sweep_button.on_click(lambda _b: self.send_to_sweep())
        self.upload.observe(self._on_upload, names="value")

    # -- inputs --------------------------------------------------------------------------------------------

    def changed(self, owner: w.Widget | None) -> None:
        """A knob moved: redraw the edges if they depend on it, and re-judge the shown result."""
        if owner is None or owner in (self.low, self.high, self.size):
            self.preview_edges()
        self._refresh()

    def _on_upload(self, _change: dict) -> None:
        image = read_upload(self.upload, self.message)
        if image is not None:
            self.message.value = ""
            self._set_sketch(image)
            self.preview_edges()
            self._refresh()

    def _set_sketch(self, image: Image.Image, sha: str | None = None) -> None:
        self.sketch = image
        self._sketch_sha = sha or pixels_sha256(image)
        self.images["sketch"].value = png_bytes(image)
        self.captions["sketch"].value = caption(f"sketch · {image.width}×{image.height}")

    def preview_edges(self) -> None:
        """Redraw the edge panel from the sketch, Canny thresholds and size as they are now (no Generate)."""
        low, high = self.low.value, self.high.value
        try:
            edges = canny_edges(self.sketch, low, high, size=self.size.value)
        except SdragError as exc:
            self.panels["edges"].add_class(STALE)  # the picture no longer matches the sliders
            self.captions["edges"].value = error_html(exc)
            return
        self.panels["edges"].remove_class(STALE)
        self.images["edges"].value = png_bytes(edges)
        self.captions["edges"].value = caption(f"edges (live) · Canny {low}/{high} · {edges.width}×{edges.height}")

    # -- state ---------------------------------------------------------------------------------------------

    def state(self) -> str:
        """'empty', 'running', 'failed', 'outdated' or 'current': how the shown result relates to the widgets."""
        if self._running:
            return "running"
        if self.shown is None:
            return "empty"
        if self._failed:
            return "failed"
        same = same_settings(self.shown.params, self.params()) and self.shown.sketch_sha == self._sketch_sha
        return "current" if same else "outdated"

    def _refresh(self) -> None:
        """Make every control tell the truth about the shown result: greyed, marked, Save on or off."""
        state = self.state()
        for cls in (STALE, OUTDATED):
            self.output.remove_class(cls)
        if state in ("running", "failed", "outdated"):
            self.output.add_class(OUTDATED if state == "outdated" else STALE)
        self.note.value = html.escape(NOTES.get(state, ""))
        self.save_button.disabled = state != "current"
        self.generate_button.disabled = self._running
        self.stop_button.disabled = not self._running

    # -- running -------------------------------------------------------------------------------------------

    def check_inputs(self) -> Params | None:
        """The widgets' Params if they are valid, else None with every problem in one message."""
        p = self.params()
        try:
            p.resolved()
        except SdragError as exc:
            self.message.value = error_html(exc)
            return None
        return p

    def generate(self, wait: bool = False) -> None:
        """Run the chain in a background thread (so Stop stays clickable); `wait` joins it.

        From this moment until a new result replaces it, the shown result is greyed and cannot be saved.
        """
        if self._running:
            return
        p = self.check_inputs()
        if p is None:
            self._failed = True
            self._refresh()
            return
        self._stop.clear()
        self._running, self._pace = True, None
        self.message.value = "generating…"
        self.progress.max, self.progress.value = p.steps, 0
        self.progress_text.value = eta_text(0, p.steps)
        self._refresh()
        self._thread = threading.Thread(target=self._run, args=(p, self.sketch, self._sketch_sha), daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()

    def stop(self) -> None:
        """Ask the running generation to stop after its current step."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running generation (if any) ends."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _progress(self, step: int, total: int) -> bool:
        now = time.perf_counter()
        # Timed from the first step on: loading and retrieval before it would make every estimate too long.
        start, first = self._pace = self._pace or (now, step)
        per_step = (now - start) / (step - first) if step > first else None
        self.progress.max, self.progress.value = total, step
        self.progress_text.value = html.escape(eta_text(step, total, per_step))
        return not self._stop.is_set()

    def _run(self, p: Params, sketch: Image.Image, sketch_sha: str) -> None:
        failed = True
        try:
            res = self.wb.run(sketch, params=p, progress=self._progress)
            shot = Shot(res, p, sketch, sketch_sha, self._candidates(p))
            self._remember(shot)
            self._show(shot)
            timings = ", ".join(f"{k} {v:.2f}s" for k, v in res.timings.items())
            notes = "".join(f"<br><i>{html.escape(n)}</i>" for n in res.notes)
            self.message.value = f"done in {res.timings['total']:.2f}s ({html.escape(timings)}){notes}"
            failed = False
        except GenerationCancelled:
            self.message.value = "<i>stopped — change something and generate again</i>"
            failed = False  # nothing new was shown: whether the old result still fits is for state() to say
        except Exception as exc:  # sdrag errors and any other: a notebook app must not die on one bad run
            self.message.value = error_html(exc)
        finally:
            self._running, self._failed = False, failed
            self._refresh()

    def _candidates(self, p: Params) -> list[Style]:
        """The prompt's best matches, more than top_k; a failed search costs only this display."""
        if not p.prompt.strip():
            return []
        try:
            return self.wb.library.search(p.prompt, k=max(CANDIDATES, p.top_k), tags=p.tags, method=p.retrieval,
                                          avoid=p.avoid, diversity=p.diversity)
        except SdragError:
            return []

    def _show(self, shot: Shot) -> None:
        """Display `shot`: images with captions, the style line, the references and the candidates."""
        res, refs = shot.result, shot.result.references
        self.shown, self._failed = shot, False
        try:
            self.images["style"].value = png_bytes(res.style.image())
            self.captions["style"].value = style_caption(refs, shot.retrieved)
        except SdragError as exc:  # the style's file went away since: say so where its picture would be
            self.images["style"].value, self.captions["style"].value = b"", error_html(exc)
        self.images["result"].value = png_bytes(res.image)
        self.captions["result"].value = caption(f"result #{shot.number} · seed {res.seed} · "
                                                f"{res.image.width}×{res.image.height} · {res.params['steps']} steps")
        self.hits.value = style_line(refs, shot.retrieved)
        self.references.value = references_html(refs)
        self.candidates.value = candidates_html(shot.candidates, refs, shot.retrieved)
        for entry, button in zip(self.history, self.history_buttons):
            button.button_style = "info" if entry is shot else ""

    # -- history, save, sweep ------------------------------------------------------------------------------

    def _remember(self, shot: Shot) -> None:
        shot.number = self.history[-1].number + 1 if self.history else 1
        button = w.Button(description=f"show #{shot.number}", layout=w.Layout(width="150px"),
                          tooltip="show this result and put its settings back into the widgets")
        button.on_click(lambda _b: self.restore(self.history.index(shot)))
        thumb = w.Image(value=png_bytes(shot.result.image, 96), format="png", layout=w.Layout(width="96px"))
        text = w.HTML(caption(f"#{shot.number} · " + settings_text(shot.params, shot.result.references,
                                                                    shot.retrieved)), layout=w.Layout(width="150px"))
        keep = 1 - HISTORY
        self.history, self.history_buttons = self.history[keep:] + [shot], self.history_buttons[keep:] + [button]
        self.history_box.children = (*self.history_box.children[keep:], w.VBox([thumb, text, button]))

    def restore(self, index: int) -> None:
        """Show history entry `index` again with its sketch and settings back in the widgets (so Save saves it)."""
        if self._running:
            self.message.value = "wait for the running generation to end (or Stop it) first"
            return
        shot = self.history[index]
        self._set_sketch(shot.sketch, shot.sketch_sha)
        self._show(shot)
        self.set_params(shot.params)
        self.message.value = f"showing result #{shot.number} from the history; its settings are back in the widgets"

    def save(self) -> dict:
        """Save the shown result (image, edges, panel, record) into `out_dir`, if it is current."""
        if self.state() != "current":
            self.message.value = ("nothing to save yet: generate first" if self.shown is None else
                                  "the shown result does not match the settings: Generate (or pick it in the history)")
            return {}
        try:
            paths = self.shown.result.save(self.out_dir)
        except Exception as exc:  # a full disk or an unwritable folder: say so in the widget, keep the result
            self.message.value = error_html(exc)
            return {}
        self.message.value = f"saved to {html.escape(str(paths['panel']))}"
        return paths

    def send_to_sweep(self) -> Path | None:
        """Write a sweep spec with the current settings as base and a small seed axis into `spec_dir`; show its
        path and the command that runs it. Returns the path (None if the settings are invalid)."""
        p = self.params()
        try:
            spec = spec_from_params(p, spec_stem(p.prompt), {"seed": seed_axis(self.seed.value)},
                                    preset=self.wb.sources.preset, library=str(self.wb.library_dir))
            path = write_spec(spec, self.spec_dir, self.sketch)
        except Exception as exc:  # invalid settings or an unwritable folder: one message, the studio goes on
            self.sweep_note.value = error_html(exc)
            return None
        command = f"python -m sdrag sweep {shlex.quote(str(path))}"
        self.sweep_note.value = (f"sweep spec written: <code>{html.escape(str(path))}</code><br>"
                                 f"run it: <code>{html.escape(command)}</code>")
        return path
