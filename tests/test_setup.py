"""The set-up promises: two-command Makefile, CI calling it, mirrored dependency lists, starter styles."""

import re

import tomllib
import yaml
from conftest import REPO, STYLES


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra in ("notebooks", "dev"):
        declared |= {_name(r) for r in project["optional-dependencies"][extra]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    mirrored = {_name(r) for r in pip if not r.startswith("-e")}
    assert declared == mirrored
    assert "torchvision" not in declared


def test_makefile_two_commands_do_all_the_set_up():
    make = (REPO / "Makefile").read_text()
    for target in ("demo:", "test:", "TORCH_SPEC ?= torch==2.13.0", "-m venv", '-m pip install "$(TORCH_SPEC)"'):
        assert target in make, target
    # torch is installed before the package, in its own step.
    assert make.index('"$(TORCH_SPEC)"') < make.index("pip install -e")
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_design_card_layout():
    for name in ("notebooks", "sdrag", "styles", "experiments", "tests", "environment.yml", "README.md"):
        assert (REPO / name).exists(), name


def test_starter_styles_are_licence_clean_and_light():
    manifest = yaml.safe_load((STYLES / "manifest.yaml").read_text())["styles"]
    assert len(manifest) >= 8
    for entry in manifest:
        assert (STYLES / entry["file"]).is_file(), entry["file"]
        assert entry["caption"] and entry["tags"] and entry["source"]
        assert entry["licence"] in {"CC0-1.0", "Public domain"}, entry
    attribution = (STYLES / "ATTRIBUTION.md").read_text()
    assert all(entry["file"] in attribution for entry in manifest)
    assert sum(p.stat().st_size for p in STYLES.iterdir()) < 1_000_000


def test_readme_documents_the_api_contract():
    readme = (REPO / "README.md").read_text()
    for needle in ("make demo", "make test", "run_sweep", "results.csv", "Workbench.from_preset", "library.ingest",
                   "library.search", "wb.run(", "res.image", "res.timings", "sd15", "tiny", "style+layout",
                   "TORCH_SPEC", "run.report_path"):
        assert needle in readme, needle


def _floors() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_name(r): r.split(">=")[1].strip() for r in project["dependencies"] if ">=" in r}


def test_the_floor_job_covers_the_floors_and_the_installed_versions_meet_them():
    import importlib.metadata
    import os

    from packaging.version import Version

    make = (REPO / "Makefile").read_text()
    job = dict(p.split("==") for p in re.search(r"^FLOORS \?= (.+)$", make, re.M).group(1).split())
    floors = _floors()
    for name in ("diffusers", "transformers", "huggingface-hub", "accelerate"):
        # The job pins each floor the project declares for the loading stack, release for release.
        assert Version(job[name.replace("-", "_")]) == Version(floors[name]), name
    for name, floor in floors.items():
        assert Version(importlib.metadata.version(name)) >= Version(floor), name
    if os.environ.get("SDRAG_FLOORS"):  # inside the floor job: running on exactly those releases
        for spec in os.environ["SDRAG_FLOORS"].split():
            name, version = spec.split("==")
            assert importlib.metadata.version(name) == version, spec
