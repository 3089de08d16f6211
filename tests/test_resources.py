"""Resource arithmetic and device logic (the GPU paths that can be exercised without a GPU)."""

from __future__ import annotations

import pytest
import torch

from orchestrator.cluster import auto_concurrency
from orchestrator.spec import ResourcesSpec, SpecError
from orchestrator.trial import DRIVER_RESOURCE, driver_resources
from trainables.device import autocast, grad_scaler, resolve_precision

CASES = [
    # cluster, resources, num_trials -> concurrency
    ({"CPU": 2, DRIVER_RESOURCE: 100}, {"cpus_per_worker": 1}, 12, 2),
    ({"CPU": 2, DRIVER_RESOURCE: 100}, {"workers_per_trial": 2, "cpus_per_worker": 0.5}, 12, 2),
    ({"CPU": 2}, {"cpus_per_worker": 1}, 12, 1),  # drivers need 0.01 CPU each without the resource
    ({"CPU": 16, "GPU": 4, DRIVER_RESOURCE: 100}, {"cpus_per_worker": 2, "gpus_per_worker": 1}, 12, 4),
    ({"CPU": 16, "GPU": 4, DRIVER_RESOURCE: 100}, {"workers_per_trial": 2, "gpus_per_worker": 1}, 12, 2),
    ({"CPU": 64, "GPU": 8, DRIVER_RESOURCE: 100}, {"gpus_per_worker": 0.5}, 3, 3),  # capped by num_trials
]


@pytest.mark.parametrize(("cluster", "res", "trials", "expected"), CASES)
def test_auto_concurrency(cluster, res, trials, expected):
    assert auto_concurrency(cluster, ResourcesSpec(**res), trials) == expected


def test_trial_that_cannot_fit_is_bad_input():
    with pytest.raises(SpecError, match="one trial needs 0 CPU and 1 GPU|needs 1 CPU and 1 GPU"):
        auto_concurrency({"CPU": 8, "GPU": 0, DRIVER_RESOURCE: 10}, ResourcesSpec(gpus_per_worker=1), 4)


def test_drivers_take_no_cpu_when_the_resource_exists():
    assert driver_resources({"CPU": 2, DRIVER_RESOURCE: 5}) == {"cpu": 0, DRIVER_RESOURCE: 1}
    assert driver_resources({"CPU": 2})["cpu"] > 0


def test_precision_rules_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_precision("fp16", cpu)
    assert not grad_scaler("fp16", cpu).is_enabled() and not grad_scaler("fp32", cpu).is_enabled()
    with autocast("bf16", cpu):
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16
    with autocast("fp32", cpu):
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.float32


def test_node_local_storage_is_refused_on_a_multi_machine_cluster(tmp_path):
    from orchestrator.cluster import check_shared_storage

    check_shared_storage(str(tmp_path), {"10.0.0.1"})  # one machine: local disk is fine
    check_shared_storage("s3://bucket/sweeps", {"10.0.0.1", "10.0.0.2"})
    with pytest.raises(
        SpecError, match=r"storage: .* is local to this node .* spans 2 machines; set storage to s3://"
    ):
        check_shared_storage(str(tmp_path), {"10.0.0.1", "10.0.0.2"})


def _oom_message(exc: BaseException, **batch) -> str | None:
    from trainables.device import TrialOutOfMemory, out_of_memory_as_error

    try:
        with out_of_memory_as_error(torch.device("cpu"), **batch):
            raise exc
    except TrialOutOfMemory as out:
        assert out.__cause__ is exc  # the full error stays chained (error.txt)
        return str(out)
    except Exception as other:
        assert other is exc
        return None


def test_out_of_memory_becomes_one_line_with_what_to_change():
    cuda = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")  # what CUDA raises
    message = _oom_message(cuda, batch_size=32, micro_batch_size=8)
    assert message == (
        "out of memory on cpu with 8 rows per pass: set train.micro_batch_size to 4 "
        "(gradients are accumulated, batch_size stays 32) or lower data.max_length"
    )
    one_row = _oom_message(MemoryError(), batch_size=1, micro_batch_size=None)
    assert one_row.endswith(
        "1 row per pass: lower data.max_length, freeze more layers or use a lighter strategy"
    )
    cublas = RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    assert _oom_message(cublas, batch_size=4, micro_batch_size=None).startswith("out of memory on cpu")
    assert _oom_message(ValueError("shape mismatch"), batch_size=4, micro_batch_size=None) is None
    assert (
        _oom_message(RuntimeError("CUDA error: device-side assert"), batch_size=4, micro_batch_size=None)
        is None
    )


def test_fractional_gpus_share_one_logical_gpu_as_planned():
    """A real local Ray with one logical GPU: ``auto`` concurrency for 0.25 GPU per worker is 4,
    and Ray places exactly 4 such workers' bundles (what each trial's Train worker group asks
    for) at once; a fifth waits."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    ray.init(num_cpus=2, num_gpus=1, resources={DRIVER_RESOURCE: 100}, include_dashboard=False)
    try:
        res = ResourcesSpec(cpus_per_worker=0.25, gpus_per_worker=0.25)
        assert auto_concurrency(ray.cluster_resources(), res, 8) == 4
        groups = [placement_group([{"CPU": 0.25, "GPU": 0.25}]) for _ in range(5)]
        ready, waiting = ray.wait([g.ready() for g in groups], num_returns=4, timeout=15)
        assert len(ready) == 4
        assert not ray.wait(waiting, timeout=2)[0]  # the fifth finds no GPU share left
        for g in groups:
            remove_placement_group(g)
    finally:
        ray.shutdown()
