"""The docs cannot go stale: every code block of README.md and docs/ runs, and the API reference has every public name.

- ``python`` blocks: each page's blocks run in order as one script, in a fresh process.
- ``bash`` blocks: every command of ours (``python scripts/...``, ``python benchmarks/...``) runs
  with ``IMPLICIT_JAX_DRY_RUN=1``, which checks its flags, config file, overrides and estimator
  specs and stops before loading data (``implicit_jax.train.cli.exit_if_dry_run``); workdirs are
  moved under a temporary folder. Install and environment commands (``pip``, ``apt-get``,
  ``python3 -m venv``, ``python -m pytest``) are what ``.ci/run`` itself runs on a fresh machine,
  so they are listed, not run here; any other command fails the test.
- Every fenced block names its language (``python``, ``bash``, ``text`` for output, or a MyST
  directive), so no block escapes the checks above.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses and whole runs: the full suite, not the quick tier

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts and "notebooks" not in p.parts),
]
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)\s*$", re.S | re.M)
LANGUAGES = {"python", "bash", "text"}
#: commands ``.ci/run`` runs on a fresh machine (installs, lint, types, the tests themselves): listed, not run here
ENVIRONMENT_COMMANDS = (
    "pip install",
    "python3 -m venv",
    ". .venv/bin/activate",
    "apt-get",
    "python -m pytest",
    "srun ",
    "ruff ",
    "mypy",
    "sphinx-build",
)


def blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block of ``page`` (MyST directives as ``{name}``)."""
    found = []
    for match in FENCE.finditer(page.read_text()):
        language = match.group("info").strip().split(" ")[0]
        body = "\n".join(line[len(match.group("indent")) :] for line in match.group("body").splitlines())
        found.append((language, body))
    return found


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def commands(body: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, ``&&`` chains split, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    found = []
    for line in joined.splitlines():
        line = line.split(" # ")[0].strip()
        if line and not line.startswith("#"):
            found += [part.strip() for part in line.split("&&") if part.strip()]
    return found


def test_every_block_names_its_language():
    for page in PAGES:
        for language, body in blocks(page):
            assert language in LANGUAGES or language.startswith("{"), (
                f"{page_id(page)}: a block without a known language: {body[:80]!r}"
            )


PYTHON_PAGES = [page for page in PAGES if any(language == "python" for language, _ in blocks(page))]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=page_id)
def test_python_blocks_run(page, tmp_path):
    script = "\n\n".join(body for language, body in blocks(page) if language == "python")
    (tmp_path / "page.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "page.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, f"{page_id(page)}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


SHELL_PAGES = [page for page in PAGES if any(language == "bash" for language, _ in blocks(page))]


@pytest.mark.parametrize("page", SHELL_PAGES, ids=page_id)
def test_documented_commands_parse(page, tmp_path):
    ran = 0
    for language, body in blocks(page):
        if language != "bash":
            continue
        for command in commands(body):
            if command.startswith(ENVIRONMENT_COMMANDS):
                continue
            words = shlex.split(command)
            env_words = [w for w in words if re.match(r"^[A-Z_]+=", w)]
            words = words[len(env_words) :]
            assert words[:1] == ["python"] and words[1].startswith(("scripts/", "benchmarks/")), (
                f"{page_id(page)}: a command the docs test neither runs nor lists: {command!r}"
            )
            words = [
                re.sub(r"^(--workdir[= ]?)(.+)$", lambda m: m.group(1) + str(tmp_path / m.group(2).lstrip("/")), w) for w in words
            ]
            if "--workdir" in words:  # the flag and its value as two words
                i = words.index("--workdir")
                words[i + 1] = str(tmp_path / words[i + 1].lstrip("/"))
            env = dict(os.environ, IMPLICIT_JAX_DRY_RUN="1", **dict(w.split("=", 1) for w in env_words))
            out = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
            assert out.returncode == 0 and "dry run:" in out.stdout, (
                f"{page_id(page)}: {command}\n{out.stdout[-1000:]}\n{out.stderr[-2000:]}"
            )
            ran += 1
    assert (
        ran
        or page.name == "README.md"
        or all(c.startswith(ENVIRONMENT_COMMANDS) for lang, b in blocks(page) if lang == "bash" for c in commands(b))
    )


# ---- the site and its API reference ------------------------------------------------------------------------------

PUBLIC_PACKAGES = [
    "implicit_jax",
    "implicit_jax.estimators",
    "implicit_jax.solvers",
    "implicit_jax.bilevel",
    "implicit_jax.nn",
    "implicit_jax.train",
]


def inventory_objects(html: Path) -> dict[str, object]:
    """Every Python object the built site documents: ``full name -> the object``."""
    from sphinx.util.inventory import InventoryFile

    with open(html / "objects.inv", "rb") as handle:
        inventory = InventoryFile.load(handle, "", os.path.join)
    objects = {}
    for kind, entries in inventory.items():
        if not kind.startswith("py:") or kind == "py:module":
            continue
        for name in entries:
            module_name, _, attribute = name.rpartition(".")
            try:
                objects[name] = getattr(importlib.import_module(module_name), attribute)
            except (ImportError, AttributeError):
                continue  # methods and attributes: their owner is what the check below looks for
    return objects


def test_the_site_builds_strict_and_documents_every_public_name(tmp_path):
    html = tmp_path / "html"
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", "docs", str(html)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    documented = inventory_objects(html)
    ids = {id(obj) for obj in documented.values()}
    missing = [
        f"{package}.{name}"
        for package in PUBLIC_PACKAGES
        for name, obj in ((n, getattr(importlib.import_module(package), n)) for n in importlib.import_module(package).__all__)
        if not isinstance(obj, type(sys)) and id(obj) not in ids
    ]
    assert not missing, f"public names without an entry in the API reference (docs/api/): {missing}"
