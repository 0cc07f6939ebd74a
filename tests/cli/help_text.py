"""The check every command's --help gets: it runs, and it explains every option."""

from __future__ import annotations

import pytest


def help_text_explaining_every_option(parser, capsys) -> str:
    """``parser``'s --help output (whitespace collapsed), after checking that it exits 0,
    that every option has a real help string and that every option string appears."""
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for action in parser._actions:
        assert action.help and len(action.help) > 10, action.dest
        for option in action.option_strings:
            assert option in text
    return text
