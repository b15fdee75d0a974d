"""ipywidgets for the notebooks: a thin skin over the functions papermill and scripts call.

Shared helpers (images as PNG bytes, messages, sliders over `LIMITS`, style cards) and the small widgets live
here; the RAG studio lives in `studio.py`, built on these helpers.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as w
from PIL import Image

from ..errors import InputError, SdragError
from ..files import canonical, data_uri, image_bytes
from ..generation.canny import canny_edges
from ..generation.ipscale import is_number
from ..generation.params import LIMITS, Params
from ..images import SAMPLE_SKETCH, ImageLike, load_image
from ..models.sd15 import IP_SCALE_PRESETS
from ..retrieval.ranking import METHODS, explain

if TYPE_CHECKING:
    from ..retrieval.entries import Style

# Labels such as "ControlNet start/end" are cut at ipywidgets' default description width.
WIDE = {"description_width": "initial"}


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


def slider(kind: type, limit: str, value: Any, description: str, **options: Any) -> w.Widget:
    """A slider over exactly the range `Params` accepts for `limit` (sdrag.generation.params.LIMITS)."""
    lo, hi = LIMITS[limit]
    options.setdefault("style", WIDE)
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
        self.low = slider(w.IntSlider, "canny", low, "low")
        self.high = slider(w.IntSlider, "canny", high, "high")
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


class Knobs:
    """Every knob of `Params` as a widget, over exactly the ranges Params accepts.

    `params()` reads them, `set_params()` writes them; a subclass hears of each change in `changed(owner)`
    (owner None after `set_params`, which changes many at once but reports once).
    """

    IP_MODES = ("float", *IP_SCALE_PRESETS)
    BLEND = "__blend__"

    def __init__(self, library: Any):
        """Build the knobs; the style dropdown offers `library`'s styles beside retrieval.

        `message` shows what the knobs cannot take (a style the library lacks); a subclass lays it out.
        """
        self.library, self._blend, self._quiet = library, None, False
        self.message = w.HTML()
        self.prompt = w.Text(description="prompt", layout=w.Layout(width="70%"), style=WIDE)
        self.negative = w.Text(description="negative prompt", layout=w.Layout(width="70%"), style=WIDE)
        self.cn_scale = slider(w.FloatSlider, "controlnet_scale", 1.5, "ControlNet scale", step=0.05)
        self.cn_range = slider(w.FloatRangeSlider, "control", (0.0, 1.0), "ControlNet start/end", step=0.05)
        self.ip_mode = w.Dropdown(options=self.IP_MODES, description="IP-Adapter blocks", style=WIDE)
        self.ip_scale = slider(w.FloatSlider, "ip_adapter_scale", 0.8, "IP-Adapter scale", step=0.05)
        self.low = slider(w.IntSlider, "canny", 50, "Canny low")
        self.high = slider(w.IntSlider, "canny", 150, "Canny high")
        self.size = slider(w.IntSlider, "size", 512, "size", step=8)
        self.steps = slider(w.IntSlider, "steps", 20, "steps")
        self.guidance = slider(w.FloatSlider, "guidance", 7.5, "guidance", step=0.5)
        self.seed = w.IntText(description="seed", style=WIDE, layout=w.Layout(width="180px"))
        self.top_k = slider(w.IntSlider, "top_k", 1, "top-k styles blended")
        self.retrieval = w.Dropdown(options=METHODS, value="hybrid", description="retrieval", style=WIDE)
        self.avoid = w.Text(description="avoid styles like", placeholder="e.g. dark", style=WIDE)
        self.diversity = slider(w.FloatSlider, "diversity", 0.0, "diversity of top-k", step=0.05)
        self.style = w.Dropdown(options=[("auto (retrieve)", "auto")], description="style", style=WIDE)
        self.refresh_styles()
        for knob in self.knobs():
            knob.observe(lambda change: None if self._quiet else self.changed(change["owner"]), names="value")

    def knobs(self) -> tuple[w.Widget, ...]:
        """Every knob widget, the prompts included."""
        return (self.prompt, self.negative, self.cn_scale, self.cn_range, self.ip_mode, self.ip_scale, self.low,
                self.high, self.size, self.steps, self.guidance, self.seed, self.top_k, self.retrieval, self.avoid,
                self.diversity, self.style)

    def knob_rows(self) -> w.VBox:
        """The knobs after the prompts, a few to a row."""
        return w.VBox([w.HBox([self.cn_scale, self.cn_range]), w.HBox([self.ip_mode, self.ip_scale]),
                       w.HBox([self.low, self.high, self.size]), w.HBox([self.steps, self.guidance]),
                       w.HBox([self.seed, self.top_k, self.style]),
                       w.HBox([self.retrieval, self.avoid, self.diversity])])

    def changed(self, owner: w.Widget | None) -> None:
        """Called after a knob changed (None: after `set_params`); nothing to do here."""

    def refresh_styles(self) -> None:
        """Offer every library style as a manual choice beside retrieval (and a blend the params gave)."""
        options = [("auto (retrieve)", "auto")] + [(s.name, s.id) for s in self.library.list()]
        if self._blend is not None:
            options.append((f"blend of {len(self._blend)} (from the params)", self.BLEND))
        self.style.options = options

    def params(self) -> Params:
        """The Params the widgets describe (the same object papermill and sweeps pass)."""
        mode = self.ip_mode.value
        ip = self.ip_scale.value if mode == "float" else f"{mode}:{self.ip_scale.value}"
        style = self._blend if self.style.value == self.BLEND else self.style.value
        return Params(prompt=self.prompt.value, negative_prompt=self.negative.value, steps=self.steps.value,
                      guidance=self.guidance.value, controlnet_scale=self.cn_scale.value,
                      control_start=self.cn_range.value[0], control_end=self.cn_range.value[1],
                      ip_adapter_scale=ip, canny=(self.low.value, self.high.value), seed=self.seed.value,
                      size=self.size.value, style=style, top_k=self.top_k.value, retrieval=self.retrieval.value,
                      avoid=self.avoid.value, diversity=self.diversity.value)

    def set_params(self, p: Params) -> None:
        """Put `p` into the widgets (what they cannot show, such as a list of seeds, keeps its widget value)."""
        mode, strength = ip_widget_values(p.ip_adapter_scale)
        values = [(self.prompt, p.prompt), (self.negative, p.negative_prompt), (self.steps, p.steps),
                  (self.guidance, p.guidance), (self.cn_scale, p.controlnet_scale),
                  (self.cn_range, (p.control_start, p.control_end)), (self.ip_mode, mode), (self.ip_scale, strength),
                  (self.low, int(p.canny[0])), (self.high, int(p.canny[1])), (self.seed, p.seeds[0]),
                  (self.size, p.width_height[0]), (self.top_k, p.top_k), (self.retrieval, p.retrieval),
                  (self.avoid, p.avoid), (self.diversity, p.diversity), (self.style, self._style_value(p.style))]
        # One report at the end, not one per widget (each would redo whatever the subclass does on a change).
        self._quiet = True
        try:
            for widget, value in values:
                widget.value = value
        finally:
            self._quiet = False
        self.changed(None)

    def _style_value(self, style: Any) -> str:
        """The dropdown value for a Params style: 'auto', a style id, or the blend entry."""
        if style is None or style == "auto":
            return "auto"
        if not isinstance(style, str):
            self._blend = style
            self.refresh_styles()
            return self.BLEND
        if style in [value for _, value in self.style.options]:
            return style
        try:
            return self.library.get(style).id
        except SdragError as exc:
            self.message.value = error_html(exc)
            return "auto"


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


def caption(text: str) -> str:
    """A small caption line under an image (text escaped)."""
    return f"<div style='font-size:11px;color:#444;line-height:1.3'>{html.escape(text)}</div>"


@functools.lru_cache(maxsize=256)
def _thumbnail(path: str, sha256: str, side: int) -> str:
    # Keyed by content hash too: a re-ingested file under the same path gets a fresh thumbnail.
    return data_uri(png_bytes(load_image(path), side))


def style_card(style: Style, note: str, side: int = 96, used: bool = True) -> str:
    """One style as an HTML card: thumbnail, name and `note` (both escaped); an unused one is drawn faint."""
    try:
        img = f"<img src='{_thumbnail(style.path, style.sha256, side)}' style='max-width:{side}px;" \
              f"max-height:{side}px'>"
    except SdragError:
        img = "<div style='color:#a00;font-size:11px'>image missing</div>"
    faint = "" if used else "opacity:.45;"
    return (f"<div style='display:inline-block;width:{side + 24}px;vertical-align:top;margin:3px;{faint}'>{img}"
            f"<div style='font-size:11px;line-height:1.3'><b>{html.escape(style.name)}</b><br>{html.escape(note)}"
            "</div></div>")


# -- what the RAG studio shows: plain functions, so tests check them without widgets ---------------------


def same_settings(a: Params, b: Params) -> bool:
    """Whether two Params describe the same generation (compared by value, as their JSON form)."""
    return canonical(a.to_dict()) == canonical(b.to_dict())


def eta_text(step: int, total: int, seconds_per_step: float | None = None) -> str:
    """'7/20 · 3.1 s left' (the time left only once a step's duration is known and steps remain)."""
    done = f"{step}/{total}"
    if seconds_per_step is None or step >= total:
        return done
    return f"{done} · {seconds_per_step * (total - step):.1f} s left"


def preset_banner(preset: str) -> str:
    """The warning a random-weights preset needs (none for sd15): its pictures look like results and are not."""
    if preset == "sd15":
        return ""
    return f"{preset} preset: random weights — pictures and scores are noise; the chain is real"


def banner_html(preset: str) -> str:
    """`preset_banner` as a yellow box (empty for sd15)."""
    text = preset_banner(preset)
    return (f"<div style='background:#fff3cd;border:1px solid #d9a400;padding:4px 8px'>⚠ {html.escape(text)}"
            "</div>") if text else ""


def ip_widget_values(value: Any) -> tuple[str, float]:
    """(blocks mode, strength) for the IP-Adapter widgets; a block map they cannot show gives ('float', 0.8)."""
    if is_number(value):
        return "float", float(value)
    if isinstance(value, str):
        mode, _, strength = value.partition(":")
        if mode in IP_SCALE_PRESETS:
            try:
                return mode, float(strength) if strength else 1.0
            except ValueError:
                pass
    return "float", 0.8


def _score(style: Style) -> str:
    return f"score {style.score:.3f}, " if style.score is not None else ""


def style_line(references: Sequence[tuple[Style, float]], retrieved: bool) -> str:
    """'retrieved: ...' or, for a style picked in the dropdown, 'manual: ...'; names escaped."""
    parts = "; ".join(f"<b>{html.escape(s.name)}</b> ({_score(s)}weight {wt:.2f})" for s, wt in references)
    return f"retrieved: {parts}" if retrieved else f"manual: {parts} (picked by hand)"


def references_html(references: Sequence[tuple[Style, float]]) -> str:
    """Every blended reference with its thumbnail and weight (empty for a single reference)."""
    if len(references) < 2:
        return ""
    cards = "".join(style_card(s, f"{_score(s)}weight {wt:.2f}") for s, wt in references)
    return f"<div><b>blended references ({len(references)})</b></div>{cards}"


def candidates_html(candidates: Sequence[Style], references: Sequence[tuple[Style, float]], retrieved: bool) -> str:
    """The prompt's best matches with thumbnails and scores, each marked used (with its weight) or not."""
    if not candidates:
        return ""
    used = {s.id: wt for s, wt in references} if retrieved else {}
    why = "" if retrieved else " — none used: the style was picked by hand"
    cards = "".join(style_card(s, _score(s) + (f"used, weight {used[s.id]:.2f}" if s.id in used else "not used")
                               + f" · {explain(s)}", used=s.id in used) for s in candidates)
    return f"<div><b>top {len(candidates)} for the prompt</b>{why}</div>{cards}"


def style_caption(references: Sequence[tuple[Style, float]], retrieved: bool) -> str:
    """The caption under the style image: its name, the blend's size, and whether it was retrieved or picked."""
    more = f" + {len(references) - 1} more (blend, below)" if len(references) > 1 else ""
    how = "retrieved" if retrieved else "manual: picked by hand"
    return caption(f"style · {references[0][0].name}{more} · {how}")


def settings_text(p: Params, references: Sequence[tuple[Style, float]], retrieved: bool) -> str:
    """A result's key settings in one line (history captions)."""
    styles = " + ".join(s.name for s, _ in references)
    return (f"seed {p.seed} · {p.size}px · {p.steps} steps · CN {p.controlnet_scale:g} · IP {p.ip_adapter_scale}"
            f" · canny {p.canny[0]}/{p.canny[1]} · {'retrieved' if retrieved else 'manual'}: {styles}")


def spec_stem(prompt: str) -> str:
    """A plain file name for a sweep spec, from the first words of its prompt."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower())[:40].strip("-")
    return f"studio-{slug}" if slug else "studio"


def seed_axis(seed: int) -> list[int]:
    """Three seeds from `seed` on (so the studio's own picture is a sweep's first cell), kept below 2**63."""
    start = min(seed, 2**63 - 3)
    return [start, start + 1, start + 2]
