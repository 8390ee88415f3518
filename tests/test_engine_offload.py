"""The offload decision, with the build's GPU support faked both ways."""

import pytest

from ra_lite.runtime.offload import decide_offload
from ra_lite.errors import RaLiteError


def test_auto_offloads_everything_on_a_gpu_build():
    decision = decide_offload("auto", gpu_build=True, n_layers=36)
    assert decision.n_gpu_layers == -1 and "36 layers" in decision.reason


def test_auto_stays_on_cpu_without_gpu_support():
    decision = decide_offload("auto", gpu_build=False, n_layers=36)
    assert decision.n_gpu_layers == 0 and "CPU" in decision.reason


def test_explicit_layers_are_honoured_and_explained():
    assert decide_offload("20", gpu_build=True, n_layers=36).reason == "GPU: 20 of 36 layers offloaded"
    assert decide_offload(0, gpu_build=True, n_layers=36).n_gpu_layers == 0
    cpu = decide_offload(10, gpu_build=False, n_layers=36)
    assert cpu.n_gpu_layers == 0 and "no GPU support" in cpu.reason


def test_nonsense_is_a_clear_error():
    with pytest.raises(RaLiteError, match="n_gpu_layers"):
        decide_offload("lots", gpu_build=True, n_layers=36)
