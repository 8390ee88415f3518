"""`ra-lite doctor`: what this machine offers and what `--n-gpu-layers auto` would do with a model;
with --remote URL, whether that server is set up for cheap choice-point judging
(ra_lite.remote.checkup).

Reads only headers and device information: no model is loaded, so it runs in a second even for
an 8B model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import click

from ra_lite.cli import check_remote_flags, remote_arguments, remote_options
from ra_lite.defaults import DEFAULT_N_CTX
from ra_lite.runtime.devices import DeviceReport, probe


@dataclass
class DoctorReport:
    devices: DeviceReport
    model: str | None                  # the GGUF file examined
    model_error: str | None            # why no model could be examined
    n_ctx: int
    footprint: dict | None             # bytes on the GPU: per layer, KV cache, output, all
    fit: dict | None                   # VramFit against the probed GPUs
    auto_layers: int | None            # what `auto` passes to llama.cpp (-1 = all, 0 = CPU)
    auto_reason: str | None
    servers: list | None = None        # ServerCheck per --remote URL (ra_lite.remote.checkup)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["devices"] = self.devices.to_dict()
        d["servers"] = [s.to_dict() for s in self.servers] if self.servers is not None else None
        return d


def doctor(model: str | None = None, n_ctx: int = DEFAULT_N_CTX, devices: DeviceReport | None = None
           ) -> DoctorReport:
    from ra_lite.runtime.offload import decide_offload
    from ra_lite.errors import RaLiteError
    from ra_lite.model_ref import parse_model_ref
    from ra_lite.runtime.gguf_info import read_header
    from ra_lite.runtime.offload import fit_layers, gpu_budget, read_footprint

    devices = devices or probe()
    report = DoctorReport(devices, None, None, n_ctx, None, None, None, None)
    try:
        ref = parse_model_ref(model)
        if ref.kind not in ("path", "embedded"):
            from ra_lite.pull import pull

            path = pull(ref.text, progress=False, offline=True).path   # doctor never downloads
        else:
            path = ref.path
        if not path.is_file():
            raise RaLiteError(f"model file {path} does not exist", "check the path")
        try:
            meta = read_header(path).metadata   # the header only: fast even for a large vocabulary
        except Exception as e:   # noqa: BLE001 - a damaged file, whatever the reader tripped on
            raise RaLiteError(f"{path} is not a readable GGUF file ({e})", "check the file") from e
    except RaLiteError as e:
        report.model_error = e.one_line()
        return report
    arch = meta.get("general.architecture", "")
    trained = meta.get(f"{arch}.context_length")
    ctx = min(n_ctx, int(trained)) if trained else n_ctx
    report.model, report.n_ctx = str(path), ctx
    footprint = read_footprint(path, ctx)
    report.footprint = footprint.to_dict()
    fit = None
    if devices.gpus:
        fit = fit_layers(footprint, sum(g.free_bytes for g in devices.gpus),
                         " + ".join(g.name for g in devices.gpus),
                         budget=sum(gpu_budget(g.free_bytes) for g in devices.gpus))
        report.fit = fit.to_dict()
    decision = decide_offload("auto", bool(devices.gpu_offload_supported), footprint.n_layers,
                              fit=fit)
    report.auto_layers, report.auto_reason = decision.n_gpu_layers, decision.reason
    return report


def check_servers(remote: dict) -> list:
    """ServerCheck of every server in `remote` (load_remote's keyword arguments, "url" first)."""
    from ra_lite.remote.checkup import check_server
    from ra_lite.remote.client import RemoteBackend
    from ra_lite.remote.pool import parse_urls

    remote = dict(remote)
    checks = []
    for url in parse_urls(remote.pop("url")):
        backend = RemoteBackend(url, **remote)
        try:
            checks.append(check_server(backend))
        finally:
            backend.close()
    return checks


def format_report(report: DoctorReport) -> str:
    d = report.devices
    gib = lambda n: f"{n / 2**30:.2f} GiB"   # noqa: E731
    lines = [
        f"platform        {d.platform} ({d.machine})",
        f"cpu             {d.cpu_model}, {d.logical_cpus} logical CPUs",
        f"cpu features    {' '.join(d.cpu_features) or '(none detected)'}",
        f"threads         {d.default_threads} (ra-lite's default)",
        f"llama-cpp-python {d.llama_cpp_python or 'not installed'}, GPU offload "
        f"{'supported' if d.gpu_offload_supported else 'not supported'} by this build",
        f"llama.cpp       {d.llama_system_info or '-'}",
    ]
    if d.gpus:
        for g in d.gpus:
            lines.append(f"gpu {g.index} ({g.backend})  {g.name}: {gib(g.free_bytes)} free of "
                         f"{gib(g.total_bytes)}")
    else:
        lines.append("gpu             none found (no nvidia-smi/NVML device, not Apple silicon)")
    if report.servers is not None:
        from ra_lite.remote.checkup import format_check

        for check in report.servers:
            lines += format_check(check)
    if report.model_error:
        lines.append(f"model           {report.model_error}")
        return "\n".join(lines)
    f = report.footprint
    lines += [f"model           {report.model}",
              f"on a GPU        {gib(f['all_bytes'])} for all {f['n_layers']} layers at n_ctx "
              f"{report.n_ctx} (KV cache {gib(f['kv_bytes_per_layer'] * f['n_layers'])})",
              f"auto would use  n_gpu_layers={report.auto_layers}: {report.auto_reason}"]
    if d.gpus and not d.gpu_offload_supported:
        lines.append("note            this machine has a GPU but the installed llama-cpp-python "
                     "cannot use it: reinstall with CMAKE_ARGS (see README)")
    return "\n".join(lines)


# --- `ra-lite doctor` (registered lazily by ra_lite.cli) --------------------------------------
@click.command("doctor")
@click.option("--model", "-m", default=None,
              help="Model to plan offload for (path, registry name or hf://; never downloaded). "
                   "Default: the embedded one.")
@click.option("--n-ctx", type=int, default=DEFAULT_N_CTX, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@remote_options
def doctor_command(model, n_ctx, as_json, **remote_settings):
    """Show the llama.cpp backend, CPU features, GPUs and what --n-gpu-layers auto would do;
    with --remote URL, probe that server (probabilities, slots, whether a slot keeps a
    judgment's prompt between requests). Exit status 1 when a server has a problem."""
    check_remote_flags(remote_settings)
    report = doctor(model, n_ctx)
    if remote_settings["remote"]:
        report.servers = check_servers(remote_arguments(remote_settings))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
    if report.servers and any(s.problems for s in report.servers):
        raise SystemExit(1)
