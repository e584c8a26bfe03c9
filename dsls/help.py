"""What dsls adds to LightningCLI's help: `dsls predict --help` (and `test`, the other search command) ends with every
sampler's settings and their defaults. The search module's own options show only under `--model.help <class>`
(the model is a subclass argument), and a sampler's settings not even there: they are nested one level deeper."""
from __future__ import annotations

import textwrap

from jsonargparse import DefaultHelpFormatter

SEARCH_SUBCOMMANDS = ("predict", "test")


class KeepLines(DefaultHelpFormatter):
    """Keeps the line breaks of a description or epilog (one sampler a line), wrapping each long line on its own;
    argparse would run them into one paragraph."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for line in text.splitlines():
            lead = indent + line[: len(line) - len(line.lstrip())]
            hang = lead + ("    " if lead != indent else "")  # an indented line (a list item) hangs
            out.append(textwrap.fill(line.strip(), width, initial_indent=lead, subsequent_indent=hang)
                       if line.strip() else "")
        return "\n".join(out)


def add_search_help(parsers: dict) -> None:
    """The samplers' listing as the epilog of the search commands' parsers (subcommand → parser), after
    jsonargparse gave them their parent's formatter."""
    from dsls.samplers import settings_help

    for name in SEARCH_SUBCOMMANDS:
        if name in parsers:
            parsers[name].epilog = settings_help()
            parsers[name].formatter_class = KeepLines
