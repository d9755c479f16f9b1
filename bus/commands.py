"""Command lines of AgentFlow's processes, in the `af` CLI's help style.

`af up`, `af worker start`, `af control-plane start`, `af bench`… hand their arguments to these processes'
own parsers, so each parser is a ``CommandParser``: its help reads like every other `af` command's (click's):
``Usage: af up [OPTIONS]``, the description indented under it, then ``Options:`` with ``-h, --help`` last;
a usage error is one line naming the command, as the CLI's are. Lives beside the wire with ``config`` and
``logs`` because every process of AgentFlow (control plane, worker, stack, benchmark) parses a command line.
"""

import argparse
import sys
import textwrap
from typing import Any, NoReturn

USAGE_EXIT_CODE = 2
"""The exit code of a usage error, click's and argparse's alike."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=80)

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)

    def start_section(self, heading: str | None) -> None:
        super().start_section(heading.capitalize() if heading else heading)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        # "-o, --output [table|json]", as click writes it, not "-o {table,json}, --output {table,json}".
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return f"{', '.join(action.option_strings)} {self._format_args(action, action.dest.upper())}"

    def _metavar_formatter(self, action: argparse.Action, default_metavar: str) -> Any:
        # Choices as click shows them, "[a|b]", not "{a,b}".
        if action.metavar is None and action.choices is not None:
            shown = f"[{'|'.join(map(str, action.choices))}]"
            return lambda tuple_size: (shown,) * tuple_size
        return super()._metavar_formatter(action, default_metavar)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser for `af`'s server commands: ``Usage: PROG [OPTIONS]``, the description wrapped and
    indented, ``Options:``; errors as one line ``PROG: message (see 'PROG --help')``, exit code 2."""

    def __init__(self, *, prog: str, description: str, **kwargs: Any) -> None:
        kwargs.setdefault("usage", "%(prog)s [OPTIONS]")
        super().__init__(
            prog=prog,
            description=textwrap.indent(textwrap.fill(description, 76), "  "),
            formatter_class=_Formatter,
            add_help=False,
            **kwargs,
        )
        # -h and --help come last, as click lists them: added at the first parse or help, after every option.
        self._help_pending = True

    def format_help(self) -> str:
        self._add_help_once()
        return super().format_help()

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._add_help_once()
        return super().parse_known_args(args, namespace)

    def _add_help_once(self) -> None:
        if self._help_pending:
            self._help_pending = False
            self.add_argument("-h", "--help", action="help", help="Show this message and exit.")

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE)
