"""The main job for now: ingest the starter styles, run the chain on the sample sketch, save a panel."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of `python -m sdrag demo`."""
    ap = argparse.ArgumentParser(prog="python -m sdrag demo", description=__doc__)
    ap.add_argument("--preset", default=os.environ.get("SDRAG_PRESET", "tiny"), help="tiny (offline) or sd15")
    ap.add_argument("--prompt", default="a neon glowing city street at night")
    ap.add_argument("--sketch", default=None, help="sketch image (default: the bundled house sketch)")
    ap.add_argument("--styles", default=str(REPO / "styles"), help="folder of style images to ingest")
    ap.add_argument("--library", default=str(REPO / "experiments" / "library"), help="style library folder")
    ap.add_argument("--out", default=str(REPO / "experiments" / "demo"), help="where the panel is written")
    ap.add_argument("--size", type=int, default=None, help="output size (default 256 tiny, 512 sd15)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    args = build_parser().parse_args(argv)
    import sdrag

    size = args.size or (256 if args.preset == "tiny" else 512)
    try:
        wb = sdrag.Workbench.from_preset(args.preset, library_dir=f"{args.library}-{args.preset}")
        report = wb.library.ingest(args.styles)
        print(f"style library {wb.library.path}: {report} ({len(wb.library)} styles)")
        for item in report.skipped:
            if item.reason != "unchanged":
                print(f"  skipped {item.path}: {item.reason}")
        res = wb.run(args.sketch or sdrag.SAMPLE_SKETCH, args.prompt, seed=args.seed, steps=args.steps, size=size)
    except sdrag.SdragError as exc:
        print(f"sdrag demo failed: {exc}", file=sys.stderr)
        return 1
    paths = res.save(args.out, name=f"demo-{args.preset}")
    style = res.style
    print(f"prompt: {args.prompt!r} (preset {args.preset}, {size}x{size}, {args.steps} steps, seed {res.seed})")
    print(f"retrieved style: {style.name} [{style.id}] score {style.score:.4f}")
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in res.timings.items()))
    print(f"panel: {paths['panel']}")
    if args.preset != "sd15":
        print(f"note: preset {args.preset!r} has random weights, so scores and pictures are noise; the chain is real."
              " Use --preset sd15 with internet (or cached weights) for real images.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
