"""Reading documents from the sources a DatasetSpec names."""

from __future__ import annotations

import ast
import glob
from collections.abc import Iterator
from pathlib import Path

from mixopt.errors import InputError
from mixopt.spec import SourceSpec, expand_placeholders

MIN_DOCSTRING_CHARS = 80  # one-line docstrings are mostly code-ish fragments, not prose


def files_of(pattern: str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(expand_placeholders(pattern), recursive=True) if Path(p).is_file())


def read_source(source: SourceSpec, where: str) -> Iterator[tuple[str, str]]:
    """Yield (origin, text) documents."""
    if source.builtin == "pydoc_topics":
        from pydoc_data.topics import topics

        for key in sorted(topics):
            yield f"pydoc_topics:{key}", topics[key]
        return
    pattern = source.glob or source.docstrings
    assert pattern is not None
    paths = files_of(pattern)
    if not paths:
        raise InputError(where, f"no files match {pattern!r} (expands to {expand_placeholders(pattern)!r})",
                         "fix the glob or remove the source")
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise InputError(f"{where}: {path}", f"unreadable file ({e.strerror})",
                             "fix its permissions or remove it from the glob") from None
        if b"\x00" in raw[:8192]:
            continue  # binary file caught by a broad glob
        text = raw.decode("utf-8", errors="replace")
        if source.glob is not None:
            yield str(path), text
        else:
            yield from _docstrings(path, text)


def _docstrings(path: Path, text: str) -> Iterator[tuple[str, str]]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                name = getattr(node, "name", "<module>")
                yield f"{path}:{name}:{getattr(node, 'lineno', 0)}", doc
