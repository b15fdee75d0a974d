"""Draw the bundled sample sketch sdrag/assets/sketch_house.png (black lines on white, 512x512).

Deterministic: no randomness, only fixed coordinates. Run from anywhere:

    python scripts/make_sample_sketch.py [--out sdrag/assets/sketch_house.png]

Needs numpy and opencv-python-headless.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from sdrag.files import atomic_write_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "sdrag" / "assets" / "sketch_house.png"
SIZE = 512
INK = 0
PAPER = 255
LINE = 4
THIN = 3
AA = cv2.LINE_AA


def draw_house() -> np.ndarray:
    """Return a 512x512 uint8 grayscale line drawing of a house, tree, sun and ground."""
    img = np.full((SIZE, SIZE), PAPER, np.uint8)

    # Ground line.
    cv2.line(img, (24, 430), (488, 430), INK, LINE, AA)

    # House body and pitched roof with overhang.
    cv2.rectangle(img, (120, 270), (330, 430), INK, LINE, AA)
    roof = np.array([(100, 274), (225, 168), (350, 274)], np.int32)
    cv2.polylines(img, [roof], True, INK, LINE, AA)
    # Chimney drawn only above the roof slope so no line crosses the roof.
    cv2.polylines(img, [np.array([(280, 215), (280, 172), (306, 172), (306, 237)], np.int32)], False, INK, LINE, AA)

    # Door with a knob.
    cv2.rectangle(img, (200, 340), (250, 430), INK, LINE, AA)
    cv2.circle(img, (240, 388), 4, INK, -1, AA)

    # Two windows, each with a cross of glazing bars.
    for x0 in (142, 270):
        x1, y0, y1 = x0 + 44, 300, 344
        cv2.rectangle(img, (x0, y0), (x1, y1), INK, LINE, AA)
        cv2.line(img, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), INK, THIN, AA)
        cv2.line(img, (x0, (y0 + y1) // 2), (x1, (y0 + y1) // 2), INK, THIN, AA)

    # Tree: trunk plus a cloud-shaped canopy, drawn as the outline of a union of circles so no
    # line crosses the inside of the canopy.
    cv2.line(img, (420, 430), (420, 300), INK, LINE, AA)
    cv2.line(img, (442, 430), (442, 300), INK, LINE, AA)
    canopy = np.zeros_like(img)
    for centre, r in (((431, 248), 42), ((397, 280), 32), ((465, 280), 32), ((412, 312), 26), ((450, 312), 26)):
        cv2.circle(canopy, centre, r, 255, -1)
    img[canopy > 0] = PAPER
    contours, _ = cv2.findContours(canopy, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.polylines(img, contours, True, INK, LINE, AA)

    # Sun with short rays, top left.
    sun, r = (90, 100), 34
    cv2.circle(img, sun, r, INK, LINE, AA)
    for k in range(8):
        a = k * np.pi / 4
        p0 = (round(sun[0] + (r + 12) * np.cos(a)), round(sun[1] + (r + 12) * np.sin(a)))
        p1 = (round(sun[0] + (r + 30) * np.cos(a)), round(sun[1] + (r + 30) * np.sin(a)))
        cv2.line(img, p0, p1, INK, THIN, AA)

    # Path from the door to the bottom edge, in perspective.
    cv2.line(img, (200, 430), (176, 490), INK, THIN, AA)
    cv2.line(img, (250, 430), (274, 490), INK, THIN, AA)
    return img


def main(argv: list[str] | None = None) -> int:
    """Draw the sketch and write it as a grayscale PNG."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output PNG path")
    args = ap.parse_args(argv)
    img = draw_house()
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    data = buf.tobytes()
    atomic_write_bytes(args.out, data)
    print(f"wrote {args.out}  {img.shape[1]}x{img.shape[0]} grayscale  {len(data) / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
