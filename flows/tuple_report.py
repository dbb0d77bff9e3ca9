"""``tuple-report``: the old ``apply_async`` example done right.

Work chunks go to tasks that each return ``(list_a, list_b, list_c)``; the tuples are
gathered by position, in submission order, into columns ``a``, ``b``, ``c`` of one xlsx.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from poolflow.flows.task_map import map_task
from poolflow.runners.multiprocessing_runner import MultiprocessingTaskRunner
from poolflow.tasks.labels import label_chunk, make_chunks, write_label_columns

label_task = task(name="label-chunk")(label_chunk)
write_task = task(name="write-columns")(write_label_columns)


@flow(name="tuple-report")
def tuple_report(output_path: str, chunks: int = 10, per_chunk: int = 5, processes: int | None = None) -> int:
    """Label ``chunks`` chunks of ``per_chunk`` items in parallel; write columns a, b, c."""
    work = make_chunks(chunks, per_chunk)
    with MultiprocessingTaskRunner(processes) as runner:
        futures = map_task(runner, label_task, {"chunk": work})
        results = [future.result() for future in futures]
        rows: int = runner.submit(write_task, {"path": output_path, "results": results}).result()
    get_run_logger().info("wrote %d rows to %s", rows, output_path)
    return rows
