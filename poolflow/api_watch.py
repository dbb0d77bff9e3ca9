"""Say once that Prefect's API went away, and once that it is back.

While a server restarts, Prefect's clients retry and its log and event workers report
every failed batch; a run goes on and its states reach the server when it answers again.
The person at the terminal needs two lines, not hundreds: this thread polls the API's
``/health`` and says when it stops answering and when it answers again.
"""

from __future__ import annotations

import threading
from types import TracebackType

import httpx

from poolflow.local_api import Say


class ApiWatcher:
    """Polls ``{api_url}/health`` every ``interval`` seconds on a daemon thread."""

    def __init__(self, api_url: str, say: Say, interval: float = 1.0, api_key: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.say = say
        self.interval = interval
        self.outages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="poolflow-api-watch", daemon=True)

    def __enter__(self) -> ApiWatcher:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        reachable = True
        with httpx.Client(timeout=self.interval * 2, headers=self.headers) as client:
            while not self._stop.wait(self.interval):
                now = _answers(client, f"{self.api_url}/health")
                if now == reachable:
                    continue
                reachable = now
                if reachable:
                    self.say("Prefect's API is back; the run's states and logs reach it again")
                else:
                    self.outages += 1
                    self.say(
                        f"Prefect's API at {self.api_url} is unreachable; the run goes on and "
                        "sends its states when the API is back"
                    )


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False
