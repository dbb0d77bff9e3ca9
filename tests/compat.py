"""``make compat``: poolflow on each corner of the Python × Prefect versions it declares.

For each corner: a fresh virtualenv of that Python, ``pip install`` of this checkout (not
editable: what a user gets) with that Prefect series, then, from a fresh folder holding a
``tasks.py`` of its own, ``poolflow run`` on a sample corpus and a user's flow script with
``.map``, ``.submit``, retries and timeouts; last, the runner's test modules. A corner passes
when all of it does. ``--corners extremes`` runs the oldest and newest pairs only (what CI
runs); the default runs them all. Pythons come from pyenv (``pyenv root``/versions).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The runner's own test modules, and the ones about using it in a user's project.
RUNNER_TESTS = [
    "tests/test_runner.py",
    "tests/test_chunked_map.py",
    "tests/test_runner_faults.py",
    "tests/test_item_cache.py",
    "tests/test_prefect_compat.py",
    "tests/test_prefect_parity.py",
    "tests/test_task_context.py",
    "tests/test_user_project.py",
    "tests/test_recording.py",
    "tests/test_async_ctrl_c.py",
]

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# The oldest is the oldest release pyproject.toml allows, so the floor it declares is tested.
PREFECTS = ("3.7.5", "3.8", "3.9")


@dataclass(frozen=True)
class Corner:
    python: str
    prefect: str

    @property
    def name(self) -> str:
        return f"python{self.python}-prefect{self.prefect}"


def corners(which: str) -> list[Corner]:
    """The corners ``which`` names: ``extremes`` (oldest × oldest, newest × newest) or ``all``
    (those two, the newest Python with the oldest Prefect, Python 3.11 with each Prefect
    series, and Python 3.12 with the middle one)."""
    extremes = [Corner(PYTHONS[0], PREFECTS[0]), Corner(PYTHONS[-1], PREFECTS[-1])]
    if which == "extremes":
        return extremes
    others = [Corner(PYTHONS[-1], PREFECTS[0]), Corner("3.12", PREFECTS[1])]
    return [*extremes, *others] + [Corner("3.11", prefect) for prefect in PREFECTS]


def pyenv_python(version: str) -> Path:
    """The newest pyenv-installed interpreter of ``version`` (e.g. ``3.10`` -> 3.10.13)."""
    root = Path(os.environ.get("PYENV_ROOT") or "~/.pyenv").expanduser()
    if shutil.which("pyenv"):
        root = Path(subprocess.check_output(["pyenv", "root"], text=True).strip())
    found = sorted(
        root.glob(f"versions/{version}.*/bin/python"), key=lambda p: [int(x) for x in p.parts[-3].split(".")]
    )
    if not found:
        raise SystemExit(f"compat: no Python {version} under {root}/versions (pyenv install {version})")
    return found[-1]


USER_FLOW = """\
from prefect import flow, task

import tasks  # the project's own module, not poolflow's
from poolflow import MultiprocessingTaskRunner


@task(retries=2, retry_delay_seconds=0)
def flaky(x):
    import os
    marker = f"{os.environ['MARKERS']}/{x}"
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError(f"first attempt of {x} fails")
    return tasks.double(x)


@task(timeout_seconds=1)
def slow(seconds):
    import time
    time.sleep(seconds)
    return seconds


@flow(task_runner=MultiprocessingTaskRunner(processes=2))
def user_flow():
    doubled = [f.result() for f in flaky.map(range(4))]
    quick = slow.submit(0.1).result()
    late = slow.submit(5)
    late.wait()
    return doubled, quick, late.state.type.value


if __name__ == "__main__":
    print(user_flow())
"""
USER_FLOW_OUTPUT = "([0, 2, 4, 6], 0.1, 'FAILED')"


def run(command: list[str], log: Path, **kwargs: object) -> None:
    """Run ``command``, its output appended to ``log``; raise with the log's tail on failure."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}\n{tail}")


def check_corner(corner: Corner, work: Path) -> None:
    """Every step for one corner; raises on the first that fails."""
    log = work / f"{corner.name}.log"
    venv = work / corner.name
    shutil.rmtree(venv, ignore_errors=True)
    run([str(pyenv_python(corner.python)), "-m", "venv", str(venv)], log)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, str(REPO), f"prefect=={corner.prefect}.*", "pytest>=8"], log)
    version = subprocess.check_output([python, "-c", "import prefect; print(prefect.__version__)"], text=True)
    print(f"compat: {corner.name}: installed Prefect {version.strip()}", flush=True)

    project = work / f"{corner.name}-project"
    shutil.rmtree(project, ignore_errors=True)
    (project / "markers").mkdir(parents=True)
    (project / "tasks.py").write_text("def double(x):\n    return 2 * x\n")
    (project / "my_flow.py").write_text(USER_FLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(project / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MARKERS=str(project / "markers"),
    )
    poolflow = str(venv / "bin" / "poolflow")
    run([poolflow, "sample", "corpus", "--files", "4", "--docs", "5"], log, cwd=project, env=env)
    try:
        run([poolflow, "run", "corpus", "-o", "out", "--processes", "2"], log, cwd=project, env=env)
    finally:  # the API server that run kept for the next commands: none follows here
        run([poolflow, "stop-api"], log, cwd=project, env=env)
    flow_output = subprocess.run(
        [python, "my_flow.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    with log.open("a") as out:
        out.write(flow_output.stdout + flow_output.stderr)
    if USER_FLOW_OUTPUT not in flow_output.stdout.splitlines():
        raise RuntimeError(
            f"the user flow printed {flow_output.stdout!r}, not {USER_FLOW_OUTPUT}\n"
            + flow_output.stderr[-4000:]
        )
    test_env = dict(env, CI=os.environ.get("CI", ""))
    test_env.pop("PREFECT_HOME")
    run(
        [str(venv / "bin" / "pytest"), "-q", "-p", "no:cacheprovider", *RUNNER_TESTS],
        log,
        cwd=REPO,
        env=test_env,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corners", choices=["extremes", "all"], default="all")
    parser.add_argument("--only", help="one corner, e.g. 3.13x3.7.5 (Python x Prefect)")
    parser.add_argument(
        "--work", type=Path, help="where the virtualenvs go, kept (default: a temp folder, removed)"
    )
    args = parser.parse_args()
    chosen = corners(args.corners)
    if args.only:
        python, prefect = args.only.split("x")
        chosen = [Corner(python, prefect)]
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        return check_corners(chosen, args.work)
    with tempfile.TemporaryDirectory(prefix="poolflow-compat-") as work:
        return check_corners(chosen, Path(work))


def check_corners(chosen: list[Corner], work: Path) -> int:
    """Check each corner in turn, in virtualenvs under ``work``; 1 if any failed."""
    failed = []
    for corner in chosen:
        started = time.monotonic()
        try:
            check_corner(corner, work)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            failed.append(corner.name)
            print(
                f"compat: {corner.name}: FAILED after {time.monotonic() - started:.0f} s\n{exc}", flush=True
            )
        else:
            print(f"compat: {corner.name}: passed in {time.monotonic() - started:.0f} s", flush=True)
    total = len(chosen)
    print(f"{total - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
