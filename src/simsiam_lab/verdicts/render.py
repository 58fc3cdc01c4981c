"""The Jinja templates a table's report and the index are rendered with."""

from __future__ import annotations

import jinja2


def template(name: str) -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("simsiam_lab", "templates"),
        undefined=jinja2.StrictUndefined,
        # Labels, claims and evidence are table YAML text: escaped in HTML, verbatim in Markdown.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)
