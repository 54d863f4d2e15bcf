"""Sphinx configuration for the madeflow docs (built in CI with warnings as errors)."""

project = "madeflow"
author = "madeflow developers"
copyright = "2026, madeflow developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax 3 from the sphinx-mathjax-offline package, copied into _static: math renders
    # without a network (tests/test_docs.py checks that no script is loaded from a URL).
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "furo"  # wide code blocks scroll sideways instead of being clipped
html_title = "madeflow"
pygments_style = "sphinx"
pygments_dark_style = "monokai"
suppress_warnings = ["myst.header"]
