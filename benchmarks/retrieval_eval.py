"""How well each style search method finds the labelled styles: recall@1/3/5, MRR and nDCG@5 per method.

A fresh library in a temporary folder ingests styles/ with the preset's CLIP, then every query of
styles/queries.yaml is searched by each method (dense, lexical, hybrid) and scored against its labels.

    python benchmarks/retrieval_eval.py [--preset tiny] [--per-query]

On `tiny` the CLIP weights are random, so dense scores are noise (a floor, not a measurement); `sd15` needs
the real CLIP weights (online once, or cached).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from sdrag import Workbench
from sdrag.retrieval.evaluate import evaluate_queries, summary

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Print the evaluation table (and, with --per-query, each query's metrics) for one preset."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", help="model preset whose CLIP embeds styles and queries")
    ap.add_argument("--styles", type=Path, default=REPO / "styles", help="style folder to ingest")
    ap.add_argument("--queries", type=Path, default=REPO / "styles" / "queries.yaml", help="labelled queries")
    ap.add_argument("--per-query", action="store_true", help="also print every query's reciprocal rank")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sdrag-retrieval-eval-") as folder:
        library = Workbench.from_preset(args.preset, library_dir=folder).library
        report = library.ingest(args.styles, progress=False)
        started = time.perf_counter()
        per_query = evaluate_queries(library, args.queries)
        seconds = time.perf_counter() - started
    table = summary(per_query)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(f"preset {args.preset}: {len(report.added)} styles, {int(table['queries'].iloc[0])} queries,"
              f" {len(per_query)} searches in {seconds:.1f} s")
        print(table.to_string())
        if args.per_query:
            print(per_query.pivot(index="query", columns="method", values="rr")[list(table.index)].to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
