"""The CPUs a GPU operator declares for its CPU fallback, and the CNN's threads following the
CPUs its replica holds (without Ray: the host is given them directly)."""

from __future__ import annotations

import pytest
import torch
from tilemore_operators.dncnn import Deblock, DnCNNDenoise

from tilemore.engine.host import OperatorHost
from tilemore.operator import Resources


def test_the_fallback_cpus_apply_only_to_a_gpu_optional_operator_without_its_gpu():
    assert Resources(num_cpus=1).cpus_without_gpu() == 1
    assert Resources(num_cpus=1, cpu_fallback_cpus=4).cpus_without_gpu() == 1  # no GPU asked
    assert Resources(num_cpus=1, num_gpus=1, cpu_fallback_cpus=4).cpus_without_gpu() == 1
    gpu = Resources(num_cpus=1, num_gpus=0.5, gpu_optional=True)
    assert gpu.cpus_without_gpu() == 1  # undeclared: num_cpus
    assert gpu.model_copy(update={"cpu_fallback_cpus": 3}).cpus_without_gpu() == 3
    with pytest.raises(ValueError):
        Resources(cpu_fallback_cpus=-1)


def test_both_cnns_declare_two_cpus_for_their_fallback():
    for op in (DnCNNDenoise, Deblock):
        assert op.resources.num_cpus == 1 and op.resources.cpus_without_gpu() == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback")
def test_the_cnn_runs_as_many_threads_as_the_cpus_its_replica_holds():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        host = OperatorHost(DnCNNDenoise, cpus=1)
        assert host.operator.context.cpus == 1 and torch.get_num_threads() == 1
        OperatorHost(DnCNNDenoise)  # no share of its own (in-process): threads left alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
