"""What a fresh process pays before its first image: `import sdrag`, each heavy library, and a first tiny run.

Run: .venv/bin/python benchmarks/import_cost.py [--repeat 3]   (results go in docs/benchmarks.md)
Each figure is the median wall time of a new Python process doing only that step, so caches of the
operating system are warm and Python's own start (measured alone as `python -c pass`) is included.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

FIRST_IMAGE = """
import sdrag
wb = sdrag.Workbench.from_preset("tiny", library_dir=%r)
wb.library.add(sdrag.SAMPLE_SKETCH, name="house")
wb.run(sdrag.SAMPLE_SKETCH, "a house", style="house", size=64, steps=2)
"""
STEPS = {
    "python -c pass": "pass",
    "import sdrag": "import sdrag",
    "import torch": "import torch",
    "import chromadb": "import chromadb",
    "import diffusers (pipeline class)": "from diffusers import StableDiffusionControlNetPipeline",
    "import transformers (CLIP)": "from transformers import CLIPModel",
    "from sdrag import Workbench": "from sdrag import Workbench",
}


def timed(code: str, repeat: int) -> float:
    """Median seconds of `repeat` fresh processes running `code`."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    """Print one line per step."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    timed(FIRST_IMAGE % tempfile.mkdtemp(), 1)  # builds tiny once, outside the timing
    for name, code in STEPS.items():
        print(f"{name:40s} {timed(code, args.repeat):6.2f} s")
    print(f"{'first tiny image (fresh process)':40s} {timed(FIRST_IMAGE % tempfile.mkdtemp(), args.repeat):6.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
