"""The command line: `python -m sdrag demo ...` (the main job) and `python -m sdrag sweep SPEC ...`."""

from __future__ import annotations

import argparse
import sys


def sweep_main(argv: list[str] | None = None) -> int:
    """Run or resume a sweep; exit 1 if every cell fails, 2 if it could not start."""
    ap = argparse.ArgumentParser(prog="python -m sdrag sweep", description=sweep_main.__doc__)
    ap.add_argument("spec", help="sweep spec (YAML)")
    ap.add_argument("--out", default=None, help="run folder (default experiments/runs/<name>)")
    ap.add_argument("--preset", default=None, help="override the spec's preset (tiny, sd15, sd15-random)")
    ap.add_argument("--compare", nargs="*", default=None, help="other run folders to compare this run with")
    args = ap.parse_args(argv)
    from ..errors import SdragError
    from ..sweeps.engine import SweepFailed, run_sweep

    try:
        run = run_sweep(args.spec, out_dir=args.out, preset=args.preset)
    except SweepFailed as exc:
        print(f"sweep failed: {exc}", file=sys.stderr)
        return 1
    except SdragError as exc:
        print(f"sweep not started: {exc}", file=sys.stderr)
        return 2
    failed = len(run.failed)
    print(f"{len(run.table)} cells ({failed} failed) in {run.out_dir}")
    if args.compare:
        from ..reports.compare import compare_runs

        compare_runs([run.out_dir, *args.compare], run.out_dir / "compare.html")
        print(f"comparison: {run.out_dir / 'compare.html'}")
    print(f"report: {run.report_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("demo", "sweep"):
        print("usage: python -m sdrag {demo,sweep} ...  (add --help after a command)", file=sys.stderr)
        return 2
    if argv[0] == "demo":
        from .demo import main as demo_main

        return demo_main(argv[1:])
    return sweep_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
