"""The command line: `python -m sdrag demo ...` (the main job) and `python -m sdrag sweep SPEC ...`."""

from __future__ import annotations

import argparse
import sys

from . import demo
from .demo import cli_hint

PROG = "python -m sdrag"
SWEEP_SUMMARY = "run or resume a sweep spec (YAML), then write its report"

def add_sweep_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `python -m sdrag sweep`."""
    ap.add_argument("spec", help="sweep spec (YAML)")
    ap.add_argument("--out", default=None, help="run folder (default experiments/runs/<name>)")
    ap.add_argument("--preset", default=None, help="override the spec's preset (tiny, sd15, sd15-random)")
    ap.add_argument("--compare", nargs="*", default=None, help="other run folders to compare this run with")
    ap.add_argument("--standalone", default=None, metavar="FILE",
                    help="also write one self-contained HTML file of the run, to share (small runs)")
    ap.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="spread the batches over Ray workers: on a cluster at ADDRESS ('auto', 'ray://head:10001'),"
                         " or on a Ray started here when no address is given")
    ap.add_argument("--workers", type=int, default=None, metavar="N",
                    help="how many Ray workers (default: one per GPU, else one per CPU)")
    return ap


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run or resume a sweep; exit 1 if every cell fails, 2 if it could not start."""
    from ..errors import SdragError
    from ..sweeps.engine import SweepFailed, run_sweep

    try:
        run = run_sweep(args.spec, out_dir=args.out, preset=args.preset,
                        engine="ray" if args.ray is not None else None, ray_address=args.ray or None,
                        workers=args.workers)
    except SweepFailed as exc:
        print(cli_hint(f"sweep failed: {exc}"), file=sys.stderr)
        return 1
    except SdragError as exc:
        print(cli_hint(f"sweep not started: {exc}"), file=sys.stderr)
        return 2
    failed = len(run.failed)
    print(f"{len(run.table)} cells ({failed} failed) in {run.out_dir}")
    if args.ray is not None:
        print(run.workers().to_string(index=False))
    if args.compare:
        from ..reports.compare import compare_runs

        compare_runs([run.out_dir, *args.compare], run.out_dir / "compare.html")
        print(f"comparison: {run.out_dir / 'compare.html'}")
    print(f"report: {run.report_path}")
    return _standalone(run.out_dir, args.standalone)


def _standalone(run_dir, out: str | None) -> int:
    if out is None:
        return 0
    from ..errors import SdragError
    from ..reports.html import write_standalone

    try:
        print(f"standalone page: {write_standalone(run_dir, out)}")
    except SdragError as exc:
        print(cli_hint(f"standalone page not written: {exc}"), file=sys.stderr)
        return 2
    return 0


def report_command(args: argparse.Namespace) -> int:
    """Write a run folder's report again (explorer and grid pages), and optionally a standalone page."""
    from ..errors import SdragError
    from ..reports.html import write_report
    from ..runs.folder import RunFolder

    folder = RunFolder(args.run)
    try:
        with folder.lock():  # a sweep writing here now would make the report stale at once
            print(f"report: {write_report(folder.open())}")
    except SdragError as exc:
        print(cli_hint(f"report not written: {exc}"), file=sys.stderr)
        return 2
    return _standalone(args.run, args.standalone)


def sweep_main(argv: list[str] | None = None) -> int:
    """`python -m sdrag sweep ...` on its own: parse `argv`, run the sweep, return the exit code."""
    ap = argparse.ArgumentParser(prog=f"{PROG} sweep", description=run_sweep_command.__doc__)
    return run_sweep_command(add_sweep_arguments(ap).parse_args(argv))


def build_parser() -> argparse.ArgumentParser:
    """`python -m sdrag` and its subcommands, each with a one-line description."""
    ap = argparse.ArgumentParser(prog=PROG, description="Canny-ControlNet + IP-Adapter SD1.5 generation with"
                                 " CLIP style retrieval. Add --help after a command for its options.")
    commands = ap.add_subparsers(title="commands", dest="command", metavar="{demo,sweep,report}")
    demo_ap = commands.add_parser("demo", help=demo.SUMMARY, description=demo.__doc__)
    demo.add_arguments(demo_ap).set_defaults(func=demo.run)
    sweep_ap = commands.add_parser("sweep", help=SWEEP_SUMMARY, description=run_sweep_command.__doc__)
    add_sweep_arguments(sweep_ap).set_defaults(func=run_sweep_command)
    report_ap = commands.add_parser("report", help="write a run folder's report again; --standalone FILE to share",
                                    description=report_command.__doc__)
    report_ap.add_argument("run", help="run folder")
    report_ap.add_argument("--standalone", default=None, metavar="FILE", help="also write one self-contained file")
    report_ap.set_defaults(func=report_command)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand. --help exits 0; no command or an unknown one prints usage and exits 2."""
    ap = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        ap.print_help(sys.stderr)
        return 2
    args = ap.parse_args(argv)
    if args.command is None:  # nothing but a `--`
        ap.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
