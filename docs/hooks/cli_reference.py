"""MkDocs hook: the page ``reference/cli.md``, generated from the ``aprflow`` argparse parsers.

The reference is never written by hand, so it cannot drift from ``--help``: each command's
parser is built (nothing runs, no cluster or GPU is needed) and rendered as its usage line,
description, sub-commands and a table of options with their defaults. argparse has no public
API to walk a parser, so this reads its ``_actions``/``_action_groups`` as its own help
formatter does.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Iterator
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"
# Sub-commands that parse their own arguments instead of being argparse sub-parsers of their
# command (`aprflow transfer` takes options of its own, so `study` and `score` cannot be).
SEPARATE_SUBCOMMANDS = {
    "transfer": (
        "components.transfer.cli:build_study_parser",
        "components.transfer.cli:build_score_parser",
        "components.transfer.cli:build_hashes_parser",
    ),
}
# The group every command shares (components.common.cli.add_common_options): its table is
# shown once, under `aprflow`, and named in one line elsewhere.
COMMON_GROUP = "common options"
# Usage lines wrap at argparse's terminal width: fix it so the page does not depend on the
# terminal that runs `mkdocs build`.
USAGE_COLUMNS = "100"
# Characters that Markdown would read as markup inside a table cell.
MARKDOWN_SPECIAL = str.maketrans({c: f"\\{c}" for c in "\\`*_[]|"} | {"<": "&lt;", ">": "&gt;"})

INTRO = """# Command line reference

Generated from the parsers of `aprflow` when this site is built: the same text as
`aprflow COMMAND --help`. Every command follows one frame: the result on stdout (`--json` for
JSON), progress and logs on stderr (`-q` hides progress, `-v` adds debug lines), exit status 0
on success, 1 on a failure, 2 on a usage error, and `--debug` for a traceback instead of the one
`error: ...` line. `$PWD` in a default stands for the folder the command runs in.
"""


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Adds the generated CLI reference to the site's files (MkDocs event)."""
    files.append(File.generated(config, PAGE, content=cli_reference()))
    return files


def cli_reference() -> str:
    """The Markdown of the CLI reference page."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = USAGE_COLUMNS
    try:
        sections = [INTRO] + [command_section(parser) for parser in all_parsers()]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(sections)


def all_parsers() -> Iterator[argparse.ArgumentParser]:
    """Every command's parser, in the order of ``aprflow --help``, parents before their
    sub-commands."""
    from pipelines.cli import COMMANDS, build_parser, command_parser

    yield build_parser()  # its sub-parsers are placeholders: each command's own parser follows
    for name in COMMANDS:
        yield from _with_subcommands(command_parser(name))
        for target in SEPARATE_SUBCOMMANDS.get(name, ()):
            module, _, function = target.partition(":")
            yield getattr(importlib.import_module(module), function)()


def _with_subcommands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _with_subcommands(child)


def command_section(parser: argparse.ArgumentParser) -> str:
    """One command: heading, usage, description, sub-commands, options, epilog."""
    level = "##" if parser.prog.count(" ") <= 1 else "###"
    lines = [f"{level} {parser.prog}", "", "```text", parser.format_usage().strip(), "```", ""]
    raw = issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    if parser.description:
        lines += [_text_block(parser.description, raw), ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            lines += _subcommand_table(action)
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if _documented(a)]
        if not actions:
            continue
        if group.title == COMMON_GROUP and parser.prog != "aprflow":
            flags = ", ".join(f"`{'/'.join(a.option_strings)}`" for a in actions)
            lines += [f"Common options: {flags} (see [aprflow](#aprflow)).", ""]
            continue
        lines += [f"**{group.title}**", "", "| option | default | description |", "|---|---|---|"]
        lines += [_option_row(action, parser.prog) for action in actions]
        lines.append("")
    if parser.epilog:
        lines += [_text_block(parser.epilog, raw), ""]
    return "\n".join(lines)


def _documented(action: argparse.Action) -> bool:
    return action.help != argparse.SUPPRESS and not isinstance(
        action, (argparse._HelpAction, argparse._SubParsersAction)
    )


def _subcommand_table(action: argparse._SubParsersAction) -> list[str]:
    rows = ["| command | what it does |", "|---|---|"]
    for choice in action._choices_actions:  # the sub-commands' help lines
        prog = action.choices[choice.dest].prog
        anchor = prog.replace(" ", "-")
        rows.append(f"| [`{choice.dest}`](#{anchor}) | {_cell(choice.help or '')} |")
    return [*rows, ""]


def _option_row(action: argparse.Action, prog: str) -> str:
    if action.option_strings:
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            name += f" {_metavar(action)}"
    else:
        name = _metavar(action)
    return f"| `{name}` | {_default(action)} | {_cell(_help(action, prog))} |"


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        metavar = action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    elif action.choices is not None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        metavar = action.dest if not action.option_strings else action.dest.upper()
    if action.nargs == "+":
        return f"{metavar} [{metavar} ...]"
    if action.nargs == "*":
        return f"[{metavar} ...]"
    return f"[{metavar}]" if action.nargs == "?" and not action.option_strings else metavar


def _default(action: argparse.Action) -> str:
    # argparse marks a positional of nargs "*" required although it may be left out.
    if action.required and action.nargs not in ("*", "?"):
        return "required"
    default = action.default
    if action.nargs == 0 or default in (None, argparse.SUPPRESS, [], ""):
        return ""
    if isinstance(default, (list, tuple)):
        default = " ".join(map(str, default))
    return f"`{_portable(str(default))}`"


def _help(action: argparse.Action, prog: str) -> str:
    """The help line as ``--help`` prints it (``%(default)s`` and the like expanded)."""
    if not action.help:
        return ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return _portable(action.help % params)


def _portable(text: str) -> str:
    """``text`` without the absolute path of the checkout that built the site."""
    return text.replace(str(Path.cwd()), "$PWD")


def _cell(text: str) -> str:
    return " ".join(text.split()).translate(MARKDOWN_SPECIAL)


def _text_block(text: str, raw: bool) -> str:
    """A description or epilog: verbatim when the parser prints it verbatim, else a paragraph."""
    text = _portable(text)
    if raw:
        return "```text\n" + text.strip("\n") + "\n```"
    return " ".join(text.split()).translate(MARKDOWN_SPECIAL)
