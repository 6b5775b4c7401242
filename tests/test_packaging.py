"""The wheel carries every module of the source tree, the demo corpus and the top-level scripts.

setup.py lists packages and package data by hand; a new sub-package, module or data file that it misses would
work in this checkout (and in an editable install) and only break for someone who `pip install`s the package.
The expected contents are read from the source tree, so nothing new can be forgotten silently.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Build outputs and environments are not part of the source; copying them would slow the build or leak stale files.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "outputs", "runs", "build", "dist", "*.egg-info",
                                    "__pycache__", ".pytest_cache", ".ruff_cache", "tmp")
TOP_LEVEL = ("configuration_mer.py", "train.py")
DEMO_PARQUET = "modeling_mer/data/demo_corpus/demo_corpus.parquet"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Build from a copy: setuptools builds in place (build/, *.egg-info), which would litter the checkout.
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                           "--quiet", "-w", str(root / "dist")], cwd=source, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = (root / "dist").glob("mer-*.whl")
    return path


def source_modules():
    return sorted(path.relative_to(REPO).as_posix() for path in (REPO / "modeling_mer").rglob("*.py")
                  if "__pycache__" not in path.parts)


def test_wheel_holds_every_module_the_demo_corpus_and_the_scripts(wheel):
    modules = source_modules()
    # The three packages the brief names must be among what we compare, or the comparison proves nothing.
    for package in ("modeling_mer/", "modeling_mer/data/", "modeling_mer/training/"):
        assert f"{package}__init__.py" in modules
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in [*modules, DEMO_PARQUET, *TOP_LEVEL] if name not in names]
    assert not missing, f"the wheel lacks {missing}: add them to packages / package_data / py_modules in setup.py"
    with zipfile.ZipFile(wheel) as archive:
        # Byte-identical to the source tree: not a stale copy from an earlier build.
        assert archive.read(DEMO_PARQUET) == (REPO / DEMO_PARQUET).read_bytes()
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        console_scripts = archive.read(entry_points).decode()
    assert "mer-train = train:main" in console_scripts and "mer-predict = modeling_mer.cli:main" in console_scripts


def test_installed_wheel_imports_and_finds_its_demo_corpus(wheel, tmp_path):
    # A pure-Python wheel unpacked on sys.path is what `pip install` puts in site-packages. Run from an empty
    # folder with that folder first on the path, so the checkout (or its editable install) cannot stand in.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import configuration_mer, modeling_mer, train\n"
        "from modeling_mer.data.demo import DEMO_CORPUS_PATH, load_demo\n"
        "from modeling_mer.training import experiment\n"
        "print(modeling_mer.__file__, train.__file__, DEMO_CORPUS_PATH, len(load_demo()), sep='\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    package_file, train_file, corpus_path, rows = done.stdout.split()
    for path in (package_file, train_file, corpus_path):
        assert Path(path).is_relative_to(site), path
    assert int(rows) == 1000  # the bundled corpus's size (modeling_mer/data/demo_corpus/README.md)
