"""The trial runner's trainer: Ray Train's TorchTrainer, less the actors a trial does not use."""

from __future__ import annotations

import ray.train
from ray.train.torch import TorchTrainer

from orchestrator.trial import lean_trainer_class


def _noop(config: dict) -> None:
    pass


def _callback_names(trainer) -> list[str]:
    return [type(c).__name__ for c in trainer._create_default_callbacks()]


def _trainer(cls, **kwargs):
    return cls(_noop, scaling_config=ray.train.ScalingConfig(num_workers=1), **kwargs)


def test_lean_trainer_is_ray_trains_own_minus_the_dataset_actor():
    lean = lean_trainer_class()
    assert issubclass(lean, TorchTrainer) and lean is not TorchTrainer  # the seam exists in this Ray
    plain, ours = _callback_names(_trainer(TorchTrainer)), _callback_names(_trainer(lean))
    assert "DatasetsCallback" in plain  # what Train V2 starts a DatasetManager actor for
    assert "DatasetsCallback" not in ours
    assert [n for n in plain if n != "DatasetsCallback"] == ours  # everything else kept, in order
    assert "BackendSetupCallback" in ours and "PlacementGroupCleanerCallback" in ours


def test_lean_trainer_keeps_the_dataset_actor_when_given_datasets():
    import ray.data

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        trainer = _trainer(lean_trainer_class(), datasets={"train": ray.data.range(4)})
        assert "DatasetsCallback" in _callback_names(trainer)
    finally:
        ray.shutdown()
