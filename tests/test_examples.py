"""The example files the README points at are what their tools accept."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_ray_cluster_example_passes_rays_own_schema() -> None:
    pytest.importorskip("ray")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((EXAMPLES / "ray-cluster.yaml").read_text(encoding="utf-8"))
    prepared = prepare_config(config)
    validate_config(prepared)  # raises on a field Ray does not know or a missing one
    assert prepared["provider"]["type"] == "local"
    assert any("dermsynth[ray]" in c for c in prepared["setup_commands"])
    misspelt = prepare_config({**config, "max_workerz": 2})
    with pytest.raises(Exception, match="max_workerz"):
        validate_config(misspelt)
