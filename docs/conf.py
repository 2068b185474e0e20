"""Sphinx configuration: the API reference is built from the docstrings (autodoc, numpydoc
style through napoleon), offline; ``sphinx-build -W`` treats every warning as an error, and
the doctest builder runs the examples of the docstrings and the guides."""

project = "hyprvdb"
author = "the hyprvdb authors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.doctest", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"          # signatures carry the names; the docstrings say the types
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
exclude_patterns = ["_build", "*.png"]
html_theme = "alabaster"
doctest_global_setup = """
import numpy as np
import hyprvdb
"""
napoleon_use_ivar = True
