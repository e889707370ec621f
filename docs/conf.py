"""Sphinx configuration: MyST pages, API reference from the docstrings, notebooks with their committed outputs.

Build (strict: any warning, broken reference or missing page fails):

    sphinx-build -W --keep-going -n -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
import implicit_jax

project = "implicit_jax"
author = "the implicit_jax developers"
release = version = implicit_jax.__version__
copyright = "2026, the implicit_jax developers"

extensions = [
    "myst_nb",  # Markdown pages (MyST) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style Args/Returns/Raises sections
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
html_theme = "furo"
html_title = f"implicit_jax {version}"

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # notebooks are rendered with their committed outputs (tests/test_notebooks.py runs them)
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # NamedTuple/dataclass "Attributes:" as fields: autodoc documents the attributes themselves

# Strict mode resolves every cross-reference; names from other libraries (no network here to fetch
# their inventories) and typing internals are not ours to resolve.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(jax|jaxlib|jnp|lax|np|numpy|optax|flax|nnx|chex|ml_collections|orbax|equinox|eqx|typing|collections|abc|dataclasses|os|pathlib|enum)(\..*)?",
    ),
    (
        r"py:.*",
        r"(Array|ArrayLike|PyTree|Any|Callable|Sequence|Mapping|Iterable|Iterator|NamedTuple|Literal|Optional|Union|TypeVar|Self|Protocol|PRNGKey|Key|DTypeLike|Shape)",
    ),
    (
        r"py:.*",
        r"(int|float|str|bool|None|complex|tuple|list|dict|set|type|object|callable|optional|function|Exception|ValueError|RuntimeError|RuntimeWarning|TypeError|KeyboardInterrupt)",
    ),
    (r"py:.*", r"[A-Z][A-Za-z]*(Fn|Function)"),
    # internal types that appear in public signatures
    (
        r"py:class",
        r"implicit_jax\.(_flat\.StateLayout|estimators\.phantom\._PhantomConfig|bilevel\.argmin_estimators\.base\.ArgminProblem"
        r"|solvers\.minimizers\.base\.OuterAwareness|train\.checkpoint\.Restored|bilevel\.unrolled_methods\.base\.UnrolledProblem)",
    ),
]
suppress_warnings = ["myst.header"]
