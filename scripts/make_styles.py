"""Build the starter style library in styles/: reference images, manifest.yaml.

Deterministic: the same package versions give the same files. Run from anywhere:

    python scripts/make_styles.py [--out-dir styles]

Needs numpy, pillow, opencv-python-headless and scikit-image (only for this script;
scikit-image is not a runtime dependency of sdrag).
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from sdrag.files import atomic_write_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "styles"
LONG_SIDE = 256
JPEG_QUALITY = 88
# Supersampling factor for procedural images: drawing large then shrinking gives clean anti-aliasing.
SS = 2
PROCEDURAL_SOURCE = "procedural: scripts/make_styles.py (sdrag project), CC0-1.0"
MANIFEST_HEADER = "# Starter style library for sdrag. Regenerate with: python scripts/make_styles.py\n"


@dataclass(frozen=True)
class Style:
    """One library entry: how to make the image and what the manifest says about it."""

    file: str
    name: str
    caption: str
    tags: tuple[str, ...]
    licence: str
    source: str
    make: Callable[[], np.ndarray]


def _skimage(loader: str) -> np.ndarray:
    """Load a bundled scikit-image sample as uint8 RGB."""
    import skimage.data

    # Only loaders whose files ship inside the wheel are used; these never touch the network.
    img = np.asarray(getattr(skimage.data, loader)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def _shrink(img: np.ndarray, long_side: int = LONG_SIDE) -> Image.Image:
    """Resize an RGB array so its longest side is long_side (Lanczos)."""
    pil = Image.fromarray(img, mode="RGB")
    w, h = pil.size
    scale = long_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return pil.resize(size, Image.Resampling.LANCZOS)


def _jpeg_bytes(pil: Image.Image) -> bytes:
    """Encode an image as a baseline RGB JPEG without metadata."""
    buf = io.BytesIO()
    pil.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    """Turn '#rrggbb' into an (r, g, b) tuple."""
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


# --- procedural styles -------------------------------------------------------------------------------


def make_neon_lines() -> np.ndarray:
    """Glowing magenta, cyan and yellow wave lines on black."""
    rng = np.random.default_rng(1001)
    n = LONG_SIDE * SS
    core = np.zeros((n, n, 3), np.float32)
    colours = [(255, 40, 220), (40, 240, 255), (255, 230, 60), (140, 80, 255)]
    xs = np.linspace(0, n - 1, 400)
    for i in range(9):
        colour = colours[i % len(colours)]
        base = n * (0.12 + 0.76 * i / 8)
        amp = rng.uniform(0.04, 0.14) * n
        freq = rng.uniform(1.0, 2.6) * 2 * np.pi / n
        phase = rng.uniform(0, 2 * np.pi)
        ys = base + amp * np.sin(freq * xs + phase)
        pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
        cv2.polylines(core, [pts], False, colour, thickness=3 * SS, lineType=cv2.LINE_AA)
    # Layered blurs of the same strokes imitate light bleeding out of a neon tube.
    glow = sum(cv2.GaussianBlur(core, (0, 0), s) * w for s, w in ((4 * SS, 1.2), (12 * SS, 1.0), (30 * SS, 0.8)))
    img = core + glow
    # White-hot centres: where the tube is brightest it saturates towards white.
    img += np.clip(core.mean(axis=2, keepdims=True) - 120, 0, None) * 1.5
    return np.clip(img, 0, 255).astype(np.uint8)


def make_bauhaus_pastel() -> np.ndarray:
    """Flat pastel Bauhaus composition of circles, arcs, bars and triangles."""
    n = LONG_SIDE * SS
    img = np.full((n, n, 3), _rgb("#f4ecdc"), np.uint8)
    s = n / 256
    aa = cv2.LINE_AA

    def p(x: float, y: float) -> tuple[int, int]:
        """Scale a point from 256-unit design space to the canvas."""
        return round(x * s), round(y * s)

    cv2.rectangle(img, p(0, 150), p(256, 256), _rgb("#a8c8e0"), -1)
    cv2.rectangle(img, p(20, 30), p(110, 150), _rgb("#f2b5a0"), -1)
    cv2.circle(img, p(170, 90), round(58 * s), _rgb("#f6d98a"), -1, aa)
    cv2.ellipse(img, p(170, 90), (round(58 * s), round(58 * s)), 0, 0, 180, _rgb("#e89a8a"), -1, aa)
    tri = np.array([p(40, 250), p(120, 160), p(200, 250)], np.int32)
    cv2.fillPoly(img, [tri], _rgb("#9cc7a4"), aa)
    cv2.rectangle(img, p(210, 150), p(236, 256), _rgb("#3f4a5c"), -1)
    cv2.circle(img, p(65, 90), round(26 * s), _rgb("#f4ecdc"), -1, aa)
    cv2.rectangle(img, p(120, 20), p(250, 32), _rgb("#3f4a5c"), -1)
    cv2.circle(img, p(228, 200), round(14 * s), _rgb("#f6d98a"), -1, aa)
    cv2.ellipse(img, p(110, 150), (round(34 * s), round(34 * s)), 0, 180, 360, _rgb("#c9b6e4"), -1, aa)
    return img


def make_watercolour_wash() -> np.ndarray:
    """Soft overlapping watercolour blotches with darker pigment edges on paper."""
    rng = np.random.default_rng(2002)
    n = LONG_SIDE * SS
    paper = np.full((n, n, 3), 0.97, np.float32)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), 1.2)
    paper *= (1 + 0.03 * grain)[..., None]
    pigments = ["#4f8fc0", "#e0708a", "#f0b84a", "#6fb38a", "#8a6fc0", "#e89a5a", "#4fb0b8"]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    img = paper.copy()
    for i in range(11):
        cx, cy = rng.uniform(0.1, 0.9, 2) * n
        r = rng.uniform(0.13, 0.28) * n
        # Noise-warped distance field gives the irregular outline of a pooled wash.
        warp = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), n / 18)
        warp /= np.abs(warp).max() + 1e-6
        d = np.hypot(xx - cx, yy - cy) / r + 0.35 * warp
        mask = np.clip((1.0 - d) * 4, 0, 1)
        # Uneven pigment density inside the wash, as where water pooled while drying.
        blot = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), n / 40)
        blot = blot / (np.abs(blot).max() + 1e-6)
        mask = cv2.GaussianBlur(mask, (0, 0), 1.2 * SS)
        # Pigment collects at the drying edge, so edges are darker than the centre.
        edge = np.clip(mask - cv2.GaussianBlur(mask, (0, 0), 4 * SS), 0, None) * 1.4
        alpha = np.clip((0.4 + 0.2 * blot) * mask + edge, 0, 0.85)
        colour = np.array(_rgb(pigments[i % len(pigments)]), np.float32) / 255
        # Multiplicative (subtractive) mixing, like transparent glazes.
        img *= 1 - alpha[..., None] * (1 - colour)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def make_pixel_mosaic() -> np.ndarray:
    """Pixel-art sunset landscape with a limited palette, upscaled with nearest neighbour."""
    rng = np.random.default_rng(3003)
    g = 32
    sky = ["#2b1b4a", "#4a2a6a", "#7a3a7a", "#b04a6a", "#e0705a", "#f0a050"]
    img = np.zeros((g, g, 3), np.uint8)
    band = 18 // len(sky)
    for y in range(18):
        img[y, :] = _rgb(sky[min(y // band, len(sky) - 1)])
    for _ in range(14):
        x, y = rng.integers(0, g), rng.integers(0, 7)
        img[y, x] = _rgb("#f8f0c0")
    yy, xx = np.mgrid[0:g, 0:g]
    sun = (xx - 21) ** 2 + (yy - 14) ** 2 <= 20
    img[sun & (yy < 18)] = _rgb("#ffd86a")
    heights = [12, 11, 10, 9, 10, 11, 13, 12, 11, 10, 12, 14, 15, 14, 13, 12]
    for x in range(g):
        top = heights[(x // 2) % len(heights)]
        img[top:18, x] = _rgb("#3a2a5a")
    img[18:22, :] = _rgb("#2a6a6a")
    img[18, ::3] = _rgb("#f0a050")
    img[22:, :] = _rgb("#2f7a3a")
    img[24:, ::2] = _rgb("#3f9a4a")
    img[27:, 1::4] = _rgb("#255f2e")
    for x0 in (4, 26):
        img[19:24, x0] = _rgb("#5a3a2a")
        img[15:20, x0 - 2 : x0 + 3] = _rgb("#1f5a2a")
        img[14, x0 - 1 : x0 + 2] = _rgb("#1f5a2a")
    return cv2.resize(img, (LONG_SIDE, LONG_SIDE), interpolation=cv2.INTER_NEAREST)


def make_blueprint_grid() -> np.ndarray:
    """Technical blueprint: white linework and dimension lines over a grid on deep blue."""
    n = LONG_SIDE * SS
    s = n / 256
    aa = cv2.LINE_AA
    img = np.full((n, n, 3), _rgb("#1b4f8c"), np.uint8)
    minor, major, white = _rgb("#3a6aa4"), _rgb("#6d93c4"), (240, 246, 255)
    for k in range(0, 257, 8):
        c = major if k % 32 == 0 else minor
        w = SS if k % 32 == 0 else 1
        cv2.line(img, (round(k * s), 0), (round(k * s), n), c, w)
        cv2.line(img, (0, round(k * s)), (n, round(k * s)), c, w)

    def p(x: float, y: float) -> tuple[int, int]:
        """Scale a point from 256-unit design space to the canvas."""
        return round(x * s), round(y * s)

    t = 2 * SS
    cv2.rectangle(img, p(40, 64), p(176, 192), white, t, aa)
    cv2.circle(img, p(108, 128), round(40 * s), white, t, aa)
    cv2.circle(img, p(108, 128), round(14 * s), white, t, aa)
    for ang in range(0, 360, 45):
        a = np.deg2rad(ang)
        cv2.line(
            img,
            p(108 + 18 * np.cos(a), 128 + 18 * np.sin(a)),
            p(108 + 36 * np.cos(a), 128 + 36 * np.sin(a)),
            white,
            SS,
            aa,
        )
    cv2.line(img, p(96, 128), p(120, 128), white, SS, aa)
    cv2.line(img, p(108, 116), p(108, 140), white, SS, aa)
    cv2.rectangle(img, p(192, 96), p(232, 160), white, t, aa)
    cv2.line(img, p(176, 112), p(192, 112), white, t, aa)
    cv2.line(img, p(176, 144), p(192, 144), white, t, aa)
    # Dimension lines with arrowheads, as on a drafting sheet.
    cv2.arrowedLine(img, p(108, 214), p(40, 214), white, SS, aa, tipLength=0.12)
    cv2.arrowedLine(img, p(108, 214), p(176, 214), white, SS, aa, tipLength=0.12)
    cv2.line(img, p(40, 196), p(40, 222), white, SS, aa)
    cv2.line(img, p(176, 196), p(176, 222), white, SS, aa)
    cv2.arrowedLine(img, p(22, 128), p(22, 64), white, SS, aa, tipLength=0.12)
    cv2.arrowedLine(img, p(22, 128), p(22, 192), white, SS, aa, tipLength=0.12)
    cv2.rectangle(img, p(184, 200), p(248, 244), white, SS, aa)
    cv2.line(img, p(184, 222), p(248, 222), white, SS, aa)
    cv2.putText(img, "A-01", p(196, 216), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * s, white, SS, aa)
    cv2.putText(img, "136", p(96, 210), cv2.FONT_HERSHEY_SIMPLEX, 0.32 * s, white, SS, aa)
    return img


# --- library -------------------------------------------------------------------------------------------


def _sk(loader: str) -> Callable[[], np.ndarray]:
    """Bind a scikit-image loader name into a zero-argument image maker."""
    return lambda: _skimage(loader)


STYLES: tuple[Style, ...] = (
    Style(
        "hubble_deep_field.jpg",
        "Hubble deep field",
        "a dark starfield dotted with colourful distant galaxies",
        ("space", "photo", "dark"),
        "Public domain",
        "scikit-image data (skimage.data.hubble_deep_field): NASA/ESA Hubble Space Telescope",
        _sk("hubble_deep_field"),
    ),
    Style(
        "astronaut.jpg",
        "Astronaut portrait",
        "a bright studio portrait photo of an astronaut in an orange suit before a flag",
        ("portrait", "photo", "bright"),
        "Public domain",
        "scikit-image data (skimage.data.astronaut): NASA Great Images database, photo of Eileen Collins",
        _sk("astronaut"),
    ),
    Style(
        "coffee.jpg",
        "Coffee cup",
        "a warm close-up photo of a coffee cup and saucer on a wooden table",
        ("food", "photo", "warm"),
        "CC0-1.0",
        "scikit-image data (skimage.data.coffee): photo by Rachel Michetti, courtesy of Pikolo Espresso Bar",
        _sk("coffee"),
    ),
    Style(
        "chelsea.jpg",
        "Chelsea the cat",
        "a soft natural-light photo of a tabby cat with fine fur texture",
        ("animal", "photo", "texture"),
        "CC0-1.0",
        "scikit-image data (skimage.data.chelsea): photo by Stefan van der Walt",
        _sk("chelsea"),
    ),
    Style(
        "rocket.jpg",
        "Rocket launch",
        "a white rocket on a floodlit launch pad between towers under a deep blue night sky",
        ("rocket", "photo", "night"),
        "Public domain",
        "scikit-image data (skimage.data.rocket): SpaceX launch photo of Falcon 9 carrying DSCOVR",
        _sk("rocket"),
    ),
    Style(
        "camera.jpg",
        "Cameraman in black and white",
        "a high-contrast black and white photo of a man with a camera on a tripod",
        ("monochrome", "photo", "contrast"),
        "CC0-1.0",
        "scikit-image data (skimage.data.camera): photo by Lav Varshney",
        _sk("camera"),
    ),
    Style(
        "neon_lines.jpg",
        "Neon lines",
        "neon glowing magenta, cyan and yellow wave lines on black",
        ("neon", "glow", "dark", "abstract"),
        "CC0-1.0",
        PROCEDURAL_SOURCE,
        make_neon_lines,
    ),
    Style(
        "bauhaus_pastel.jpg",
        "Bauhaus pastel",
        "a flat pastel Bauhaus composition of circles, half circles, bars and triangles",
        ("geometric", "flat", "pastel"),
        "CC0-1.0",
        PROCEDURAL_SOURCE,
        make_bauhaus_pastel,
    ),
    Style(
        "watercolour_wash.jpg",
        "Watercolour wash",
        "soft translucent watercolour blotches with darker pigment edges on white paper",
        ("watercolour", "soft", "painterly"),
        "CC0-1.0",
        PROCEDURAL_SOURCE,
        make_watercolour_wash,
    ),
    Style(
        "pixel_mosaic.jpg",
        "Pixel-art sunset",
        "blocky pixel art of a purple and orange sunset over hills and trees",
        ("pixel", "retro", "blocky"),
        "CC0-1.0",
        PROCEDURAL_SOURCE,
        make_pixel_mosaic,
    ),
    Style(
        "blueprint_grid.jpg",
        "Blueprint",
        "a technical blueprint with white line drawings and dimension arrows on a blue grid",
        ("blueprint", "technical", "lineart"),
        "CC0-1.0",
        PROCEDURAL_SOURCE,
        make_blueprint_grid,
    ),
)


def _check_library(styles: tuple[Style, ...]) -> None:
    """Fail early on duplicate names/files or text that would break the hand-written YAML."""
    for attr in ("file", "name"):
        values = [getattr(s, attr) for s in styles]
        dupes = {v for v in values if values.count(v) > 1}
        if dupes:
            raise ValueError(f"duplicate {attr}: {sorted(dupes)}")
    for s in styles:
        if s.licence not in ("CC0-1.0", "Public domain"):
            raise ValueError(f"{s.file}: unexpected licence {s.licence!r}")
        if not 2 <= len(s.tags) <= 4:
            raise ValueError(f"{s.file}: needs 2-4 tags")
        plain = [s.name, s.caption, *s.tags]
        if any(": " in v or "#" in v or v != v.strip() or v.lower() in ("yes", "no", "true", "false") for v in plain):
            raise ValueError(f"{s.file}: a field needs YAML quoting")
        if any(not t.isalpha() or t != t.lower() for t in s.tags):
            raise ValueError(f"{s.file}: tags must be lowercase words")
        if '"' in s.source or "\\" in s.source:
            raise ValueError(f"{s.file}: source cannot contain quotes or backslashes")


def manifest_text(styles: tuple[Style, ...]) -> str:
    """Render manifest.yaml by hand so the layout stays exactly as documented."""
    lines = [MANIFEST_HEADER.rstrip("\n"), "styles:"]
    for s in styles:
        lines += [
            f"  - file: {s.file}",
            f"    name: {s.name}",
            f"    caption: {s.caption}",
            f"    tags: [{', '.join(s.tags)}]",
            f"    licence: {s.licence}",
            f'    source: "{s.source}"',
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Generate every style image and the manifest into the output folder."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="output folder (default: styles/)")
    args = ap.parse_args(argv)
    out: Path = args.out_dir
    _check_library(STYLES)
    total = 0
    for s in STYLES:
        arr = s.make()
        pil = _shrink(arr)
        data = _jpeg_bytes(pil)
        atomic_write_bytes(out / s.file, data)
        total += len(data)
        print(f"wrote {out / s.file}  {pil.size[0]}x{pil.size[1]}  {len(data) / 1024:.1f} KiB")
    manifest = manifest_text(STYLES).encode("utf-8")
    atomic_write_bytes(out / "manifest.yaml", manifest)
    print(f"wrote {out / 'manifest.yaml'}  {len(STYLES)} styles")
    print(f"total image bytes: {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
