"""Write the HTML page `dvc plots show` fills (`.dvc/config`: plots.html_template), with Vega,
Vega-Lite and Vega-Embed inlined: DVC's own page loads them from a CDN, so offline it is blank.

    python workflow/scripts/dvc_plots_page.py data/dvc/plots.html

The libraries come from the vl-convert-python package (a dependency), which bundles them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import vl_convert

VEGA_LITE = "v5.21"  # DVC's plot templates are Vega-Lite 5 specs

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>SimSiam ablations: DVC plots</title>
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        body { font-family: sans-serif; margin: 1em 2em; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    <h1>SimSiam ablations: per table, each row's curves per epoch and its linear accuracy</h1>
    <p>Series are a table's rows (each row's first seed), named as in its report
    (reports/&lt;table&gt;.md); under <code>dvc plots diff</code>, one per revision and row.</p>
    {plot_divs}
</body>
</html>
"""


def page() -> str:
    # The default snippet sets window.vega, vegaLite and vegaEmbed, which DVC's plot divs call.
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE).replace("</script", "<\\/script")
    # {refresh_tag} and {plot_divs} stay for DVC to fill; {scripts} is left out, so DVC adds no
    # CDN tags.
    return PAGE.replace("{bundle}", bundle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page())
    print(f"wrote {args.out}: the page of `dvc plots show`, Vega inlined", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
