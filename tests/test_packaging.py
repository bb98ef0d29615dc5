"""`pip install .` builds a wheel holding the connector and config packages, the admin templates, and
requirements.txt's pins as its dependencies; tests, the local fakes (devtools) and the repository's scripts
stay out."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_project_builds_into_a_wheel_that_runs_from_site_packages(tmp_path):
    # A copy of what the build reads, so the build's own files (build/, *.egg-info) stay out of the tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # devtools too, to show that the local fakes stay out of the wheel though they sit beside the product.
    for package in ("connector", "config", "devtools", "tests"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "--no-index",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=240,
    )
    assert built.returncode == 0, built.stdout + built.stderr

    [wheel] = (tmp_path / "dist").glob("connector-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"connector/__init__.py", "config/settings.py", "connector/admin/templates/admin/base.html",
            "connector/invoicexpress/documents.py", "connector/platforms/shopify/__init__.py"} <= set(names)
    assert {name.split("/")[0] for name in names} == {"connector", "config", wheel.name.split("-py3")[0]
                                                      + ".dist-info"}
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.split("#")[0].strip()]
    assert pins and all(f"Requires-Dist: {pin}" in metadata for pin in pins), metadata

    # Installed on its own (no repository on the path), the app finds its templates.
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=240)
    probe = ("import connector, config.settings; from importlib.resources import files; "
             "print(connector.__file__); print(files('connector.admin').joinpath('templates/admin/base.html')"
             ".is_file())")
    ran = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    where, found = ran.stdout.split()
    assert Path(where).is_relative_to(site) and found == "True"
