"""Notice a flow run cancelled from the Prefect UI or API while it runs in this process.

Prefect's runners and workers cancel the runs they started by signalling the process. A
run started directly (``poolflow run``, a script) has nobody to signal it, so the task
runner polls the run's state and stops its workers itself when it turns ``Cancelling``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import copy_context
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.logging.loggers import get_logger
from prefect.states import Cancelled

logger = get_logger("poolflow.cancellation")
_CANCELLED_STATES = (StateType.CANCELLING, StateType.CANCELLED)


class CancellationWatcher:
    """Calls ``on_cancel`` once if flow run ``flow_run_id`` is cancelled; polls every ``interval`` s."""

    def __init__(self, flow_run_id: UUID, on_cancel: Callable[[], None], interval: float = 2.0) -> None:
        self.flow_run_id = flow_run_id
        self.on_cancel = on_cancel
        self.interval = interval
        self.cancelled = False  # a cancel was seen and the workers stopped
        self._stopped = threading.Event()
        context = copy_context()  # the flow's settings (API URL) for the watcher thread
        self._thread = threading.Thread(
            target=context.run, args=(self._watch,), name="poolflow-cancellation", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval + 5)

    def _watch(self) -> None:
        with get_client(sync_client=True) as client:
            while not self._stopped.wait(self.interval):
                try:
                    state = client.read_flow_run(self.flow_run_id).state
                except Exception as exc:  # the API may be briefly unreachable; keep watching
                    logger.debug("cannot read flow run state: %s", exc)
                    continue
                if state is not None and state.type in _CANCELLED_STATES:
                    logger.warning("flow run %s was cancelled; stopping its workers", self.flow_run_id)
                    self.cancelled = True
                    self.on_cancel()
                    return

    def conclude(self) -> None:
        """End a flow run this watcher saw cancelled as ``Cancelled``, once its task runs stopped:
        nobody else will (a run started directly has no worker to finish the cancel, and the
        API refuses the flow's own final state while the run is ``Cancelling``)."""
        if not self.cancelled:
            return
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(self.flow_run_id).state
            if state is not None and state.type is StateType.CANCELLING:
                message = "Flow run was cancelled; poolflow stopped its task runs"
                client.set_flow_run_state(self.flow_run_id, Cancelled(message=message), force=True)
