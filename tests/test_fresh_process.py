"""Runs the modules of conftest.FRESH_PROCESS_MODULES, each in a process of its own (see tests/conftest.py)."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from tests.conftest import FRESH_PROCESS_ENV, FRESH_PROCESS_MODULES, ROOT


@pytest.mark.parametrize("module", FRESH_PROCESS_MODULES)
def test_module_in_a_fresh_process(module, tmp_path):
    report = tmp_path / "report.xml"
    env = dict(os.environ, **{FRESH_PROCESS_ENV: "1"})
    result = subprocess.run([sys.executable, "-m", "pytest", "-n0", "-p", "no:cacheprovider", f"--junitxml={report}", module],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    suite = ElementTree.parse(report).getroot().find("testsuite")
    counts = {key: int(suite.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    print(module, counts)
    assert counts["tests"] > 0 and counts["failures"] == counts["errors"] == 0, counts
