"""Device probes, the layer-fitting arithmetic and the OOM fallback, with faked devices
(this machine has no GPU)."""

import json

import pytest
from click.testing import CliRunner

from ra_lite.runtime.devices import (DeviceReport, GpuDevice, cpu_features, cpu_model, metal_budget_fraction,
                             parse_nvidia_smi, probe_cuda, probe_metal)
from ra_lite.runtime.offload import OffloadDecision, decide_offload
from ra_lite.runtime.offload import (HEADROOM_BYTES, ModelFootprint, fit_layers, gpu_budget,
                             kv_bytes_per_layer, load_with_fallback, plan_offload, read_footprint)

GIB, MIB = 1 << 30, 1 << 20

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw amx_tile amx_int8 avx512_vnni
processor\t: 1
flags\t\t: fpu
"""


def test_cpu_features_and_model_from_cpuinfo():
    assert cpu_features(CPUINFO) == ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                                     "avx512_vnni", "amx_tile", "amx_int8"]
    assert cpu_model(CPUINFO) == "Intel(R) Xeon(R) Platinum 8480C"
    assert cpu_features("Features\t: fp asimd sve i8mm\n") == ["asimd", "sve", "i8mm"]
    assert cpu_features("") == []


def test_nvidia_smi_rows_become_devices():
    text = "NVIDIA H100 80GB HBM3, 80000, 81559\nNVIDIA RTX 4090, 20000, 24564\nGRID, [N/A], [N/A]\n"
    gpus = parse_nvidia_smi(text)
    assert [(g.name, g.free_bytes, g.total_bytes) for g in gpus] == [
        ("NVIDIA H100 80GB HBM3", 80000 * MIB, 81559 * MIB), ("NVIDIA RTX 4090", 20000 * MIB, 24564 * MIB)]


def test_probe_cuda_runs_nvidia_smi_when_present():
    calls = []

    class Done:
        returncode, stdout = 0, "Tesla T4, 15000, 15360\n"

    def run(args, **kwargs):
        calls.append(args)
        return Done()

    gpus = probe_cuda(run=run, which=lambda name: "/usr/bin/nvidia-smi")
    assert gpus[0].name == "Tesla T4" and gpus[0].backend == "cuda"
    assert calls[0][1] == "--query-gpu=name,memory.free,memory.total"
    # Without nvidia-smi it falls back to NVML, absent here: no device, no error.
    assert probe_cuda(run=run, which=lambda name: None) == []


def test_metal_budget_is_a_fraction_of_unified_memory():
    assert probe_metal(system="Linux", memsize=64 * GIB) == []
    small, = probe_metal(system="Darwin", memsize=16 * GIB)
    big, = probe_metal(system="Darwin", memsize=64 * GIB)
    assert small.free_bytes == int(16 * GIB * 2 / 3) and big.free_bytes == 48 * GIB
    assert metal_budget_fraction(36 * GIB) == 2 / 3


# An 8B-like model: 36 layers of 120 MiB, output 400 MiB, KV 2 × 8192 × 8 × 128 × 2 B per layer.
FOOTPRINT = ModelFootprint(n_layers=36, layer_bytes=(120 * MIB,) * 36, output_bytes=400 * MIB,
                           kv_bytes_per_layer=kv_bytes_per_layer(8192, 8, 128), n_ctx=8192)


def test_kv_cache_arithmetic():
    assert FOOTPRINT.kv_bytes_per_layer == 32 * MIB          # 8192 × 8 × (128 + 128) × 2 B
    assert FOOTPRINT.all_bytes == 36 * (120 + 32) * MIB + 400 * MIB


def test_fit_everything_some_or_nothing():
    roomy = fit_layers(FOOTPRINT, 80 * GIB, "H100")
    assert roomy.all_fit and roomy.layers == 36
    budget = gpu_budget(4 * GIB)
    assert budget == int(4 * GIB * 0.9) - HEADROOM_BYTES
    partial = fit_layers(FOOTPRINT, 4 * GIB, "small")
    assert not partial.all_fit and partial.layers == budget // (152 * MIB)
    assert fit_layers(FOOTPRINT, 600 * MIB).layers == 0


def test_auto_decision_follows_free_memory():
    fit = fit_layers(FOOTPRINT, 80 * GIB, "H100")
    all_in = decide_offload("auto", gpu_build=True, n_layers=36, fit=fit)
    assert all_in.n_gpu_layers == -1 and "all 36 layers" in all_in.reason and "H100" in all_in.reason
    some = decide_offload("auto", True, 36, fit=fit_layers(FOOTPRINT, 4 * GIB, "T4"))
    assert 0 < some.n_gpu_layers < 36 and f"{some.n_gpu_layers} of 36" in some.reason
    none = decide_offload("auto", True, 36, fit=fit_layers(FOOTPRINT, 600 * MIB, "tiny"))
    assert none.n_gpu_layers == 0 and none.reason.startswith("CPU")
    # Memory unknown: everything, relying on the fallback; CPU builds never offload.
    assert decide_offload("auto", True, 36).n_gpu_layers == -1
    assert decide_offload("auto", False, 36, fit=fit).n_gpu_layers == 0
    # Explicit counts are not second-guessed.
    assert decide_offload(10, True, 36, fit=fit_layers(FOOTPRINT, 600 * MIB)).n_gpu_layers == 10


def test_oom_retries_halve_then_fall_back_to_cpu():
    attempts, notices = [], []

    def load(layers):
        attempts.append(layers)
        if layers != 0 and (layers < 0 or layers > 8):
            raise ValueError("Failed to load model from file: cudaMalloc failed: out of memory")
        return "model"

    result, decision = load_with_fallback(load, OffloadDecision(-1, "GPU: all"), 36, notices.append)
    assert result == "model" and attempts == [-1, 18, 9, 4]
    assert decision.n_gpu_layers == 4 and "after failed loads with all, 18, 9 layers" in decision.reason
    assert len(notices) == 3 and "retrying with 18 GPU layers" in notices[0]

    attempts.clear()
    never = lambda layers: attempts.append(layers) or (_ for _ in ()).throw(RuntimeError("oom")) \
        if layers else "cpu model"
    result, decision = load_with_fallback(never, OffloadDecision(3, "GPU: 3"), 36, notices.append)
    assert result == "cpu model" and attempts == [3, 1] and decision.n_gpu_layers == 0
    assert decision.reason.startswith("CPU: the GPU loads failed")
    assert "the CPU only" in notices[-1]


def test_a_cpu_load_failure_is_not_retried():
    def load(layers):
        raise ValueError("bad file")

    with pytest.raises(ValueError):
        load_with_fallback(load, OffloadDecision(0, "CPU"), 36, lambda m: None)


def test_footprint_of_the_embedded_gguf(embedded_path):
    import gguf

    footprint = read_footprint(embedded_path, 2048)
    tensors = gguf.GGUFReader(embedded_path).tensors
    blocks = sum(int(t.n_bytes) for t in tensors if t.name.startswith("blk."))
    assert footprint.n_layers == 30 and sum(footprint.layer_bytes) == blocks
    # SmolLM2-135M: tied embeddings (no output.weight), 3 KV heads of 64 dims.
    assert footprint.output_bytes == next(int(t.n_bytes) for t in tensors if t.name == "token_embd.weight")
    assert footprint.kv_bytes_per_layer == 2048 * 3 * 128 * 2
    fake_gpu = [GpuDevice("cuda", 0, "Fake GPU", 8 * GIB, 6 * GIB)]
    assert plan_offload(embedded_path, 2048, gpus=fake_gpu).all_fit
    assert plan_offload(embedded_path, 2048, gpus=[]) is None


def test_doctor_reports_what_auto_would_choose(embedded_path):
    from ra_lite.doctor import doctor, format_report

    devices = DeviceReport(platform="Linux", machine="x86_64", cpu_model="Fake CPU",
                           cpu_features=["avx2"], logical_cpus=8, default_threads=4,
                           llama_cpp_python="0.3.36", gpu_offload_supported=True,
                           llama_system_info="CUDA : ARCHS = 900",
                           gpus=[GpuDevice("cuda", 0, "Fake GPU", 8 * GIB, 6 * GIB)])
    report = doctor(str(embedded_path), 2048, devices=devices)
    assert report.auto_layers == -1 and "Fake GPU" in report.auto_reason
    text = format_report(report)
    assert "Fake GPU: 6.00 GiB free of 8.00 GiB" in text and "auto would use  n_gpu_layers=-1" in text
    assert json.loads(json.dumps(report.to_dict()))["devices"]["gpus"][0]["name"] == "Fake GPU"
    cpu_build = doctor(str(embedded_path), 2048, devices=DeviceReport(**{
        **devices.__dict__, "gpu_offload_supported": False}))
    assert cpu_build.auto_layers == 0 and "reinstall with CMAKE_ARGS" in format_report(cpu_build)


def test_doctor_command_runs_here(embedded_path):
    import ra_lite.cli as cli

    result = CliRunner().invoke(cli.main, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["devices"]["llama_cpp_python"] and report["auto_layers"] in (0, -1)
    missing = CliRunner().invoke(cli.main, ["doctor", "--model", "nope.gguf"])
    assert missing.exit_code == 0 and "does not exist" in missing.output
