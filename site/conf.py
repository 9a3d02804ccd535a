"""Sphinx configuration of the course's website (`make site`, scripts/build_site.py).

scripts/build_site.py writes the sources into site/_build/src (the notebooks as students get
them, with their committed outputs, the home page, _static/ and a copy of this file).
Nothing is executed (the notebooks are the committed, nbval-checked ones) and nothing on a page
comes from another host: MathJax is copied from the npm package into _static at build time.
"""

import os

project = "simclr-teach"
author = "the simclr-teach authors"
copyright = "2026, the simclr-teach authors"  # noqa: A001 - Sphinx's setting name

extensions = ["myst_nb"]
nb_execution_mode = "off"  # the committed outputs, checked by nbval, are the pages' outputs
nb_ipywidgets_js = {}  # no widget scripts from a CDN: build_site.py renders widgets statically
myst_enable_extensions = ["dollarmath", "amsmath", "html_image"]
# "$ x$" is not math: the blog post's quote in 02 writes $\theta$ right after Chinese text, and
# with spaces allowed a "$" closing one formula would open the next
myst_dmath_allow_space = False
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type"]

# MathJax from _static (scripts/build_site.py copies the npm package's es5 build there)
mathjax_path = "mathjax/tex-chtml.js"
html_static_path = ["_static"]

html_theme = "sphinx_book_theme"
html_title = "simclr-teach: SimCLR on a laptop CPU"
html_show_sourcelink = False
# the one setting for launch links: the repository's URL (pyproject.toml, [project.urls]),
# passed in by build_site.py; without it the pages have no Binder / Colab buttons
REPOSITORY = os.environ.get("SIMCLR_SITE_REPOSITORY", "")
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
}
if REPOSITORY:
    html_theme_options |= {
        "repository_url": REPOSITORY,
        "repository_branch": "main",
        "path_to_docs": "notebooks",
        "use_repository_button": True,
        "launch_buttons": {
            "binderhub_url": "https://mybinder.org",
            "colab_url": "https://colab.research.google.com",
            "notebook_interface": "jupyterlab",
        },
    }
