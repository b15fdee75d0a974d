"""ipywidgets for the notebooks: a thin skin over the functions papermill and scripts call."""

from __future__ import annotations

import html
import threading
from pathlib import Path

import ipywidgets as w
from PIL import Image

from ..errors import GenerationCancelled, InputError, SdragError
from ..files import data_uri, image_bytes
from ..generation.canny import canny_edges
from ..generation.params import LIMITS, Params
from ..images import SAMPLE_SKETCH, ImageLike, load_image
from ..models.sd15 import IP_SCALE_PRESETS


def png_bytes(image: Image.Image, max_side: int = 512) -> bytes:
    """PNG bytes of `image`, downscaled to at most `max_side` (widgets ship bytes to the browser)."""
    image = image.copy()
    image.thumbnail((max_side, max_side))
    return image_bytes(image)


def uploaded_image(upload: w.FileUpload) -> Image.Image | None:
    """The image in a FileUpload widget (None when empty); unreadable uploads raise InputError naming the file."""
    if not upload.value:
        return None
    item = upload.value[0]
    try:
        return load_image(bytes(item["content"]))
    except InputError as exc:
        raise InputError(f"Upload {item.get('name', '')!r}: {exc}") from None


def read_upload(upload: w.FileUpload, message: w.HTML) -> Image.Image | None:
    """The uploaded image, or None with the reason shown in `message` (the widget stays as it was)."""
    try:
        return uploaded_image(upload)
    except Exception as exc:  # shown in the widget: a bad file must not leave a traceback in the notebook
        message.value = error_html(exc)
        return None


def _slider(kind, limit: str, value, description: str, **options):
    """A slider over exactly the range `Params` accepts for `limit` (sdrag.generation.params.LIMITS)."""
    lo, hi = LIMITS[limit]
    return kind(value=value, min=lo, max=hi, description=description, **options)


def error_html(exc: Exception) -> str:
    """A message box for a widget: the sdrag error's text, escaped, never a traceback."""
    return f"<div style='color:#a00;white-space:pre-wrap'><b>{html.escape(type(exc).__name__)}</b>: " \
           f"{html.escape(str(exc))}</div>"


class CannyExplorer:
    """Threshold sliders with a live edge preview of a sketch."""

    def __init__(self, sketch: ImageLike = SAMPLE_SKETCH, low: int = 50, high: int = 150, size: int = 384):
        """Build the widgets for `sketch` (a path, array or PIL image) at preview `size`."""
        self.sketch = load_image(sketch)
        self.size = size
        self.low = _slider(w.IntSlider, "canny", low, "low")
        self.high = _slider(w.IntSlider, "canny", high, "high")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="sketch")
        self.preview = w.Image(format="png")
        self.message = w.HTML()
        for widget in (self.low, self.high):
            widget.observe(lambda _change: self.update(), names="value")
        self.upload.observe(self._on_upload, names="value")
        self.widget = w.VBox([w.HBox([self.upload, self.low, self.high]), self.message, self.preview])
        self.update()

    def _on_upload(self, _change) -> None:
        image = read_upload(self.upload, self.message)
        if image is not None:
            self.sketch = image
            self.update()

    def update(self) -> None:
        """Recompute the preview from the current thresholds (errors shown in the widget)."""
        try:
            edges = canny_edges(self.sketch, self.low.value, self.high.value, size=self.size)
        except SdragError as exc:
            self.message.value = error_html(exc)
            return
        self.message.value = ""
        self.preview.value = png_bytes(edges)


def style_gallery(styles, thumb: int = 160) -> w.HTML:
    """An HTML gallery of styles (thumbnail, name, caption, tags, licence); every string escaped."""
    cards = []
    for s in styles:
        try:
            img = f"<img src='{data_uri(png_bytes(s.image(), thumb))}' style='max-width:{thumb}px'>"
        except SdragError:
            img = "<div style='color:#a00'>image missing</div>"
        score = f" — score {s.score:.3f}" if s.score is not None else ""
        cards.append(
            f"<div style='display:inline-block;width:{thumb + 20}px;vertical-align:top;margin:4px'>{img}"
            f"<div><b>{html.escape(s.name)}</b>{score}</div><div style='font-size:11px'>{html.escape(s.caption)}"
            f"</div><div style='font-size:10px;color:#666'>{html.escape(', '.join(s.tags))} · "
            f"{html.escape(s.licence)} · {html.escape(s.id)}</div></div>")
    return w.HTML("".join(cards))


class RagStudio:
    """The interactive app: sketch, prompt and knobs in; retrieved styles, edges and result out."""

    IP_MODES = ("float", *IP_SCALE_PRESETS)

    def __init__(self, workbench, sketch: ImageLike = SAMPLE_SKETCH, params: Params | None = None,
                 out_dir: str | Path = "experiments/studio"):
        """Lay out the widgets over `workbench`, starting from `params` (defaults: the prototype's)."""
        p = params or Params(prompt="a neon glowing city street at night")
        self.wb = workbench
        self.sketch = load_image(sketch)
        self.out_dir = Path(out_dir)
        self.result = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="sketch")
        self.prompt = w.Text(value=p.prompt, description="prompt", layout=w.Layout(width="60%"))
        self.negative = w.Text(value=p.negative_prompt, description="negative")
        self.cn_scale = _slider(w.FloatSlider, "controlnet_scale", p.controlnet_scale, "ControlNet", step=0.05)
        self.cn_range = _slider(w.FloatRangeSlider, "control", (p.control_start, p.control_end), "CN start/end",
                                step=0.05)
        self.ip_mode = w.Dropdown(options=self.IP_MODES, value="float", description="IP blocks")
        ip_value = p.ip_adapter_scale if isinstance(p.ip_adapter_scale, (int, float)) else 0.8
        self.ip_scale = _slider(w.FloatSlider, "ip_adapter_scale", ip_value, "IP-Adapter", step=0.05)
        self.low = _slider(w.IntSlider, "canny", int(p.canny[0]), "Canny low")
        self.high = _slider(w.IntSlider, "canny", int(p.canny[1]), "Canny high")
        self.steps = _slider(w.IntSlider, "steps", p.steps, "steps")
        self.guidance = _slider(w.FloatSlider, "guidance", p.guidance, "guidance", step=0.5)
        self.seed = w.IntText(value=p.seeds[0], description="seed")
        self.size = _slider(w.IntSlider, "size", p.width_height[0], "size", step=8)
        self.top_k = _slider(w.IntSlider, "top_k", p.top_k, "top-k")
        self.style = w.Dropdown(options=[("auto (retrieve)", "auto")], value="auto", description="style")
        self.generate_button = w.Button(description="Generate", button_style="primary")
        self.stop_button = w.Button(description="Stop", disabled=True)
        self.save_button = w.Button(description="Save", disabled=True)
        self.progress = w.IntProgress(min=0, max=p.steps, description="steps")
        self.message = w.HTML()
        self.hits = w.HTML()
        self.images = {name: w.Image(format="png", layout=w.Layout(width="24%"))
                       for name in ("sketch", "style", "result", "edges")}
        self.generate_button.on_click(lambda _b: self.generate())
        self.stop_button.on_click(lambda _b: self.stop())
        self.save_button.on_click(lambda _b: self.save())
        self.upload.observe(self._on_upload, names="value")
        self.refresh_styles()
        self.images["sketch"].value = png_bytes(self.sketch)
        knobs = w.VBox([self.cn_scale, self.cn_range, w.HBox([self.ip_mode, self.ip_scale]),
                        w.HBox([self.low, self.high]), w.HBox([self.steps, self.guidance]),
                        w.HBox([self.seed, self.size, self.top_k]), self.style])
        self.widget = w.VBox([
            w.HBox([self.upload, self.prompt]), self.negative, knobs,
            w.HBox([self.generate_button, self.stop_button, self.save_button, self.progress]),
            self.message, self.hits, w.HBox(list(self.images.values())),
        ])

    def refresh_styles(self) -> None:
        """Offer every library style as a manual override of retrieval."""
        self.style.options = [("auto (retrieve)", "auto")] + [(s.name, s.id) for s in self.wb.library.list()]

    def _on_upload(self, _change) -> None:
        image = read_upload(self.upload, self.message)
        if image is not None:
            self.sketch = image
            self.images["sketch"].value = png_bytes(image)
            self.message.value = ""

    def params(self) -> Params:
        """The Params the widgets describe (the same object papermill and sweeps pass)."""
        mode = self.ip_mode.value
        ip = self.ip_scale.value if mode == "float" else f"{mode}:{self.ip_scale.value}"
        return Params(prompt=self.prompt.value, negative_prompt=self.negative.value, steps=self.steps.value,
                      guidance=self.guidance.value, controlnet_scale=self.cn_scale.value,
                      control_start=self.cn_range.value[0], control_end=self.cn_range.value[1],
                      ip_adapter_scale=ip, canny=(self.low.value, self.high.value), seed=self.seed.value,
                      size=self.size.value, style=self.style.value, top_k=self.top_k.value)

    def generate(self, wait: bool = False) -> None:
        """Run the chain in a background thread (so Stop stays clickable); `wait` joins it."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._busy(True)
        self._thread = threading.Thread(target=self._run, daemon=True)
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
        self.progress.max, self.progress.value = total, step
        return not self._stop.is_set()

    def _run(self) -> None:
        try:
            p = self.params()
            self.message.value = "generating…"
            self._show(self.wb.run(self.sketch, params=p, progress=self._progress))
        except GenerationCancelled:
            self.message.value = "<i>stopped — change something and generate again</i>"
        except Exception as exc:  # sdrag errors and any other: a notebook app must not die on one bad run
            self.message.value = error_html(exc)
        finally:
            self._busy(False)

    def _show(self, res) -> None:
        """Display a finished run: images, what was retrieved, timings and notes (user text escaped)."""
        self.result = res
        self.images["result"].value = png_bytes(res.image)
        self.images["edges"].value = png_bytes(res.edges)
        self.images["sketch"].value = png_bytes(res.sketch)
        self.images["style"].value = png_bytes(res.style.image())
        self.hits.value = "retrieved: " + "; ".join(
            f"<b>{html.escape(s.name)}</b> (score {s.score:.3f}, weight {wt:.2f})" if s.score is not None
            else f"<b>{html.escape(s.name)}</b> (weight {wt:.2f})" for s, wt in res.references)
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in res.timings.items())
        notes = "".join(f"<br><i>{html.escape(n)}</i>" for n in res.notes)
        self.message.value = f"done in {res.timings['total']:.2f}s ({html.escape(timings)}){notes}"

    def _busy(self, busy: bool) -> None:
        self.generate_button.disabled = busy
        self.stop_button.disabled = not busy
        self.save_button.disabled = busy or self.result is None

    def save(self) -> dict:
        """Save the last result (image, edges, panel, record) into `out_dir`."""
        if self.result is None:
            self.message.value = "nothing to save yet: generate first"
            return {}
        try:
            paths = self.result.save(self.out_dir)
        except Exception as exc:  # a full disk or an unwritable folder: say so in the widget, keep the result
            self.message.value = error_html(exc)
            return {}
        self.message.value = f"saved to {html.escape(str(paths['panel']))}"
        return paths
