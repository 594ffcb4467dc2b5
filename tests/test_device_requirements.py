"""scripts/check_requirements.py, and that the GPU machine's payload carries every requirement the machine lacks:
on the H100 (2026-11-28) bert-score was not carried and ICU's job stopped at its first import of it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess

import pytest
from conftest import REPO, load_script

pytest.importorskip("tomllib", reason="scripts/check_requirements.py reads pyproject.toml with Python 3.11's tomllib")


def check_requirements():
    return load_script("check_requirements")


def test_prepare_device_carries_or_finds_every_requirement_of_pyproject():
    """Fails when a requirement is added to pyproject.toml without a place in prepare_device.sh's lists (it failed
    with bert-score left out of DOWNLOAD, as the payload of 2026-11-28 had it)."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "prepare_device.sh")], cwd=REPO, capture_output=True,
                         text=True, env=dict(os.environ, PREPARE_DEVICE_CHECK_ONLY="1"), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "every requirement is carried or on the machine"


def test_prepare_device_names_a_missing_tofu_file_before_touching_the_device_folder(tmp_path):
    """TOFU's files are copied into the payload from $TOFU_DATA_DIR: a folder without them is one error naming the
    file and the variable, before anything is downloaded or the prepared folder is replaced."""
    (tmp_path / "tofu").mkdir()
    out = subprocess.run(["bash", str(REPO / "scripts" / "prepare_device.sh")], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, TOFU_DATA_DIR=str(tmp_path / "tofu"),
                                                         GPU_CHECK_DEVICE_DIR=str(tmp_path / "device")))
    assert out.returncode == 1
    assert out.stderr.strip() == (f"error: {tmp_path / 'tofu' / 'full.json'} not found: set TOFU_DATA_DIR to a "
                                  "folder holding TOFU's JSON files, as the hub's locuslab/TOFU has them")
    assert not (tmp_path / "device").exists()


@pytest.fixture
def pyproject(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\ndependencies = ["numpy", "no-such-distribution-pmc>=1", "numpy>=9999",\n'
                    '    "pytest; python_version < \'3\'"]\n'
                    '[project.optional-dependencies]\nextra = ["tqdm>=0.1"]\nother = ["not-installed-either"]\n')
    return path


def test_check_requirements_names_each_requirement_this_environment_does_not_meet(pyproject, capsys):
    numpy = importlib.metadata.version("numpy")
    assert check_requirements().main(["--pyproject", str(pyproject), "--extra", "extra"]) == 1
    # numpy and tqdm are met; pytest's marker does not hold; the "other" extra is not asked for
    assert capsys.readouterr().out.splitlines() == ["no-such-distribution-pmc>=1: not installed",
                                                    f"numpy>=9999: {numpy} installed"]
    assert check_requirements().main(["--pyproject", str(pyproject), "--extra", "other"]) == 1
    assert "not-installed-either: not installed" in capsys.readouterr().out


def test_check_requirements_covered_by_reads_names_in_any_spelling(pyproject, capsys):
    script = check_requirements()
    assert script.main(["--pyproject", str(pyproject), "--covered-by", "NumPy"]) == 1
    assert capsys.readouterr().out == "no-such-distribution-pmc>=1: neither carried nor on the machine\n"
    assert script.main(["--pyproject", str(pyproject), "--extra", "extra",
                        "--covered-by", "numpy", "No_Such.Distribution-PMC", "TQDM"]) == 0
    assert capsys.readouterr().out == ""


def test_check_requirements_refuses_an_extra_pyproject_does_not_have(pyproject):
    with pytest.raises(SystemExit, match=r"no optional dependencies \['gpu'\]; it has \['extra', 'other'\]"):
        check_requirements().main(["--pyproject", str(pyproject), "--extra", "gpu"])


def test_the_harness_meets_its_own_requirements_here(capsys):
    """The check gpu_check.sh runs on the machine, here (the CI's environment installs them all)."""
    assert check_requirements().main(["--extra", "smollm2"]) == 0, capsys.readouterr().out
