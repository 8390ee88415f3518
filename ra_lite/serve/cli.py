"""`ra-lite serve`: a thin click layer over ra_lite.serve.server (registered lazily by
ra_lite.cli)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import click

import ra_lite.cli as base_cli
from ra_lite.cli import cache_option, generation_options, model_options, remote_options
from ra_lite.errors import RaLiteError
from ra_lite.notices import print_notice as _notice
from ra_lite.serve.server import DEFAULT_DRAIN_TIMEOUT


@click.command("serve")
@click.argument("model_arg", metavar="[MODEL]", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. 0.0.0.0 exposes the server to the network: set --api-key.")
@click.option("--port", type=int, default=8000, show_default=True, help="0 = any free port.")
@click.option("--api-key", envvar="RA_LITE_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' (env: RA_LITE_API_KEY).")
@click.option("--max-request-bytes", type=int, default=1 << 20, show_default=True)
@click.option("--max-responses", type=int, default=32, show_default=True,
              help="Most responses in one request.")
@click.option("--max-batch", type=int, default=64, show_default=True,
              help="Most requests in one batch call.")
@click.option("--queue-size", type=int, default=64, show_default=True,
              help="Jobs that may wait; more get 503.")
@click.option("--parallel", default=None, metavar="auto|P",
              help="Judge up to P queued requests at once: a local model in one context "
                   "(continuous batching), a --remote server by P concurrent requests (auto: "
                   "its slots, from llama-server's /props). 1 = one at a time. Default: auto.")
@click.option("--workers", type=int, default=None, hidden=True,
              help="Deprecated: the old name of --parallel for --remote.")
@click.option("--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT, show_default=True,
              help="On SIGTERM, seconds queued judgments may still run; then they get 503.")
@click.option("--log-requests/--no-log-requests", default=True, show_default=True)
@click.option("--reward-principle", default=None,
              help="The principle POST /get_reward (OpenRLHF's remote reward) judges by.")
@cache_option(default=False)
@model_options
@generation_options()
@remote_options
def serve_command(model_arg, host, port, api_key, max_request_bytes, max_responses, max_batch,
                  queue_size, workers, parallel, drain_timeout, log_requests, reward_principle,
                  use_cache, **settings):
    """Serve the RewardAnything HTTP API (POST /api/rewardanything, /api/rewardanything_batch,
    GET /health) for MODEL (default: the embedded smoke-test model).

    The judgment cache is off by default: a server's clients (an RL trainer above all) send
    requests that rarely repeat exactly, and a shared server should not keep every client's
    text unless its operator asks for it (--cache)."""
    from ra_lite.serve.server import RewardServer, ServerConfig
    from ra_lite.slots import parse_slots

    if model_arg and settings.get("model") and model_arg != settings["model"]:
        raise RaLiteError("two models given (MODEL and --model)", "pass one of them")
    settings["model"] = model_arg or settings.get("model")
    if workers is not None:
        if parallel is not None and parse_slots(parallel) != workers:
            raise RaLiteError(f"--parallel {parallel} and --workers {workers} together",
                              "pass --parallel alone (--workers is its old name)")
        _notice(f"--workers is deprecated: it is --parallel {workers} now")
        parallel = workers
    slots = parse_slots(parallel)             # bad values fail before the model loads
    remote = settings["remote"]
    base_cli.check_remote_flags(settings)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        _notice(f"warning: listening on {host} without --api-key: anyone who can reach it can "
                "use it")
    judge = base_cli.load_judge(**settings)
    with contextlib.ExitStack() as stack:
        stack.callback(judge.close)
        config = ServerConfig(host=host, port=port, api_key=api_key,
                              max_request_bytes=max_request_bytes, max_responses=max_responses,
                              max_batch=max_batch, queue_size=queue_size,
                              parallel=judge.resolve_slots(slots),
                              drain_timeout=drain_timeout, reward_principle=reward_principle)
        store, cache = base_cli.open_cache(use_cache, settings["model"], remote=bool(remote))
        if store is not None:
            stack.callback(store.close)
        server = RewardServer(judge, config, log=_notice if log_requests else None, cache=cache)
        if config.parallel > 1:
            _notice(f"judging up to {config.parallel} requests at once (--parallel)")
        run_until_signal(server)


def run_until_signal(server) -> None:
    """Serve until SIGINT/SIGTERM, then drain (see RewardServer.shutdown): new requests get
    503, queued judgments run until --drain-timeout, the rest get 503. A second signal ends the
    drain at once."""
    stop = threading.Event()

    def on_signal(*_):
        if stop.is_set():
            server.hurry()
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        _notice(f"serving {server.judge.model_name} on {server.url} "
                f"(POST /api/rewardanything, /api/rewardanything_batch, /get_reward; GET /health)")
        sys.stderr.flush()
        while not stop.wait(0.5):
            pass
        pending = server.worker.pending
        _notice(f"shutting down: finishing {pending} queued or running job(s) within "
                f"{server.config.drain_timeout:g} s (--drain-timeout), then 503 to the rest; "
                "signal again to stop now")
        sys.stderr.flush()
        finished = server.shutdown(timeout=None)
        worker = server.worker
        _notice(f"stopped ({worker.completed} jobs done"
                f"{'' if finished else f', {worker.refused_at_deadline} answered 503 at the drain deadline'})")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
