"""The HTML page `dvc plots show` / `dvc plots diff` fill, with Vega inlined so it works offline.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN: without internet every plot
stays blank. `make setup` installs the three (pinned in .dvc/plots/package-lock.json) with
`npm ci` and runs `python -m prunelab.reporting.plots_page`, which writes .dvc/plots/page.html
with their browser builds inlined, then points this clone's .dvc/config.local at that file.
Without the npm packages it writes DVC's CDN page there instead, so `dvc plots` still works
online. The page is built, so untracked: .dvc/config names the committed copy of DVC's CDN page
(.dvc/plots/cdn.html), which every clone has, with or without `make setup`.

dvc-render fills the page by plain text replacement of `{plot_divs}`, `{scripts}` and
`{refresh_tag}`. The offline page has no `{scripts}`: that is where DVC would put its CDN tags.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import click
from dvc_render.html import PAGE_HTML as CDN_PAGE

from prunelab.runtime.files import write_text

PLOTS_DIR = Path(".dvc/plots")  # DVC's folder for custom plot templates
PAGE = "page.html"  # .dvc/config.local (make setup): plots.html_template = plots/page.html
CDN_PAGE_FILE = "cdn.html"  # .dvc/config: the committed copy of CDN_PAGE (relative to .dvc/)
# Browser (UMD) builds in load order: vega-lite needs the global `vega`, vega-embed both.
LIBRARIES = (
    "vega/build/vega.min.js",
    "vega-lite/build/vega-lite.min.js",
    "vega-embed/build/vega-embed.min.js",
)
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

OFFLINE_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>prunelab plots</title>
    <!-- vega, vega-lite and vega-embed, inlined by `make setup` (prunelab.reporting.plots_page) -->
    @LIBRARIES@
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def inline_script(js: str, name: str) -> str:
    """A <script> element holding ``js``, safe to paste into HTML and into DVC's page."""
    for placeholder in PLACEHOLDERS:  # DVC would substitute it inside the library's code
        if placeholder in js:
            raise ValueError(f"{name} contains the DVC page placeholder {placeholder}")
    # The source map sits beside the library, not beside the page; a literal "</script"
    # would end the element early.
    js = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", js).replace("</script", "<\\/script")
    return f"<script>/* {name} */\n{js}</script>"


def offline_page(libraries: Sequence[tuple[str, str]]) -> str:
    """The page template with every (name, code) library inlined, in the given order."""
    scripts = "\n".join(inline_script(js, name) for name, js in libraries)
    return OFFLINE_PAGE.replace("@LIBRARIES@", scripts)


def build(plots_dir: Path) -> bool:
    """Write plots_dir/page.html: offline if node_modules holds the libraries, else DVC's CDN page.

    Returns whether the page works offline.
    """
    modules = plots_dir / "node_modules"
    files = [modules / lib for lib in LIBRARIES]
    if not all(f.is_file() for f in files):
        write_text(plots_dir / PAGE, CDN_PAGE)
        return False
    libraries = [(lib.split("/")[0], f.read_text(encoding="utf-8"))
                 for lib, f in zip(LIBRARIES, files)]
    write_text(plots_dir / PAGE, offline_page(libraries))
    return True


@click.command()
@click.argument("plots_dir", type=click.Path(file_okay=False, path_type=Path),
                default=PLOTS_DIR)
def main(plots_dir: Path) -> None:
    """Write PLOTS_DIR/page.html, the page `dvc plots` fill (default: .dvc/plots)."""
    if build(plots_dir):
        click.echo(f"plots page: {plots_dir / PAGE} (vega inlined, works offline)")
    else:
        click.echo(f"plots page: no vega in {plots_dir / 'node_modules'} (npm missing?): "
                   f"{plots_dir / PAGE} loads it from a CDN and needs internet", err=True)


if __name__ == "__main__":
    main()
