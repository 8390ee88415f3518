"""`ra-lite batch --engine ray`: the batch's judging step on a Ray Data actor pool.

    ra-lite batch in.jsonl -o out.jsonl --engine ray                       # a local cluster
    ra-lite batch in.jsonl -o out.jsonl --engine ray --address auto --actors 2,8 --slots 4

    from ra_lite.on_ray.engine import connect, judge_dataset
    connect("auto")
    records = judge_dataset(ray.data.read_json("s3://bucket/requests/"), "ra-8b-Q4_K_M.gguf")

Exactly once, as a local batch: run_batch (ra_lite.batch) stays the driver and the single writer.
It reads what the output already holds, leaves those ids out, and hands the rest to RayEngine,
which streams them through the actor pool and back; each finished record is appended and
fsync'd on the driver under the output's lock. A SIGKILL of the driver loses only what was in
flight; a rerun finishes without loss or duplicates. The summary, JUnit/Markdown reports, exit
codes and the judgment cache (one per node, in each node's user cache) behave as in a local batch.

Failures never loop: a row that fails on its own is an error record made inside the actor. Ray's
actor-pool defaults retry forever (max_restarts and max_task_retries -1); here both are bounded
(MAX_RESTARTS, MAX_TASK_RETRIES), so a native crash restarts its actor and retries its block a
few times, then the run stops with the error named (a rerun resumes).

Local clusters (no --address): started in this process with `ray.init(address="local")` (never
attaching to a leftover /tmp/ray session), usage stats off, and `num_cpus` logical CPUs given to
Ray (at least 4, so the read task and the actors never wait on each other on a small machine);
each actor reserves ACTOR_CPUS logical CPUs. llama.cpp's threads spin: more actors than cores on
one machine slow each other down, so the default is one actor, and several actors on one node
want --threads (cores / actors), which each actor's model is loaded with.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from ra_lite.errors import RaLiteError

MAX_RESTARTS = 2           # an actor that dies (a native crash) is restarted at most this often
MAX_TASK_RETRIES = 2       # a block whose actor died is retried at most this often
ACTOR_CPUS = 0.5           # logical CPUs an actor reserves (llama.cpp uses its own threads)
LOCAL_MIN_CPUS = 4


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RaLiteError("--engine ray needs Ray Data, which is not installed",
                          "pip install 'ra-lite[ray]' (ray[data]), or use --parallel on one "
                          "machine") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` ("auto", "HOST:PORT", "ray://HOST:PORT"), or start a local
    one (module docstring). A cluster already joined in this process is kept."""
    import logging

    ray = require_ray()
    # ra-lite prints its own one-line progress; Ray Data's bars and INFO lines would bury it.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address="local", num_cpus=num_cpus or max(LOCAL_MIN_CPUS, os.cpu_count() or 1),
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RaLiteError(f"cannot reach the Ray cluster at {address or 'a new local cluster'} "
                          f"({str(error).splitlines()[0][:200]})",
                          "start it with `ray start --head` (and `ray start --address HEAD:6379` "
                          "on each worker), or drop --address for a local cluster") from None


def parse_actors(actors: str | int) -> dict:
    """--actors N or MIN,MAX as ActorPoolStrategy's arguments."""
    text = str(actors).strip()
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1 and parts[0] >= 1:
        return {"size": parts[0]}
    if len(parts) == 2 and 1 <= parts[0] <= parts[1]:
        return {"min_size": parts[0], "max_size": parts[1]}
    raise RaLiteError(f"--actors {actors!r} is not a count or a range",
                      "write --actors N, or --actors MIN,MAX with 1 <= MIN <= MAX")


def judge_dataset(ds, model: str | None = None, *, remote: dict | None = None, options=None,
                  actors: str | int = 1, slots: int | str = "auto", n_ctx: int | None = None,
                  use_cache: bool = True, batch_size: int = 8, actor_class=None,
                  n_threads: int | None = None):
    """Ray Data rows {"id", "principle", "prompt", "responses"} (or {"id", "request": JSON}) ->
    rows {"id", "record": the batch record as JSON, "cached", "pid"}: lazily, in the user's
    pipeline. actor_class: a JudgeActor subclass to run instead (e.g. to add logging)."""
    from ray.data import ActorPoolStrategy

    from ra_lite.on_ray.actor import JudgeActor

    def as_request_row(row: dict) -> dict:
        if "request" in row:
            return {"id": str(row["id"]), "request": row["request"]}
        request = {k: row[k] for k in ("principle", "prompt", "responses") if k in row}
        return {"id": str(row["id"]), "request": json.dumps(request, ensure_ascii=False)}

    with warnings.catch_warnings():
        # Ray 2.60 warns that per-actor restart limits move elsewhere in 2.64; until then they
        # are the only way to bound its infinite defaults.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map(as_request_row).map_batches(
            actor_class or JudgeActor, batch_size=batch_size, compute=ActorPoolStrategy(**parse_actors(actors)),
            fn_constructor_kwargs={"model": model, "remote": remote,
                                   "options": asdict(options) if options is not None else None,
                                   "n_ctx": n_ctx, "slots": slots, "use_cache": use_cache,
                                   "n_threads": n_threads},
            num_cpus=ACTOR_CPUS, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)


class RayEngine:
    """run_batch's judging step on Ray (module docstring)."""

    def __init__(self, model: str | None = None, *, remote: dict | None = None,
                 address: str | None = None, actors: str | int = 1, slots: int | str = "auto",
                 n_ctx: int | None = None, use_cache: bool = True, batch_size: int = 8,
                 progress: bool = True, actor_class=None, n_threads: int | None = None):
        parse_actors(actors)                      # a bad value fails before anything starts
        if address is None and remote is None and model and str(model).endswith(".gguf") \
                and not Path(model).is_file():
            # A local cluster shares this machine's files: say it now, not from inside an actor.
            raise RaLiteError(f"model file {model} does not exist", "check the path")
        self.model, self.remote, self.address = model, remote, address
        self.actors, self.slots, self.n_ctx = actors, slots, n_ctx
        self.use_cache, self.batch_size, self.progress = use_cache, batch_size, progress
        self.actor_class, self.n_threads = actor_class, n_threads

    def __call__(self, items: list, options):
        if not items:
            return
        ray = require_ray()
        connect(self.address)
        by_id = {item.id: item for item in items}
        rows = [{"id": item.id, "request": json.dumps(
                    {"principle": item.request.principle, "prompt": item.request.prompt,
                     "responses": item.request.responses}, ensure_ascii=False)} for item in items]
        ds = judge_dataset(ray.data.from_items(rows), self.model, remote=self.remote,
                           options=options, actors=self.actors, slots=self.slots,
                           n_ctx=self.n_ctx, use_cache=self.use_cache,
                           batch_size=self.batch_size, actor_class=self.actor_class,
                           n_threads=self.n_threads)
        started, done, pids = time.perf_counter(), 0, set()
        try:
            for row in ds.iter_rows():
                done += 1
                pids.add(row["pid"])
                if self.progress:
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    print(f"\rra-lite: ray: {done}/{len(items)} judged, {rate:.2f} judgments/s, "
                          f"{len(pids)} actor process(es) so far ", end="", file=sys.stderr,
                          flush=True)
                yield by_id[str(row["id"])], json.loads(row["record"]), bool(row["cached"])
        except Exception as error:    # noqa: BLE001 - Ray wraps everything; name the cause
            if isinstance(error, RaLiteError):
                raise
            raise _cluster_error(error) from None
        finally:
            if self.progress and done:
                print(file=sys.stderr)


def _cluster_error(error: Exception) -> RaLiteError:
    """A Ray failure as one line: ra-lite's own message when an actor raised one."""
    text = str(error)
    own = re.search(r"RaLiteError: (.+)", text)
    if own:
        problem, _, fix = own.group(1).strip().partition(" — ")
        return RaLiteError(problem[:500], (fix or "fix it") + "; then rerun: the records "
                           "already written are kept and the rerun resumes after them")
    first = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    return RaLiteError(f"the Ray run failed ({type(error).__name__}: {first[:300]})",
                       f"an actor crashed more than {MAX_RESTARTS} times or a block failed "
                       f"{MAX_TASK_RETRIES + 1} times; see the Ray logs (/tmp/ray/session_latest/"
                       "logs); a rerun resumes after the records already written")
