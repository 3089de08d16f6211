"""Multi-node behaviour on one machine (`ray.cluster_utils.Cluster`): DDP across nodes, node loss.

A head with 0 CPUs (it only hosts trial drivers, on the `trial_driver` resource) plus three
1-CPU nodes. One trial with 2 workers × 1 CPU must spread over two nodes. After epoch 2 is
recorded, the node of one worker is removed without grace; Ray Train restarts the worker group
on the spare node from the last checkpoint, and the sweep completes with exactly one FINISHED
child run holding every epoch once.
"""

from __future__ import annotations

import io
import threading
import time

from tests.conftest import review_rows, sweep_dict, write_csv, write_sweep

EPOCHS = 8


def test_trial_resumes_after_node_loss(tmp_path):
    import ray
    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors
    from rich.console import Console

    from orchestrator.resolve import resolve_sweep
    from orchestrator.runner import run_sweep
    from orchestrator.spec import load_spec
    from orchestrator.trial import DRIVER_RESOURCE

    write_csv(tmp_path / "train.csv", review_rows(6000, seed=8))  # a few seconds per epoch
    write_csv(tmp_path / "dev.csv", review_rows(64, seed=9))
    spec = sweep_dict(
        name="nodeloss",
        resources={"workers_per_trial": 2, "cpus_per_worker": 1},
        search__scheduler={"type": "fifo"},
        search__num_trials=1,
    )
    spec["train"]["epochs"] = EPOCHS
    path = write_sweep(tmp_path, spec)
    workdir = tmp_path / "work"
    resolved = resolve_sweep(load_spec(path), path, workdir)

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "resources": {DRIVER_RESOURCE: 10}}
    )
    nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    outcome: dict = {}

    def sweep() -> None:
        try:
            outcome["result"] = run_sweep(resolved, Console(file=io.StringIO()))
        except BaseException as exc:  # surfaced by the assertions below
            outcome["error"] = exc

    try:
        worker = threading.Thread(target=sweep, daemon=True)
        worker.start()
        client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
        deadline = time.time() + 600
        seen: list[int] = []
        while len(seen) < 2:  # wait for epoch 2 to be recorded
            assert worker.is_alive(), outcome
            assert time.time() < deadline, "no progress"
            time.sleep(1)
            exp = client.get_experiment_by_name("nodeloss") if (workdir / "mlflow.db").exists() else None
            runs = (
                client.search_runs([exp.experiment_id], "tags.`orchestrator.role` = 'trial'") if exp else []
            )
            seen = (
                [int(m.step) for m in client.get_metric_history(runs[0].info.run_id, "epoch")] if runs else []
            )
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
        busy = {a.node_id for a in workers}
        assert len(busy) == 2, "the 2 workers must be spread over 2 nodes"
        victim = next(n for n in nodes if n.node_id in busy)
        cluster.remove_node(victim, allow_graceful=False)  # main thread only
        killed_after_epoch = max(seen)
        worker.join(timeout=900)
        assert not worker.is_alive(), "sweep did not finish"
        # the worker group was restarted: 2 original + 2 new workers, one of them on the spare node
        all_workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=100)
        spare = next(n for n in nodes if n.node_id not in busy)
        assert len(all_workers) >= 4 and spare.node_id in {a.node_id for a in all_workers}
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].status == "FINISHED"
    runs = client.search_runs([client.get_experiment_by_name("nodeloss").experiment_id])
    children = [r for r in runs if r.data.tags["orchestrator.role"] == "trial"]
    assert len(children) == 1 and all(r.info.status == "FINISHED" for r in runs)
    epochs = [int(m.step) for m in client.get_metric_history(children[0].info.run_id, "epoch")]
    assert epochs == list(range(1, EPOCHS + 1))

    # The trial resumed from a checkpoint at least as recent as the last epoch recorded when the
    # node died, so at most the epoch in flight was lost.
    resumed = client.get_metric_history(children[0].info.run_id, "resumed_from_epoch")
    resumed_from = max(int(m.value) for m in resumed)
    print(
        f"node removed after epoch {killed_after_epoch} was recorded; the trial resumed from epoch {resumed_from}"
    )
    assert resumed_from >= killed_after_epoch
