"""`ra-lite pull`, `ra-lite serve` and `ra-lite doctor`: thin click layers over ra_lite.pull,
ra_lite.serve.server and ra_lite.doctor (registered lazily by ra_lite.cli)."""

from __future__ import annotations

import json
import signal
import sys
import threading

import click

import ra_lite.cli as base_cli
from ra_lite.cli import generation_options, model_options
from ra_lite.defaults import DEFAULT_N_CTX
from ra_lite.errors import RaLiteError


def _notice(message: str) -> None:
    click.echo(f"ra-lite: {message}", err=True)


@click.command("pull")
@click.argument("ref")
@click.option("--from-source", is_flag=True,
              help="Download the original checkpoint and convert + quantize it here.")
@click.option("--force", is_flag=True, help="Download (or rebuild) even if a copy is cached.")
@click.option("--keep-f16", is_flag=True, help="With --from-source, keep the F16 GGUF.")
@click.option("--registry", type=click.Path(dir_okay=False), default=None,
              help="Another registry file (default: the bundled one, or RA_LITE_REGISTRY).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def pull_command(ref, from_source, force, keep_f16, registry, as_json):
    """Download REF into the Hugging Face cache and verify its sha256.

    REF: a registry name (rewardanything-8b:Q4_K_M) or hf://owner/repo/file.gguf[@revision].
    """
    from ra_lite.pull import pull

    result = pull(ref, from_source=from_source, force=force, registry=registry,
                  keep_f16=keep_f16, progress=not as_json, notify=_notice)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    check = f"sha256 verified ({result.checked_against})" if result.verified else \
        "no checksum known to verify against"
    click.echo(f"{result.path} ({result.size_bytes / 1e9:.2f} GB, {result.source}, {check})")


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
@click.option("--remote", default=None,
              help="Judge on this llama.cpp/vLLM server instead of a local model.")
@click.option("--remote-kind", default="llama.cpp", show_default=True,
              type=click.Choice(["llama.cpp", "vllm", "vllm-legacy", "openai"]))
@click.option("--remote-model", default=None, help="Model name the remote server expects.")
@click.option("--remote-api-key", envvar="RA_LITE_REMOTE_API_KEY", default=None)
@click.option("--workers", type=int, default=None,
              help="Parallel judgments (default 1; with --remote, 4).")
@click.option("--log-requests/--no-log-requests", default=True, show_default=True)
@model_options
@generation_options
def serve_command(model_arg, host, port, api_key, max_request_bytes, max_responses, max_batch,
                  queue_size, remote, remote_kind, remote_model, remote_api_key, workers,
                  log_requests, **settings):
    """Serve the RewardAnything HTTP API (POST /api/rewardanything, /api/rewardanything_batch,
    GET /health) for MODEL (default: the embedded smoke-test model)."""
    from ra_lite.serve.server import RewardServer, ServerConfig

    if model_arg and settings.get("model") and model_arg != settings["model"]:
        raise RaLiteError("two models given (MODEL and --model)", "pass one of them")
    settings["model"] = model_arg or settings.get("model")
    if workers is not None and workers > 1 and not remote:
        raise RaLiteError("a local model runs one judgment at a time (one KV cache)",
                          "drop --workers, or use --remote to judge on a serving engine")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        _notice(f"warning: listening on {host} without --api-key: anyone who can reach it can "
                "use it")
    judge = _remote_judge(remote, remote_kind, remote_model, remote_api_key, settings) \
        if remote else base_cli.load_judge(**settings)
    config = ServerConfig(host=host, port=port, api_key=api_key,
                          max_request_bytes=max_request_bytes, max_responses=max_responses,
                          max_batch=max_batch, queue_size=queue_size,
                          workers=workers or (4 if remote else 1))
    server = RewardServer(judge, config, log=_notice if log_requests else None)
    run_until_signal(server)
    judge.close()


def _remote_judge(url, kind, model, api_key, settings):
    from ra_lite.judge import JudgeOptions
    from ra_lite.remote import load_remote

    options = JudgeOptions(think_budget=0 if settings["no_think"] else settings["think_budget"],
                           temperature=settings["temperature"], top_p=settings["top_p"],
                           seed=settings["seed"])
    # --model, if it is a local GGUF, lends its chat template to the remote prompt.
    template = settings.get("model")
    if not (template and str(template).endswith(".gguf")):
        template = None
    return load_remote(url, kind, api_key=api_key, model=model, options=options,
                       template=template)


def run_until_signal(server) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully (finish queued judgments)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        _notice(f"serving {server.judge.model_name} on {server.url} "
                f"(POST /api/rewardanything, /api/rewardanything_batch; GET /health)")
        sys.stderr.flush()
        while not stop.wait(0.5):
            pass
        pending = server.worker.pending
        _notice(f"shutting down: finishing {pending} queued or running job(s)")
        finished = server.shutdown(timeout=None)
        _notice(f"stopped ({server.worker.completed} jobs done"
                f"{'' if finished else ', some unfinished'})")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("doctor")
@click.option("--model", "-m", default=None,
              help="Model to plan offload for (path, registry name or hf://; never downloaded). "
                   "Default: the embedded one.")
@click.option("--n-ctx", type=int, default=DEFAULT_N_CTX, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def doctor_command(model, n_ctx, as_json):
    """Show the llama.cpp backend, CPU features, GPUs and what --n-gpu-layers auto would do."""
    from ra_lite.doctor import doctor, format_report

    report = doctor(model, n_ctx)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
