"""Sphinx configuration: python -m sphinx -W -b html docs docs/_build/html (pip install '.[docs]')."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))

import echoapp  # noqa: E402

project = "echoapp"
author = "echoapp maintainers"
copyright = "echoapp maintainers"
release = version = echoapp.__version__

extensions = ["sphinx.ext.autodoc", "echoapp_reference"]
exclude_patterns = ["_build", "locale", "README*"]
html_theme = "furo"
html_title = f"echoapp {release}"
html_static_path: list[str] = []

# The tutorial is also in Chinese: docs/locale/zh_CN/LC_MESSAGES/tutorial.po
# (sphinx-intl), built with -D language=zh_CN.
locale_dirs = ["locale/"]
gettext_compact = True
gettext_uuid = False
gettext_location = False

# Quotes, but never dashes nor ellipses: "--metrics" stays two hyphens and
# "KEY=VALUE[,KEY=VALUE...]" three dots wherever a page or a docstring has
# them bare, so that what a reader pastes into a shell works (the reference
# shows options and quoted values as code: docs/_ext/echoapp_reference.py).
smartquotes_action = "q"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# echoapp's docstrings are epytext (L{...}, C{...}): echoapp_reference turns
# them into reST for autodoc and its generated tables.
autodoc_docstring_signature = True
nitpicky = False
suppress_warnings = ["ref.python"]
