"""The Jinja templates a table's report and the index are rendered with."""

from __future__ import annotations

from typing import Any

import jinja2


def markdown_text(value: Any) -> Any:
    """A value as a Markdown page prints it: text that a table's YAML wrote (labels, claims,
    notes) can neither split a table row (`|`) nor open raw HTML (`<`); other values as they
    are."""
    if not isinstance(value, str):
        return value
    return value.replace("|", "\\|").replace("<", "&lt;")


def template(name: str) -> jinja2.Template:
    html = name.endswith(".html.j2")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("simsiam_lab", "templates"),
        undefined=jinja2.StrictUndefined,
        # Labels, claims and evidence are table YAML text: escaped in HTML, and in Markdown
        # kept from splitting a row or opening raw HTML.
        autoescape=html,
        finalize=None if html else markdown_text,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)
