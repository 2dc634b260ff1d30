"""podium.placement: placement records checked, merged server < environment < content;
GPU limits of content bounded by the server's maxima (podium.resources)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from podium.placement import PlacementError, check_placement, to_placement
from podium.resources import GpuPolicy, JobPolicy, ResourceError, check_gpu_patch, for_content
from podium.runtime import Placement

RECORD = {
    "node_selector": {"pool": "gpu", "topology.kubernetes.io/zone": "a"},
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {}},
    "image_pull_secrets": ["registry"],
    "priority_class_name": "content",
    "runtime_class_name": "gvisor",
}


def test_placement_record_round_trips() -> None:
    assert check_placement(RECORD) == RECORD
    assert check_placement(None) is None and check_placement({}) is None
    placement = to_placement(RECORD)
    assert placement is not None and placement.runtime_class_name == "gvisor"
    assert placement.tolerations == ({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},)


@pytest.mark.parametrize(("record", "message"), [
    ({"nodeSelector": {}}, "unknown placement field"),
    ({"node_selector": {"pool": 3}}, "node_selector"),
    ({"tolerations": [{"key": "a", "bogus": 1}]}, "tolerations"),
    ({"affinity": {"nodeSelector": {}}}, "affinity"),
    ({"image_pull_secrets": ["Not A Name"]}, "image_pull_secrets"),
    ({"runtime_class_name": "g visor"}, "runtime_class_name"),
    ([], "an object"),
])
def test_placement_record_errors_name_the_field(record: Any, message: str) -> None:
    with pytest.raises(PlacementError, match=message):
        check_placement(record)
    assert to_placement(record) is None  # an invalid stored record places nothing


def test_placement_content_goes_over_environment_over_server() -> None:
    server = Placement(node_selector={"pool": "content"}, image_pull_secrets=("a",), priority_class_name="low")
    environment = Placement(node_selector={"pool": "gpu", "disk": "ssd"}, tolerations=({"key": "gpu"},))
    content = Placement(node_selector={"disk": "nvme"}, tolerations=({"key": "team"},),
                        image_pull_secrets=("b",), runtime_class_name="gvisor")
    merged = content.over(environment.over(server))
    assert merged.node_selector == {"pool": "gpu", "disk": "nvme"}
    assert merged.tolerations == ({"key": "gpu"}, {"key": "team"})
    assert merged.image_pull_secrets == ("a", "b")
    assert (merged.priority_class_name, merged.runtime_class_name) == ("low", "gvisor")


def test_gpu_limits_bounded_by_the_server_maxima() -> None:
    gpus = GpuPolicy(nvidia_default=0, nvidia_max=2, amd_default=1, amd_max=1)
    assert check_gpu_patch({"nvidia_gpu_limit": 2, "amd_gpu_limit": None}, gpus) == {
        "nvidia_gpu_limit": 2, "amd_gpu_limit": None}
    with pytest.raises(ResourceError, match="max_nvidia_gpu_limit"):
        check_gpu_patch({"nvidia_gpu_limit": 3}, gpus)
    with pytest.raises(ResourceError):
        check_gpu_patch({"amd_gpu_limit": True}, gpus)
    content = SimpleNamespace(nvidia_gpu_limit=2, amd_gpu_limit=None, kubernetes_placement=RECORD)
    job = for_content(content, JobPolicy(gpus=gpus))
    assert (job.resources.nvidia_gpu_limit, job.resources.amd_gpu_limit) == (2, 1)
    assert job.placement is not None and job.placement.node_selector["pool"] == "gpu"
    lowered = for_content(content, JobPolicy(gpus=GpuPolicy(nvidia_max=1)))
    assert lowered.resources.nvidia_gpu_limit == 1  # clamped at launch, with a warning
    assert any("max_nvidia_gpu_limit" in warning for warning in lowered.warnings)
