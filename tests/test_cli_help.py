"""Every ``approxsim`` command's ``--help`` renders: no argparse error, no doubled ``%%``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from approxsim.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_help_text_renders() -> None:
    seen = []
    for name, parser in _parsers(build_parser(), "approxsim"):
        text = parser.format_help()  # a bad % in a help string raises here
        # argparse %-formats help strings but not descriptions: "%%" there shows up doubled.
        assert "%%" not in text, f"{name} --help shows a doubled %"
        seen.append(name)
    assert {"approxsim replay fidelity", "approxsim sweep run", "approxsim cim attack"} <= set(seen)
