"""Start-up per trial: Ray's stock Tune + Train V2 path against the project's lean one.

Each trial is a Ray Train run (one worker, 1 CPU) whose training function only reports once,
so everything measured is the platform's own start-up: the trial actor, the Train controller,
placement group, worker process and train context. Variants, measured side by side in one
run on the embedded local Ray that ``orchestrator run`` starts:

- ``stock``: ``TorchTrainer`` + Ray's ``TuneReportCallback`` (controller actor, queue actor,
  Ray Data's dataset manager), as Ray's docs wire Tune and Train V2;
- ``lean``: ``orchestrator.trial.lean_trainer_class`` + ``direct_tune_report`` (what the sweep
  runs without reuse): the controller in the trial actor, reports straight to Tune, no dataset manager;
- ``lean+reuse``: the same with Tune's ``reuse_actors=True``: trial actors kept between trials,
  and each runs its next trial on the Train workers its last one left (``orchestrator.warm_workers``);
  what sweeps run now.

Usage: python bench/bench_startup.py [--trials 4] [--concurrency 2] [--rounds 2]
Prints a table of start-up (trial function entry -> first line of the training function)
and sweep wall per variant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def empty_loop(config: dict) -> None:
    import ray.train

    # Tune sets "pid" itself (the trial actor's)
    ray.train.report({"startup": time.time() - config["t0"], "worker_pid": os.getpid()})


def trial_fn(config: dict, variant: str, root: str) -> None:
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.trial import direct_tune_report, lean_trainer_class

    lean = variant != "stock"
    # workers parked for the next trial only where Tune hands the actor to one (orchestrator.warm_workers)
    from orchestrator import warm_workers

    warm_workers.park_finished_runs(variant.endswith("reuse"))
    cls = lean_trainer_class() if lean else TorchTrainer
    callback = direct_tune_report() if lean else TuneReportCallback()
    trainer = cls(
        empty_loop,
        train_loop_config={"t0": time.time()},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(
            name=f"{variant}-{ray.tune.get_context().get_trial_id()}", storage_path=root, callbacks=[callback]
        ),
    )
    trainer.fit()


def run_variant(variant: str, trials: int, concurrency: int, root: str) -> tuple[list[float], float]:
    import ray
    from ray import tune

    from orchestrator.trial import driver_resources

    fn = tune.with_resources(
        tune.with_parameters(trial_fn, variant=variant, root=root), driver_resources(ray.cluster_resources())
    )
    tuner = tune.Tuner(
        fn,
        param_space={"i": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrency, reuse_actors=variant.endswith("reuse")
        ),
        run_config=tune.RunConfig(name=variant, storage_path=root, verbose=0),
    )
    start = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - start
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"{variant}: {errors[0]}")
    pids = {r.metrics["worker_pid"] for r in results}
    print(f"{variant}: {len(results)} trials ran in {len(pids)} worker processes")
    return [r.metrics["startup"] for r in results], wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="each variant runs this many times, interleaved")
    ap.add_argument("--variants", default="stock,lean,lean+reuse")
    args = ap.parse_args()

    import ray

    from orchestrator.ray_session import init_ray as _init_ray

    _init_ray(verbose=False)
    variants = args.variants.split(",")
    startups: dict[str, list[float]] = {v: [] for v in variants}
    walls: dict[str, list[float]] = {v: [] for v in variants}
    try:
        with tempfile.TemporaryDirectory() as root:
            run_variant("lean", 2, 2, root)  # warm-up: first imports, file caches
            for r in range(args.rounds):
                for v in variants:
                    s, w = run_variant(v, args.trials, args.concurrency, root)
                    startups[v] += s
                    walls[v].append(w)
                    print(
                        f"round {r + 1} {v:11s} wall {w:5.1f} s  start-up {' '.join(f'{x:.1f}' for x in s)}"
                    )
    finally:
        ray.shutdown()

    print(f"\n{args.trials} empty trials, {args.concurrency} at a time, {args.rounds} rounds")
    print("| variant | start-up p50 (s) | start-up min-max (s) | sweep wall, mean (s) |")
    print("|---|---|---|---|")
    for v in variants:
        s = startups[v]
        print(
            f"| {v} | {statistics.median(s):.1f} | {min(s):.1f}-{max(s):.1f} | "
            f"{statistics.mean(walls[v]):.1f} |"
        )


if __name__ == "__main__":
    main()
