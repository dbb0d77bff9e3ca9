"""Checks on flow parameters, run before anything is written (and before Prefect loads).

Each failure is a ``ParameterError`` whose message is one line naming the bad value.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from poolflow.flows.runner_choice import RUNNERS
from poolflow.tasks import storage
from poolflow.tasks.parse import PARSERS

DEFAULT_PATTERN = "**/wiki_*"  # WikiExtractor's output files, at any depth


class ParameterError(ValueError):
    """A flow parameter that cannot work; nothing has been written."""


def check_processes(processes: int | None) -> None:
    """``processes`` must be a positive whole number (or None for the CPU count)."""
    if processes is not None and (
        isinstance(processes, bool) or not isinstance(processes, int) or processes < 1
    ):
        raise ParameterError(f"processes must be a whole number of at least 1, got {processes!r}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_directories(input_dir: str, output_dir: str) -> tuple[Path, str]:
    """The input must be a directory; the output may not be it or lie inside it.

    Returns the resolved input and the output location: a resolved local path, or an fsspec
    URL (``s3://…``) whose protocol is known.
    """
    source = Path(input_dir).expanduser().resolve()
    if not source.is_dir():
        raise ParameterError(f"input directory {input_dir!r} does not exist or is not a directory")
    if storage.is_remote(output_dir):
        try:
            storage.check_protocol(output_dir)
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        return source, output_dir
    target = Path(storage.local_path(output_dir)).expanduser().resolve()
    if target == source or target.is_relative_to(source):
        raise ParameterError(f"output directory {output_dir!r} may not be inside the input directory")
    if target.exists() and not target.is_dir():
        raise ParameterError(f"output {output_dir!r} exists and is not a directory")
    return source, str(target)


def check_encoding(encoding: str) -> None:
    """``encoding`` must be a codec Python knows (utf-8, cp949, euc-kr, …)."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ParameterError(f"unknown encoding {encoding!r}") from None


def check_wiki_parameters(
    input_dir: str,
    output_dir: str,
    processes: int | None,
    parser: str,
    encoding: str,
    runner: str,
) -> tuple[Path, str]:
    """Every check of a wiki-report run; returns the resolved input and the output location."""
    check_processes(processes)
    check_choice("parser", parser, PARSERS)
    check_choice("runner", runner, RUNNERS)
    check_encoding(encoding)
    return check_directories(input_dir, output_dir)
