"""The command line's parser: flags never abbreviated (a close match suggested instead), jsonargparse's nested
report of a bad value condensed to one line naming the key, and sampler names checked in every config source (the
parser drops an unknown key of the samplers mapping silently)."""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from dsls.errors import ConfigError


class DSLSArgumentParser(LightningArgumentParser):
    """A bad argument ends in jsonargparse's `tip: … --help` and `error: …` lines only: the usage it would print
    first is ~60 lines of every option, above the line that matters. Abbreviated flags are refused, with the full
    name suggested: argparse would otherwise read --trainer.max_step=100 as --trainer.max_steps=100 silently."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def print_usage(self, file=None) -> None:
        pass

    def error(self, message: str, ex: Exception | None = None):
        message = condense(message)
        unknown = re.search(r"nrecognized arguments: (.*)", message)
        if unknown and "never abbreviated" not in message:  # (an inner parser's report has its hint already)
            flags = [a.split("=", 1)[0] for a in unknown[1].split() if a.startswith("--")]
            options = [o for o in self._option_string_actions if o.startswith("--")]
            near = {f: difflib.get_close_matches(f, options, n=1, cutoff=0.8) for f in flags}
            hints = [m[0] for m in near.values() if m]
            if hints:
                message += f"; did you mean {' and '.join(hints)}? (flags are never abbreviated)"
        super().error(message, ex)


NOISE = ("Does not validate", "Subtypes:", "Errors:", "Given value", "- Problem with given class", "- Expected a "
         "<class 'NoneType'>")  # jsonargparse's report of each Union level: the cause is the line they surround


def condense(message: str) -> str:
    """jsonargparse's nested report of a bad value (a 'Parser key' per level, the Union's alternatives, the whole
    given value) as one line: the full key and the innermost cause, e.g. `data.batch_size: expected int, got 'lots'`."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if len(lines) < 2:
        return message
    keys = [m[1] for ln in lines if (m := re.match(r'Parser key "([^"]+)":', ln))]
    causes = [ln.lstrip("- ") for ln in lines if not ln.startswith(NOISE) and not ln.startswith("Parser key")]
    if not causes:
        return message
    cause = re.sub(r"Expected a <class '(\w+)'>\. Got value: (.*)", lambda m: f"expected {m[1]}, got {m[2]!r}",
                   causes[-1])
    out = f"{'.'.join(keys)}: {cause}" if keys else cause
    while (nested := re.match(r"([\w.]+): ([\w.]+): ", out)):  # an inner parser's condensed report: one key
        out = f"{nested[1]}.{nested[2]}: {out[nested.end():]}"
    return out


def _named_samplers(node, source: str):
    """(source, mapping) for each `samplers` mapping under a `model` section of a parsed config or override value."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "model" and isinstance(value, dict):
            for where in (value, value.get("init_args")):
                if isinstance(where, dict) and isinstance(where.get("samplers"), dict):
                    yield source, where["samplers"]
        elif isinstance(value, dict):  # a whole-CLI config: fit: {model: ...}
            yield from _named_samplers(value, source)


def check_sampler_names(args: list[str]) -> None:
    """Refuse a sampler name that is not registered, in any config file or override of the command line. The parser
    drops such a key silently (jsonargparse reads a mapping into SamplerSettings field by field), so a typo would
    run the other samplers and exit 0."""
    from dsls.samplers import SAMPLERS

    found = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("--config", "-c"):
            path = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            if os.path.isfile(path):
                found += _named_samplers(yaml.safe_load(Path(path).read_text()), path)
        elif eq and flag in ("--model", "--model.samplers", "--model.init_args.samplers"):
            parsed = yaml.safe_load(value)
            node = {"model": parsed} if flag == "--model" else {"model": {"samplers": parsed}}
            found += _named_samplers(node, arg)
    for source, samplers in found:
        for name in samplers:
            if name not in SAMPLERS:
                near = difflib.get_close_matches(str(name), SAMPLERS, n=1)
                raise ConfigError(f"{source}: unknown sampler {name!r}" + (f" (did you mean {near[0]!r}?)" if near
                                                                           else "")
                                  + f"; registered samplers: {', '.join(SAMPLERS)}")
