"""The main job for now: ingest the starter styles, run the chain on the sample sketch, save a panel."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUMMARY = "run the chain once on the sample sketch and save a panel"

# Errors are written for Python callers; on the command line (this demo and `sdrag sweep`) the same options have
# other spellings.
CLI_SPELLINGS = {
    "out_dir": "out_dir is --out",
    "library_dir": "library_dir is --library",
    "allow_pickle": "allow_pickle=True exists only in Python (sdrag.Workbench.from_preset(..., allow_pickle=True))",
    "override": "model overrides exist only in Python (sdrag.Workbench.from_preset(..., base=<folder>, ...))",
}


def cli_hint(message: str) -> str:
    """`message`, plus how the Python names it mentions are spelled on the command line (if it mentions any)."""
    said = [hint for name, hint in CLI_SPELLINGS.items() if name in message]
    return message + (f"\n(On the command line: {'; '.join(said)}.)" if said else "")


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `python -m sdrag demo`."""
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


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of `python -m sdrag demo`."""
    return add_arguments(argparse.ArgumentParser(prog="python -m sdrag demo", description=__doc__))


def stage(message: str) -> None:
    """Say which stage the demo is in (on stderr, beside the progress bars; results go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the demo for parsed options: load, ingest, generate (with a progress bar), save, report."""
    import sdrag

    size = args.size or (256 if args.preset == "tiny" else 512)
    try:
        stage(f"loading models (preset {args.preset}) ...")
        start = time.perf_counter()
        wb = sdrag.Workbench.from_preset(args.preset, library_dir=f"{args.library}-{args.preset}").load()
        loaded = time.perf_counter() - start
        stage(f"ingesting styles from {args.styles} ...")
        report = wb.library.ingest(args.styles)
        print(f"style library {wb.library.path}: {report} ({len(wb.library)} styles)")
        for item in report.skipped:
            if item.reason != "unchanged":
                print(f"  skipped {item.path}: {item.reason}")
        stage(f"generating {size}x{size}, {args.steps} steps, seed {args.seed} ...")
        res = wb.run(args.sketch or sdrag.SAMPLE_SKETCH, args.prompt, seed=args.seed, steps=args.steps, size=size,
                     progress=True)
    except sdrag.SdragError as exc:
        print(cli_hint(f"sdrag demo failed: {exc}"), file=sys.stderr)
        return 1
    paths = res.save(args.out, name=f"demo-{args.preset}")
    style = res.style
    print(f"prompt: {args.prompt!r} (preset {args.preset}, {size}x{size}, {args.steps} steps, seed {res.seed})")
    print(f"retrieved style: {style.name} [{style.id}] score {style.score:.4f}")
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in {"load": loaded, **res.timings}.items()))
    print(f"panel: {paths['panel']}")
    if args.preset != "sd15":
        print(f"note: preset {args.preset!r} has random weights, so scores and pictures are noise; the chain is real."
              " Use --preset sd15 with internet (or cached weights) for real images.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
