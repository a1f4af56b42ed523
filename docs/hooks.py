"""MkDocs hooks: the pages that come from the repository itself rather than from docs/.

* the teaching notebooks (notebooks/*.ipynb) become tutorials/<name>.ipynb, the exercise notebooks
  course/solutions/<name>.ipynb and their student versions course/student/<name>.ipynb, rendered
  by mkdocs-jupyter with their committed outputs and pictures (never executed at build time); the
  README's figure becomes assets/efficientformer_stages.png;
* `<!-- npformer:cli -->` in a page becomes the help of every `npformer` command, read from the
  parser the command line itself uses (npformer.cli.build_parser);
* `<!-- npformer:errors -->` becomes the table of error classes and exit codes, read from npformer.errors.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent

FIGURES = {  # a picture in the repository -> where pages find it on the site
    "notebooks/figures/efficientformer_stages.png": "assets/efficientformer_stages.png",
}
NOTEBOOK_FOLDERS = {  # folder in the repository -> folder on the site
    "notebooks": "tutorials",
    "notebooks/exercises": "course/solutions",
    "notebooks/exercises/student": "course/student",
}


@event_priority(100)  # before mkdocs-jupyter's on_files, which picks the .ipynb files up
def on_files(files, config):
    for folder, site_folder in NOTEBOOK_FOLDERS.items():
        for notebook in sorted((ROOT / folder).glob("*.ipynb")):
            files.append(File.generated(config, f"{site_folder}/{notebook.name}", abs_src_path=str(notebook)))
    for source, site_path in FIGURES.items():
        files.append(File.generated(config, site_path, abs_src_path=str(ROOT / source)))
    return files


@event_priority(100)  # before mkdocs-jupyter's on_pre_page, which reads the notebook from abs_src_path
def on_pre_page(page, config, files):
    """mkdocs-jupyter wraps each notebook's File and looks its source path up from the folder the docs are
    in; a notebook from elsewhere in the repository keeps the path it was generated with."""
    wrapped = getattr(page.file, "file", None)
    if wrapped is not None and getattr(wrapped, "generated_by", None) and wrapped.abs_src_path:
        page.file.__dict__["abs_src_path"] = wrapped.abs_src_path
    return page


def on_page_markdown(markdown, page, config, files):
    if "<!-- npformer:cli -->" in markdown:
        markdown = markdown.replace("<!-- npformer:cli -->", cli_reference())
    if "<!-- npformer:errors -->" in markdown:
        markdown = markdown.replace("<!-- npformer:errors -->", error_table())
    return markdown


def cli_reference() -> str:
    """Every command's --help, as the parser prints it, one section per command."""
    import argparse

    from npformer.cli import build_parser

    parser = build_parser()
    sections = [("npformer", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sections += [(f"npformer {name}", sub) for name, sub in action.choices.items()]
    return "\n".join(f"## `{title}`\n\n```text\n{p.format_help().rstrip()}\n```\n" for title, p in sections)


def error_table() -> str:
    """The error classes of npformer.errors with their exit codes and what each means."""
    from npformer import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.NpformerError)]
    classes.sort(key=lambda c: (c.exit_code, c.__name__))
    rows = ["| error | exit code | subclass of | raised for |", "|---|---|---|---|"]
    for c in classes:
        parents = ", ".join(f"`{b.__name__}`" for b in c.__bases__ if b is not object)
        summary = " ".join(inspect.getdoc(c).split("\n\n")[0].split())
        rows.append(f"| `{c.__name__}` | {c.exit_code} | {parents} | {summary} |")
    return "\n".join(rows) + "\n"
