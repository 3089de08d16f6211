"""cluster.yaml passes the offline checks `ray up` performs: Ray's JSON schema + config preparation."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"
SCHEMA = json.loads(Path(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json").read_text())


def _validate(cfg: dict) -> None:
    jsonschema.validate(cfg, SCHEMA)
    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.fixture()
def cfg() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_is_valid(cfg):
    _validate(cfg)
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"]["trial_driver"] >= 1 and "GPU" not in head["resources"]
    gpu = cfg["available_node_types"]["worker_gpu"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["min_workers"] == 0
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "mlflow server --host 127.0.0.1" in start
    # token auth on by construction: one token copied to every node, every `ray start` in token mode
    assert cfg["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (
            lambda c: c["available_node_types"]["worker_gpu"]["resources"].update(GPU=0.5),
            "not of type 'integer'",
        ),
        (lambda c: c.update(bogus=1), "Additional properties"),
        (lambda c: c.update(head_node_type="nope"), "head_node_type"),
    ],
)
def test_validation_catches_mistakes(cfg, mutate, error):
    mutate(cfg)
    with pytest.raises(Exception, match=error):
        _validate(cfg)
