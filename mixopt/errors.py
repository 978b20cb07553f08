"""Errors that reach users.

Bad input must end as one line that names where the problem is and how to fix it, so every user-facing
error carries those parts separately and the CLI formats them the same way everywhere.
"""

from __future__ import annotations


class MixoptError(Exception):
    """Base of every error mixopt raises on purpose."""


class InputError(MixoptError):
    """Bad input from a user: a spec, a run table, a mixture, a command-line argument.

    `where` names the file and/or field (``search/demo.yaml: optimizer.top_k``), `fix` says what to do.
    The CLI prints ``str(err)`` as a single line and exits with code 2.
    """

    def __init__(self, where: str, problem: str, fix: str | None = None) -> None:
        self.where = where
        self.problem = problem
        self.fix = fix
        msg = f"{where}: {problem}" if where else problem
        if fix:
            msg += f" — fix: {fix}"
        super().__init__(msg)


class ProxyFailed(MixoptError):
    """A proxy run that could not produce trustworthy metrics (diverged, crashed)."""
