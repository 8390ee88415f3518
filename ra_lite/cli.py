"""The `ra-lite` command line: a thin layer over the library functions.

Commands live in the modules that implement them and are imported only when invoked (LazyGroup),
so `ra-lite --help` does not load numpy, gguf or llama.cpp. Every user-caused error is printed
as one `error: <problem> — <fix>` line with exit status 2; a failed quality gate exits 1.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import click

from ra_lite.defaults import DEFAULT_N_CTX
from ra_lite.errors import RaLiteError

# name -> "module:attribute" of a click command, imported on first use.
LAZY_COMMANDS = {
    "convert": "ra_lite.convert.cli:convert_command",
    "quantize": "ra_lite.convert.cli:quantize_command",
    "imatrix": "ra_lite.convert.cli:imatrix_command",
    "bench": "ra_lite.bench.cli:bench_command",
    "pull": "ra_lite.pull:pull_command",
    "serve": "ra_lite.serve.cli:serve_command",
    "doctor": "ra_lite.doctor:doctor_command",
}

# Exit status, documented in the README: 0 everything judged (and any gate passed), 1 a
# --fail-under gate failed, 2 bad input or usage (one `error:` line), 3 some requests could not
# be judged (their error records are written; the gate's verdict, if any, is over the rest).
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3


def _lazy_available(name: str) -> bool:
    module = LAZY_COMMANDS[name].split(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        lazy = [name for name in LAZY_COMMANDS if _lazy_available(name)]
        return sorted([*super().list_commands(ctx), *lazy])

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and _lazy_available(name):
            module, attr = LAZY_COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RaLiteError as e:
            click.echo(f"error: {e.one_line()}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup)
@click.version_option(package_name="ra-lite")
def main():
    """Judge responses against a principle with RewardAnything on llama.cpp."""


def model_options(f):
    """Options that choose and load the model (arguments of ra_lite.load)."""
    options = [
        click.option("--model", "-m", default=None,
                     help="GGUF file. Default: the embedded smoke-test model (not a real judge)."),
        click.option("--n-ctx", type=int, default=DEFAULT_N_CTX, show_default=True,
                     help="Context length in tokens (capped at the model's trained length)."),
        click.option("--n-gpu-layers", default="auto", show_default=True,
                     help="Layers to offload: auto (all, if this build has CUDA/Metal), 0 = CPU, N, -1 = all."),
        click.option("--threads", "n_threads", type=int, default=None,
                     help="CPU threads. Default: all CPUs up to 4, else half of them."),
        click.option("--flash-attn/--no-flash-attn", default=True, show_default=True),
        click.option("--verbose", is_flag=True, help="Show llama.cpp's own log."),
        click.option("--prompt-cache/--no-prompt-cache", default=True, show_default=True,
                     help="Reuse the shared prompt prefix's KV state saved by an earlier run "
                          "(in ~/.cache/ra-lite/prompt-cache)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def generation_options(no_think: bool = True, **defaults):
    """The JudgeOptions flags (ra_lite.options.GENERATION_FLAGS, declared there once), with a
    command's own defaults where they differ (bench is greedy); `--no-think` where wanted."""
    from dataclasses import fields

    from ra_lite.options import GENERATION_FLAGS, JudgeOptions

    base = {f.name: f.default for f in fields(JudgeOptions)}
    unknown = set(defaults) - set(base)
    assert not unknown, f"no such generation setting: {unknown}"
    options = []
    for flag in GENERATION_FLAGS:
        default = defaults.get(flag.field, base[flag.field])
        if flag.kind is bool:
            options.append(click.option(flag.declaration, flag.field, default=default,
                                        show_default=True, help=flag.help))
        else:
            options.append(click.option(flag.declaration, flag.field, type=flag.kind,
                                        default=default, show_default=True, help=flag.help))
        if flag.field == "think_budget" and no_think:
            options.append(click.option("--no-think", is_flag=True,
                                        help="Skip reasoning (faster, less accurate)."))

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def remote_options(f):
    """Options that point a command at servers instead of a local model (ra_lite.remote)."""
    options = [
        click.option("--remote", default=None, metavar="URL[,URL...]",
                     help="Judge on this llama.cpp/vLLM server instead of a local model; several "
                          "URLs share the work (least outstanding first) and fail over."),
        click.option("--remote-kind", default="llama.cpp", show_default=True,
                     type=click.Choice(["llama.cpp", "vllm", "vllm-legacy", "openai"])),
        click.option("--remote-model", default=None, help="Model name the remote server expects."),
        click.option("--remote-api-key", envvar="RA_LITE_REMOTE_API_KEY", default=None),
        click.option("--remote-tokenizer", default=None, type=click.Path(dir_okay=False),
                     help="The served model's GGUF, to build token-id prompts here (needed for "
                          "vLLM)."),
        click.option("--remote-text-prompts", is_flag=True,
                     help="Send prompts as text (llama-cpp-python's server needs it); requests "
                          "that contain control-token text are then refused."),
        click.option("--remote-route", default="auto", show_default=True,
                     type=click.Choice(["auto", "choices", "grammar"]),
                     help="choices: read each score's probability from the server (one "
                          "one-token request per choice point); grammar: decode the answer on "
                          "the server under a grammar (integer scores only); auto: choices "
                          "wherever the server allows."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def check_remote_flags(settings: dict) -> None:
    """--remote-* flags mean nothing without --remote: say so instead of ignoring them
    (--remote-api-key may come from the environment, so it is not checked)."""
    if settings.get("remote"):
        return
    given = [flag for flag, key in (("--remote-tokenizer", "remote_tokenizer"),
                                    ("--remote-text-prompts", "remote_text_prompts"),
                                    ("--remote-model", "remote_model")) if settings.get(key)]
    if settings.get("remote_route", "auto") != "auto":
        given.append("--remote-route")
    if given:
        raise RaLiteError(f"{', '.join(given)} only apply with --remote URL",
                          "add --remote http://HOST:PORT, or drop them to judge locally")


def remote_arguments(settings: dict) -> dict:
    """load_remote's keyword arguments from the --remote-* flags (remote_options)."""
    return {"url": settings["remote"], "kind": settings.get("remote_kind", "llama.cpp"),
            "model": settings.get("remote_model"), "api_key": settings.get("remote_api_key"),
            "tokenizer": settings.get("remote_tokenizer"),
            "text_prompts": settings.get("remote_text_prompts", False),
            "route": settings.get("remote_route", "auto")}


def cache_option(default: bool):
    """--cache/--no-cache: the judgment cache across runs (ra_lite.judgment_cache)."""
    return click.option(
        "--cache/--no-cache", "use_cache", default=default, show_default=True,
        help="Answer requests judged before (same model file, settings and request) from the "
             "judgment cache, and store new judgments in it (see `ra-lite cache stats`).")


def open_cache(use_cache: bool, model, remote: bool = False):
    """(JudgmentCache, ModelCache for `model`) or (None, None); a remote model has no identity
    to key on, so it gets no cache (said once)."""
    if not use_cache:
        return None, None
    if remote:
        click.echo("ra-lite: the judgment cache is off with --remote (the server's model file "
                   "cannot be identified)", err=True)
        return None, None
    from ra_lite.judgment_cache import JudgmentCache, for_model

    store = JudgmentCache(notify=lambda message: click.echo(f"ra-lite: {message}", err=True))
    return store, for_model(model, store)


def load_judge(model, n_ctx, n_gpu_layers, n_threads, flash_attn, verbose, think_budget,
               no_think, temperature, top_p, seed, repetition_guard=True, prompt_cache=True,
               orders=1, speculative=False, remote=None, **remote_flags):
    """Builds the Judge for a command: a local GGUF, or with `remote` the server(s) at those
    URLs (tests replace this to drive the CLI with a fake)."""
    options = options_of(dict(think_budget=think_budget, no_think=no_think,
                              temperature=temperature, top_p=top_p, seed=seed,
                              repetition_guard=repetition_guard, orders=orders,
                              speculative=speculative))
    if remote:
        from ra_lite.remote import load_remote

        # --model, if it is a local GGUF, lends its chat template to the remote prompt.
        template = model if model and str(model).endswith(".gguf") else None
        arguments = remote_arguments({"remote": remote, **remote_flags})
        return load_remote(arguments.pop("url"), options=options, template=template,
                           notify=_notice, **arguments)
    from ra_lite.judge import load

    return load(model, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads,
                flash_attn=flash_attn, verbose=verbose, options=options, prompt_cache=prompt_cache)


def _notice(message: str) -> None:
    click.echo(f"ra-lite: {message}", err=True)


def options_of(settings: dict):
    """JudgeOptions from a command's generation settings (checked before any model loads: a
    bad --orders fails at once)."""
    from ra_lite.options import JudgeOptions

    return JudgeOptions.from_settings(settings)


def parse_response_flag(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name:
        raise RaLiteError(f"--response {value!r} is not NAME=TEXT",
                          "write --response a='first answer' (or NAME=@file.txt)")
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise RaLiteError(f"--response {name}: file {path} does not exist", "check the path")
        text = path.read_text(encoding="utf-8")
    return name, text


def read_requests(source: str) -> list:
    """A request JSON object, a JSON list of them, or JSONL; '-' reads stdin."""
    from ra_lite.request import JudgeRequest, loads_request_json

    if source == "-":
        data, where = sys.stdin.buffer.read(), "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise RaLiteError(f"request file {path} does not exist", "check the path")
        data, where = path.read_bytes(), str(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RaLiteError(f"{where} is not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x})",
                          "save it as UTF-8") from None
    if not text.strip():
        raise RaLiteError(f"{where} is empty", "give a request JSON object")
    stripped = text.strip()
    if "\n" in stripped and not stripped.startswith("["):
        try:
            objects = [loads_request_json(line, f"{where} line {n}")
                       for n, line in enumerate(stripped.splitlines(), 1) if line.strip()]
        except RaLiteError:
            objects = [loads_request_json(stripped, where)]   # a pretty-printed single object
    else:
        obj = loads_request_json(stripped, where)
        objects = obj if isinstance(obj, list) else [obj]
    return [JudgeRequest.from_dict(o) for o in objects]


@main.command()
@click.argument("request_file", required=False)
@click.option("--principle", "-p", help="The principle to judge by.")
@click.option("--prompt", "prompt_text", help="The prompt the responses answer.")
@click.option("--response", "-r", "response_flags", multiple=True,
              help="NAME=TEXT or NAME=@file; repeat for each response.")
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
@click.option("--stream/--no-stream", default=None,
              help="Show the reasoning on stderr as it is generated. Default: when stderr is a "
                   "terminal. Never written to stdout.")
@cache_option(default=False)
@model_options
@generation_options()
@remote_options
def judge(request_file, principle, prompt_text, response_flags, as_json, stream, use_cache,
          **settings):
    """Judge responses: from flags, a JSON/JSONL REQUEST_FILE, or '-' (JSON on stdin).

    The judgment cache is off by default here: one judgment asked for by hand usually means
    "run the model now" (to watch it reason, or to time it). --cache turns it on."""
    import contextlib

    from ra_lite.request import JudgeRequest

    if request_file and (principle or prompt_text or response_flags):
        raise RaLiteError("both a request file and --principle/--prompt/--response were given",
                          "use one or the other")
    if request_file:
        requests = read_requests(request_file)
    else:
        if principle is None or prompt_text is None or not response_flags:
            raise RaLiteError("nothing to judge",
                              "pass --principle, --prompt and --response NAME=TEXT (repeatable), "
                              "or a request file")
        pairs = [parse_response_flag(v) for v in response_flags]
        names = [name for name, _ in pairs]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise RaLiteError(f"two responses are named {duplicate!r}",
                              "give each --response its own name")
        requests = [JudgeRequest.create(principle, prompt_text, dict(pairs))]
    check_remote_flags(settings)
    if stream is None:
        stream = _is_terminal(sys.stderr)
    options = options_of(settings)
    store, cache = open_cache(use_cache, settings["model"], bool(settings["remote"]))
    with contextlib.ExitStack() as stack:
        if store is not None:
            stack.callback(store.close)
        from ra_lite.judge_queue import JudgeQueue

        # The model loads only when a request is not in the judgment cache.
        queue = JudgeQueue(lambda: stack.enter_context(load_judge(**settings)), 1, cache,
                           options)
        for request in requests:
            printer = ReasoningPrinter() if stream else None
            result = queue.judge(request, options, on_reasoning=printer)
            if printer is not None:
                printer.finish(result)
            if as_json:
                click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
            else:
                # Reasoning just streamed to the same terminal is not printed a second time.
                shown = printer is not None and printer.tokens > 0 and _is_terminal(sys.stdout)
                click.echo(format_judgment(result, show_reasoning=not shown))


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ReasoningPrinter:
    """Writes a judgment's reasoning to stderr as it is generated (an on_reasoning listener),
    then one line with its token count, rate and why it ended. stderr only: stdout stays the
    table or the JSON."""

    def __init__(self):
        import time

        self._clock = time.perf_counter
        self.started: float | None = None
        self.tokens = 0
        self.budget = 0

    def __call__(self, text: str, tokens_so_far: int, budget: int) -> None:
        if self.started is None:
            self.started = self._clock()
            click.echo("reasoning: ", err=True, nl=False)
        self.tokens, self.budget = tokens_so_far, budget
        click.echo(text, err=True, nl=False)

    def finish(self, result) -> None:
        if self.started is None:
            return
        seconds = self._clock() - self.started
        rate = f", {self.tokens / seconds:.1f} tok/s" if seconds > 0 else ""
        click.echo("", err=True)
        click.echo(f"ra-lite: {self.tokens}/{self.budget} reasoning tokens{rate}, "
                   f"ended by {result.think_end}", err=True)


THINK_END_NOTES = {
    "budget": " (reasoning cut at the think budget)",
    "end_of_generation": " (the model stopped mid-reasoning; ra-lite closed the block)",
    "repetition": " (reasoning closed early: it was repeating itself; --no-repetition-guard "
                  "turns this off)",
}


def format_judgment(result, show_reasoning: bool = True) -> str:
    lines = []
    if result.reasoning and show_reasoning:
        lines += ["reasoning:", *("  " + line for line in result.reasoning.splitlines()), ""]
    expected = result.expected_scores or {}
    width = max(len("response"), *(len(n) for n in result.ranking))
    lines.append(f"{'rank':<5} {'response':<{width}}  score  expected")
    for rank, name in enumerate(result.ranking, 1):
        exp = f"{expected[name]:.2f}" if name in expected else "-"
        lines.append(f"{rank:<5} {name:<{width}}  {result.scores[name]:>5}  {exp:>8}")
    note = THINK_END_NOTES.get(result.think_end, "")
    lines.append(f"{result.timings.total_s:.1f}s, {result.tokens.think} reasoning tokens{note}")
    if result.consistency is not None:
        lines.append(format_consistency(result.consistency))
    return "\n".join(lines)


def format_consistency(c) -> str:
    """One line: how much the verdicts under several response orders agree."""
    pairs = "–" if c.pairwise_agreement is None else f"{100 * c.pairwise_agreement:.0f}%"
    top = round(c.top1_agreement * c.n_orders)
    name, spread = max(c.score_spread.items(), key=lambda item: item[1])
    widest = f"{spread} ({name})" if spread else "0"
    return (f"{c.n_orders} orders: pairs ordered alike {pairs}, same winner in {top}/"
            f"{c.n_orders}, widest score spread {widest}")


@main.command()
@click.argument("input_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Results JSONL (appended; rerun to resume).")
@click.option("--fail-under", type=float, default=None,
              help="Exit 1 if a response's mean score is below this.")
@click.option("--target", default=None, help="The response name --fail-under checks (default: all).")
@click.option("--summary", "summary_path", default=None, metavar="FILE.md|-",
              help="Write a Markdown summary (scores, distribution, gate, lowest items, cache "
                   "hits); '-' prints it. Also appended to $GITHUB_STEP_SUMMARY when set.")
@click.option("--junit", "junit_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JUnit XML report: one test case per request.")
@click.option("--inspect-scores", "inspect_scores", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write Inspect AI's precomputed-scores JSONL (the --target response's score "
                   "per request id), for `inspect score` with precomputed_scores(FILE).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--parallel", default="auto", show_default=True,
              help="Judgments decoded at once (one model, shared batches): auto, 1, or N.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: judge on a Ray cluster's actors (pip install 'ra-lite[ray]'); this "
                   "process stays the single writer of --output.")
@click.option("--address", default=None,
              help="With --engine ray: the cluster (auto, HOST:PORT, ray://HOST:PORT); default "
                   "a local cluster started for this run.")
@click.option("--actors", default="1", show_default=True, metavar="N|MIN,MAX",
              help="With --engine ray: actors, each loading the model once.")
@click.option("--slots", default="auto", show_default=True,
              help="With --engine ray: judgments decoded at once in each actor.")
@cache_option(default=True)
@model_options
@generation_options()
@remote_options
def batch(input_file, output, fail_under, target, summary_path, junit_path, inspect_scores,
          progress, parallel, engine, address, actors, slots, use_cache, **settings):
    """Judge every request in INPUT_FILE (JSONL) into --output, resumably.

    Exit status: 0 all judged (and the gate passed), 1 the --fail-under gate failed, 2 bad input,
    3 some requests could not be judged (their error records are in the output)."""
    import contextlib

    from ra_lite.batch import run_batch
    from ra_lite.slots import parse_slots

    parse_slots(parallel)                      # a bad value fails before anything loads
    parse_slots(slots)
    check_remote_flags(settings)
    options = options_of(settings)
    ray_engine = None
    if engine == "ray":
        from ra_lite.on_ray.engine import RayEngine

        ray_engine = RayEngine(settings["model"], address=address, actors=actors, slots=slots,
                               remote=remote_arguments(settings) if settings["remote"] else None,
                               n_ctx=settings["n_ctx"], use_cache=use_cache, progress=progress,
                               n_threads=settings["n_threads"])
    elif address is not None or actors != "1" or slots != "auto":
        raise RaLiteError("--address, --actors and --slots apply to --engine ray",
                          "add --engine ray, or use --parallel on this machine")
    store, cache = open_cache(use_cache and ray_engine is None, settings["model"],
                              bool(settings["remote"]))
    with contextlib.ExitStack() as stack:
        if store is not None:
            stack.callback(store.close)
        summary = run_batch(lambda: stack.enter_context(load_judge(**settings)), input_file,
                            output, options=options,
                            progress=_progress_bar("judging") if progress and not ray_engine
                            else None, parallel=parallel, cache=cache, engine=ray_engine)
    click.echo(format_summary(summary, output))
    gate = None
    if fail_under is not None:
        from ra_lite.ci_report import check_gate

        gate = check_gate(summary, fail_under, target)
    if summary_path or junit_path or os.environ.get("GITHUB_STEP_SUMMARY"):
        write_ci_reports(summary, output, gate, input_file, summary_path, junit_path)
    if inspect_scores:
        from ra_lite.batch import read_done
        from ra_lite.ci_report import inspect_scores_jsonl, write_text

        write_text(inspect_scores, inspect_scores_jsonl(list(read_done(output).values()), target))
    if gate is not None:
        click.echo(gate.line(), err=not gate.passed)
    if summary.errors:
        click.echo(f"INCOMPLETE: {summary.errors} of {summary.total} requests could not be "
                   f"judged (see their \"error\" records in {output})", err=True)
        sys.exit(EXIT_INCOMPLETE)
    if gate is not None and not gate.passed:
        sys.exit(EXIT_GATE_FAILED)


def write_ci_reports(summary, output: Path, gate, input_file: Path, summary_path, junit_path):
    from ra_lite.batch import read_done
    from ra_lite.ci_report import append_text, junit_xml, summary_markdown, write_text

    records = list(read_done(output).values())
    text = summary_markdown(summary, records, gate, input_file.name)
    if summary_path == "-":
        click.echo(text)
    elif summary_path:
        write_text(Path(summary_path), text)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        append_text(Path(step_summary), text)
    if junit_path:
        write_text(junit_path, junit_xml(records, gate, f"ra-lite.{input_file.stem}"))


def _progress_bar(label: str):
    """run_batch's progress factory: a bar with judgments/s and tokens/s (stderr, TTY only)."""
    def start(total, done):
        from ra_lite.progress import ProgressReporter

        return ProgressReporter(total, done, label=label, unit="req")
    return start


def format_summary(summary, output: Path) -> str:
    from_cache = f" ({summary.cached} from the judgment cache)" if summary.cache_looked_up else ""
    lines = [f"{summary.total} requests: {summary.judged_now} judged now{from_cache}, "
             f"{summary.already_done} already in {output}, {summary.errors} errors"]
    if summary.mean_seconds is not None:
        lines.append(f"mean {summary.mean_seconds:.2f}s per judgment")
    for name in sorted(summary.mean_scores, key=lambda n: -summary.mean_scores[n]):
        lines.append(f"  {name}: mean score {summary.mean_scores[name]:.2f} "
                     f"over {summary.counts[name]}")
    return "\n".join(lines)


@main.group()
def cache():
    """The judgment cache: judgments kept across runs (batch and bench use it by default)."""


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True)
def cache_stats(as_json):
    """Entries, size, hit rate over the cache's life, and entries per model."""
    from ra_lite.judgment_cache import JudgmentCache

    store = JudgmentCache()
    try:
        stats = store.stats()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(stats.to_dict(), indent=2))
        return
    rate = "–" if stats.hit_rate is None else f"{100 * stats.hit_rate:.1f}%"
    click.echo(f"{stats.path}\n{stats.entries} entries, {stats.bytes / 2**20:.1f} MiB of "
               f"{stats.max_bytes / 2**20:.0f} MiB; {stats.hits} hits, {stats.misses} misses "
               f"(hit rate {rate})")
    for kind, n in sorted(stats.by_kind.items()):
        click.echo(f"  {kind}: {n}")
    for model, n in sorted(stats.by_model.items(), key=lambda item: -item[1]):
        click.echo(f"  model sha256 {model[:16]}…: {n} entries")


@cache.command("clear")
def cache_clear():
    """Delete every cached judgment."""
    from ra_lite.judgment_cache import JudgmentCache

    store = JudgmentCache()
    try:
        removed = store.clear()
    finally:
        store.close()
    click.echo(f"removed {removed} entries from {store.path}")


@main.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True)
def info(model, as_json):
    """Describe a GGUF model: architecture, quant, size, context, offload support."""
    from ra_lite.pull import resolve_model
    from ra_lite.runtime.devices import default_threads
    from ra_lite.runtime.gguf_info import read_gguf_info

    path, embedded = resolve_model(model)
    details = read_gguf_info(path).to_dict()
    try:
        import llama_cpp
        details["gpu_offload_supported"] = bool(llama_cpp.llama_supports_gpu_offload())
        details["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        details["gpu_offload_supported"] = None
    details["default_threads"] = default_threads()
    details["embedded_smoke_test_model"] = embedded
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    for key, value in details.items():
        if key == "size_bytes":
            value = f"{value / 2**20:.1f} MiB"
        elif key == "n_params":
            value = f"{value / 1e6:.1f} M"
        click.echo(f"{key:>26}: {value}")
