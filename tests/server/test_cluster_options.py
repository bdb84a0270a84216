"""The worker deployment's options from the settings: fixed replicas, or autoscaling between the bounds."""

from __future__ import annotations

import pytest

from sdstudio.config import Settings

pytest.importorskip("ray.serve", reason="the cluster extra (ray[serve]) is not installed")

from sdstudio.server.cluster import deployment_options, shared_settings  # noqa: E402


def test_without_replicas_the_workers_autoscale_between_the_settings():
    options = deployment_options(Settings(cluster_min_replicas=2, cluster_max_replicas=5), None, has_gpus=False)
    assert options["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 5, "target_ongoing_requests": 1}
    assert "num_replicas" not in options and options["max_ongoing_requests"] == 1
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0}


def test_a_maximum_below_the_minimum_is_read_as_the_minimum_and_gpus_are_one_per_worker():
    options = deployment_options(Settings(cluster_min_replicas=3, cluster_max_replicas=1), None, has_gpus=True)
    assert options["autoscaling_config"]["max_replicas"] == 3
    assert options["ray_actor_options"]["num_gpus"] == 1


def test_replicas_given_fix_the_count():
    options = deployment_options(Settings(), 4, has_gpus=False)
    assert options["num_replicas"] == 4 and "autoscaling_config" not in options


def test_the_options_workers_take_leave_out_the_machine_and_the_checkpoint():
    shared = shared_settings(Settings(eta_noise_seed_delta=31337, device="cpu", precision="fp32"))
    assert shared["eta_noise_seed_delta"] == 31337
    assert not {"device", "precision", "cpu_offload", "sd_model_checkpoint"} & shared.keys()
