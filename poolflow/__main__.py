"""``python -m poolflow`` and the ``poolflow`` script: the command, in the warm interpreter
kept with its API server when there is one (``poolflow.warm_interpreter``), else here."""

import sys

from poolflow.command_environment import command_environment
from poolflow.warm_interpreter import run_warm


def script() -> None:
    if sys.argv[1:2] != ["exec"]:  # exec's command is the user's, with its own interpreter
        run_warm("poolflow.cli:script", command_environment)  # returns if it is to run here
    from poolflow.cli import script as run_here

    run_here()


if __name__ == "__main__":
    script()
