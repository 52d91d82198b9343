"""How a system adds its part to the ``talkingface`` command.

A system's ``commands.py`` (named by ``ModelSpec.commands``) exposes ``COMMANDS``: one
``Command`` for each subcommand it takes part in, by subcommand name::

    COMMANDS = {
        "prepare": Command(prepare, (argument("--labels", help="..."),), help="..."),  # data prepare
        "train": Command("models.mine.train:from_args", (argument("--width", type=int, default=64),)),
        "eval": ..., "build-demo": ..., "bench": ...,
    }

The ``talkingface`` shell (``service.cli``) owns each subcommand and the arguments every
model of it takes (``--data``, ``--out``, ``--device`` ...); a ``Command`` brings only what
is the system's own: its extra flags and the function that does the work. The shell
adds each flag once, however many systems declare it, refuses a flag the chosen model
does not declare, fills in the chosen model's defaults, and calls ``Command.run`` with
the parsed ``argparse.Namespace``. ``run`` returns what the subcommand shows (a dataset
manifest, a training summary, scores per clip, a report, benchmark numbers) and never
prints: the shell does.

Only this module is imported to build the command line, so a ``commands.py`` imports
its system's heavy modules inside its functions, or names them as ``"module:function"``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Argument:
    """One command-line flag: what ``argparse.ArgumentParser.add_argument`` takes.

    Made by ``argument(*flags, **keywords)``; ``keywords`` are argparse's (``type``,
    ``default``, ``action``, ``choices``, ``help`` ...).
    """

    flags: tuple[str, ...]
    keywords: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        """The Namespace attribute the flag sets, as argparse names it."""
        return self._action().dest

    @property
    def default(self):
        """The value when the flag is not given, as argparse computes it (False for ``store_true``)."""
        return self._action().default

    @property
    def name(self) -> str:
        """The flag as messages name it: its first long form (``--finetune-steps``)."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0])

    def add_to(self, parser, **overrides) -> argparse.Action:
        """Add the flag to ``parser`` (or an argument group), with ``overrides`` of its keywords."""
        return parser.add_argument(*self.flags, **{**self.keywords, **overrides})

    def _action(self) -> argparse.Action:
        # A throwaway parser: argparse alone knows how it derives dest and defaults.
        return self.add_to(argparse.ArgumentParser(add_help=False))


def argument(*flags: str, **keywords) -> Argument:
    """An ``Argument``, written as an ``add_argument`` call: ``argument("--width", type=int, default=64)``."""
    if not flags:
        raise ValueError("an argument needs at least one flag")
    return Argument(tuple(flags), dict(keywords))


@dataclass(frozen=True)
class Command:
    """A system's part in one subcommand.

    Args:
        run: the work, called with the parsed ``argparse.Namespace``: a callable, or
            ``"module:function"`` imported when the command runs.
        arguments: the flags only this system takes (``argument(...)``).
        help: one line on what the system does here, shown above its flags in ``--help``.
    """

    run: Callable | str
    arguments: tuple[Argument, ...] = ()
    help: str = ""

    def __call__(self, args: argparse.Namespace):
        """Run the command on ``args``; returns what it returns."""
        run = self.run
        if isinstance(run, str):
            module, _, name = run.partition(":")
            run = getattr(importlib.import_module(module), name)
        return run(args)
