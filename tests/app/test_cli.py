"""`python -m sdrag`: subcommands listed with one-line descriptions, help exits 0, mistakes exit 2 clearly."""

import subprocess
import sys

import pytest
from conftest import REPO

from sdrag.app import cli
from sdrag.app.demo import cli_hint


def exit_code(argv) -> int:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    return exc.value.code


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_both_subcommands_and_exits_0(flag, capsys):
    assert exit_code([flag]) == 0
    out = capsys.readouterr().out
    assert "run the chain once on the sample sketch" in out and "run or resume a sweep spec" in out
    assert "demo" in out and "sweep" in out and "report" in out


def test_no_command_prints_usage_with_the_subcommands_and_exits_2(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "usage: python -m sdrag" in err and "demo" in err and "sweep" in err


@pytest.mark.parametrize("command, needle", [("sweep", "--compare"), ("demo", "--preset")])
def test_subcommand_help_exits_0(command, needle, capsys):
    assert exit_code([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"python -m sdrag {command}" in out and needle in out


def test_unknown_subcommand_exits_2_naming_it_and_the_choices(capsys):
    assert exit_code(["paint"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'paint'" in err and "demo" in err and "sweep" in err


def test_sweep_that_cannot_start_exits_2_with_the_reason(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "sweep not started: Sweep spec not found" in capsys.readouterr().err


def test_python_names_in_errors_get_their_command_line_spelling():
    assert cli_hint("x. Fix: pass another out_dir.").endswith("(On the command line: out_dir is --out.)")
    assert "allow_pickle=True exists only in Python" in cli_hint("opt in with allow_pickle=True")
    assert cli_hint("Fix: pass a real PNG.") == "Fix: pass a real PNG."


def test_python_dash_m_sdrag_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "sdrag", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "sweep" in done.stdout and "demo" in done.stdout


def test_report_writes_the_explorer_again_and_a_standalone_page(wb, tmp_path, capsys):
    from sdrag.sweeps.engine import run_sweep

    spec = {"name": "r", "base": {"prompt": "a city", "steps": 1, "size": 64}, "metrics": False,
            "axes": {"seed": [0, 1]}}
    run = run_sweep(spec, out_dir=tmp_path / "run", workbench=wb, progress=False)
    run.report_path.unlink()
    share = tmp_path / "share.html"
    assert cli.main(["report", str(run.out_dir), "--standalone", str(share)]) == 0
    assert run.report_path.is_file() and "data:image/jpeg;base64," in share.read_text()
    assert "thumbs/" not in share.read_text()  # nothing outside the file
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "report not written" in capsys.readouterr().err
