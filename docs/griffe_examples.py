"""Griffe extension: the house-style ``Example:`` docstring section is an examples section.

Google style reads only the plural ``Examples:`` as the section of ``>>>`` examples; griffe
takes the singular ``Example:`` for an admonition, whose ``>>>`` lines Markdown then renders
as nested blockquotes instead of highlighted code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename each docstring's ``Example:`` section header to ``Examples:`` before parsing."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the section header of `obj`'s docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
