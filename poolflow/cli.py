"""The ``poolflow`` command line: run the flows locally, make a sample corpus, serve deployments.

Arguments are checked before Prefect is imported, so a bad one fails in a moment with one
line and nothing written. Runs use an API server of the command's own unless Prefect's settings
(any of its sources: ``poolflow.prefect_settings``) name an API URL.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from poolflow.command_environment import set_command_environment, verbose
from poolflow.crashed_runs import mark_crashed_runs, tagged_with_this_process
from poolflow.flows.parameters import DEFAULT_PATTERN, ParameterError, check_processes, check_wiki_parameters
from poolflow.flows.runner_choice import RUNNERS
from poolflow.local_api import ApiStartError, flush_to_api
from poolflow.local_api import say_on_stderr as say
from poolflow.tasks.parse import PARSERS
from poolflow.warm_start import api_with_warm_start

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

EXIT_FAILED_ITEMS = 1
EXIT_USAGE = 2
EXIT_API_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _positive_int(text: str) -> int:
    try:
        value = int(text)
        check_processes(value)
    except (ValueError, ParameterError):
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}") from None
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poolflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="parse a WikiExtractor directory into xlsx files and a report")
    run.add_argument("input_dir")
    run.add_argument("-o", "--output", required=True, help="output directory (items/ and report.xlsx)")
    run.add_argument("--processes", type=_positive_int, default=None, help="worker processes (default: CPUs)")
    run.add_argument("--parser", choices=PARSERS, default="exact", help="exact (default) or html5lib (lossy)")
    run.add_argument(
        "--pattern", default=DEFAULT_PATTERN, help=f"glob of input files (default: {DEFAULT_PATTERN})"
    )
    run.add_argument("--encoding", default="utf-8", help="input encoding, e.g. cp949 (default: utf-8)")
    run.add_argument("--runner", choices=RUNNERS, default="multiprocessing")
    run.add_argument("--dask-address", help="tcp://host:8786 of an existing Dask scheduler (--runner dask)")
    run.add_argument("--parquet", action="store_true", help="also write OUT/report.parquet (for pandas)")
    run.add_argument("-v", "--verbose", action="store_true", help="print Prefect's log lines too")

    sample = commands.add_parser("sample", help="write a synthetic WikiExtractor corpus")
    sample.add_argument("directory")
    sample.add_argument("--files", type=_positive_int, default=20)
    sample.add_argument("--docs", type=_positive_int, default=40, help="documents per file")
    sample.add_argument("--seed", type=int, default=7)

    demo = commands.add_parser("demo", help="the old count() example: items sleeping at random")
    demo.add_argument("--items", type=_positive_int, default=10)
    demo.add_argument("--processes", type=_positive_int, default=6)
    demo.add_argument("--max-seconds", type=float, default=2.0)

    tuples = commands.add_parser(
        "tuple-report", help="the old apply_async example: tuples to columns a, b, c"
    )
    tuples.add_argument("-o", "--output", required=True, help="xlsx file to write")
    tuples.add_argument("--chunks", type=_positive_int, default=10)
    tuples.add_argument("--per-chunk", type=_positive_int, default=5)
    tuples.add_argument("--processes", type=_positive_int, default=None)
    execute = commands.add_parser(
        "exec",
        help="run a command (e.g. python my_flow.py) against the API server this command uses",
        description="Run CMD with PREFECT_API_URL set to the API server poolflow starts (unless "
        "Prefect's settings name an API); exits with CMD's exit code.",
    )
    execute.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    commands.add_parser(
        "stop-api", help="stop the API server kept for the next commands on this PREFECT_HOME, now"
    )
    serve = commands.add_parser("serve", help="serve the wiki-report, tuple-report and demo deployments")
    serve.add_argument("--input-dir", default="sample-corpus", help="wiki-report's default input_dir")
    serve.add_argument("--output-dir", default="out", help="wiki-report's default output_dir")
    serve.add_argument("--processes", type=_positive_int, default=None)
    serve.add_argument("--cron", default="0 2 * * *", help="wiki-report's schedule (UTC)")
    serve.add_argument("--interval", type=float, default=None, help="seconds; replaces --cron")
    serve.add_argument("--schedules", choices=("on", "off"), default="off", help="activate the schedules")
    return parser


class Terminated(BaseException):
    """SIGTERM arrived; raised so that the process unwinds and exits normally."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _exit_normally_on_sigterm() -> None:
    # During a flow run Prefect turns SIGTERM into an exception, then re-sends the signal
    # to whatever handler was there before. With the default handler the process would die
    # on the spot, skipping the exit hooks that stop Prefect's embedded API server and
    # leaving it orphaned; with this one it unwinds, cleans up and exits with 143.
    signal.signal(signal.SIGTERM, _raise_terminated)


def _quiet_prefect_defaults(argv: Sequence[str]) -> None:
    """Before Prefect is imported: no telemetry, and its log lines only with ``--verbose``."""
    set_command_environment(argv)
    if not verbose(argv):
        # Prefect writes "--- Error logging to API ---" on every failed batch while a server
        # is away; the API watcher says it once instead.
        logging.raiseExceptions = False


@contextlib.contextmanager
def _api_session(flows_module: str, pool_processes: int | None) -> Iterator[str | None]:
    """Prefect's API for this command (started here unless Prefect has an API URL); runs
    left RUNNING by killed poolflow processes are marked Crashed, and this process's flow
    runs are tagged so that the next command can do the same for them. With a server of
    its own the terminal hears once when it goes away and once when it is back.
    While the API server starts, the worker pool of ``pool_processes`` (None: the flow's
    runner is not poolflow's) starts and ``flows_module`` (with Prefect) is imported."""
    prepare = functools.partial(importlib.import_module, flows_module)
    with api_with_warm_start(say, prepare, pool_processes) as local_url, ThreadPoolExecutor(1) as side:
        # Housekeeping beside the run, not before it (an API round trip on the run's path).
        crashed = side.submit(copy_context().run, mark_crashed_runs)
        from poolflow.api_watch import ApiWatcher
        from poolflow.prefect_settings import prefects_own

        configured = prefects_own()
        watch = (
            ApiWatcher(configured.api_url, say, api_key=configured.api_key)
            if configured.api_url and not local_url
            else contextlib.nullcontext()
        )
        with tagged_with_this_process(), watch:
            yield local_url
        _say_crashed(crashed)


def _say_crashed(marking: Future[list[str]]) -> None:
    """One line per flow run that ``mark_crashed_runs`` marked, or why it could not look."""
    try:
        names = marking.result()
    except Exception as exc:  # housekeeping: the run itself is not affected
        say(f"could not check for runs left running by killed poolflow processes: {exc}")
        return
    for name in names:
        say(f"flow run {name!r} was left running by a killed poolflow process: marked Crashed")


def _run(args: argparse.Namespace) -> int:
    _, target = check_wiki_parameters(
        args.input_dir, args.output, args.processes, args.parser, args.encoding, args.runner
    )
    processes = args.processes or os.cpu_count() or 1
    say(f"{args.input_dir}/{args.pattern} -> {target} on {processes} processes ({args.runner})")
    pool_processes = processes if args.runner == "multiprocessing" else None
    with _api_session("poolflow.flows.wiki_report", pool_processes) as local_url:
        from poolflow.flows.wiki_report import wiki_report

        state = wiki_report(
            input_dir=args.input_dir,
            output_dir=args.output,
            processes=args.processes,
            pattern=args.pattern,
            parser=args.parser,
            encoding=args.encoding,
            runner=args.runner,
            dask_address=args.dask_address,
            parquet=args.parquet,
            progress_bar=True,
            return_state=True,
        )
    _report(state, None if local_url else _flow_run_url(state))
    return 0 if state.is_completed() else EXIT_FAILED_ITEMS


def _report(state: State[Any], flow_run_url: str | None) -> None:
    """The run's summary table, or its state's message when it ended before having one."""
    from rich.console import Console

    from poolflow.flows.outcome import outcome_of
    from poolflow.summary import print_summary

    outcome = outcome_of(state.result(raise_on_failure=False)) if state.is_final() else None
    if outcome is not None:
        print_summary(Console(stderr=True), state.name or state.type.value, outcome, flow_run_url)
    else:
        say(f"{state.name}: {state.message}")


def _flow_run_url(state: State[Any]) -> str | None:
    """Where the UI shows this flow run (a server's UI; the local API has none)."""
    from prefect.settings import PREFECT_UI_URL

    ui, flow_run_id = PREFECT_UI_URL.value(), state.state_details.flow_run_id
    return f"{ui}/runs/flow-run/{flow_run_id}" if ui and flow_run_id else None


def _sample(args: argparse.Namespace) -> int:
    from poolflow.tasks.sample import write_sample_corpus

    documents = write_sample_corpus(Path(args.directory), args.files, args.docs, args.seed)
    print(f"wrote {args.files} files, {documents} documents under {args.directory}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    with _api_session("poolflow.flows.demo", args.processes):
        from poolflow.flows.demo import demo

        demo(items=args.items, processes=args.processes, max_seconds=args.max_seconds)
    return 0


def _tuple_report(args: argparse.Namespace) -> int:
    with _api_session("poolflow.flows.tuple_report", args.processes or os.cpu_count() or 1):
        from poolflow.flows.tuple_report import tuple_report

        tuple_report(
            output_path=args.output, chunks=args.chunks, per_chunk=args.per_chunk, processes=args.processes
        )
    return 0


def _exec(args: argparse.Namespace) -> int:
    from poolflow.script_api import CommandError
    from poolflow.script_api import main as exec_main

    try:
        return exec_main(args.argv)
    except (ApiStartError, CommandError) as exc:
        print(f"poolflow: error: {exc}", file=sys.stderr)
        return EXIT_API_UNAVAILABLE if isinstance(exc, ApiStartError) else 127


def _stop_api(args: argparse.Namespace) -> int:
    from poolflow import kept_api
    from poolflow.prefect_settings import read_api_settings

    home = read_api_settings().home
    stopped = kept_api.end(home)
    say(f"stopped the API server on port {stopped.port}" if stopped else f"no API server kept on {home}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from poolflow.deployments.definitions import DeploymentSettings, serve_deployments

    settings = DeploymentSettings(
        input_dir=str(Path(args.input_dir).resolve()),
        output_dir=str(Path(args.output_dir).resolve()),
        processes=args.processes,
        wiki_cron=args.cron,
        wiki_interval_seconds=args.interval,
        schedules_active=args.schedules == "on",
        tuple_output=str(Path(args.output_dir).resolve() / "tuples.xlsx"),
    )
    # Without a configured API, the command's own server, not Prefect's temporary one: that one
    # shares the terminal's process group, so Ctrl-C killed it before the runner could pause its
    # deployments against it, and the runner then hung on a dead API.
    interrupted: list[int] = []
    signal.signal(signal.SIGINT, functools.partial(_remember_and_interrupt, interrupted))
    with _api_session("poolflow.deployments.definitions", None), contextlib.suppress(SystemExit):
        serve_deployments(settings)  # Prefect's runner exits with 0 on SIGTERM before it has started
    # Serving ends only on a signal; Prefect's runner pauses the deployments and returns.
    word, code = ("interrupted", EXIT_INTERRUPTED) if interrupted else ("terminated", EXIT_TERMINATED)
    print(f"poolflow: {word}; the deployments are paused until the next serve", file=sys.stderr)
    return code


def _remember_and_interrupt(interrupted: list[int], signum: int, frame: object) -> None:
    """Ctrl-C while serving: noted (Prefect's runner swallows the KeyboardInterrupt), then raised."""
    interrupted.append(signum)
    raise KeyboardInterrupt


COMMANDS = {
    "serve": _serve,
    "run": _run,
    "sample": _sample,
    "demo": _demo,
    "tuple-report": _tuple_report,
    "stop-api": _stop_api,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poolflow`` script; returns the process exit code."""
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.command == "exec":  # the command's own settings and signals stay its own
        return _exec(args)
    _exit_normally_on_sigterm()
    _quiet_prefect_defaults(argv)
    try:
        return COMMANDS[args.command](args)
    except ParameterError as exc:
        parser.exit(EXIT_USAGE, f"poolflow: error: {exc}\n")
    except KeyboardInterrupt:
        print("poolflow: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("poolflow: terminated; rerun the same command to resume", file=sys.stderr)
        return EXIT_TERMINATED
    except ApiStartError as exc:
        print(f"poolflow: error: {exc}", file=sys.stderr)
        return EXIT_API_UNAVAILABLE


def script() -> None:
    """The ``poolflow`` script: ``main``, then the process ends at once with its exit code.

    When ``main`` returns, the outputs are written, the API server and the workers are
    stopped; what Prefect still queues (log lines, events for a configured API) is sent and
    log handlers are flushed here. The interpreter's own teardown of the thousands of modules
    and objects a run loads is skipped: nothing of it is needed once the outputs are written.
    An exception out of ``main`` ends the process the usual way, traceback and all.
    """
    end_process(main())


def end_process(code: int) -> NoReturn:
    """Send and flush what is queued, then end the process with ``code`` (``script``)."""
    if "prefect" in sys.modules:
        flush_to_api()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    script()
