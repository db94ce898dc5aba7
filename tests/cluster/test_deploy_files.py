"""The files under deploy/ cannot run here (no Docker, no Kubernetes, no GPU); everything in
them that can be checked is: the Serve config against Ray's own schema and against the
application it names, the RayService against the Serve config and its own pod groups, every
``clipserve`` command against the real command-line parser, and the Dockerfile's commands
against the ones the docs tell people to run."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from clipserve.cli import build_parser, config_from_args

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def serve_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "serve-config.yaml").read_text())


def rayservice() -> tuple[dict[str, Any], dict[str, Any]]:
    service, balancer = yaml.safe_load_all((DEPLOY / "rayservice.yaml").read_text())
    return service, balancer


def app_entry(config: dict[str, Any]) -> dict[str, Any]:
    (application,) = config["applications"]
    return application


def deployment(application: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in application["deployments"] if d["name"] == name)


def test_the_serve_config_passes_rays_own_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_config())
    (application,) = schema.applications
    assert application.import_path == "clipserve.cluster.app:build"


def test_the_serve_config_names_the_deployments_its_application_builds() -> None:
    from ray.serve._private.build_app import build_app

    from clipserve.cluster.app import build
    from clipserve.cluster.replica import ReplicaSpec
    from clipserve.cluster.settings import RaySettings
    from clipserve.server.config import build_config

    application = app_entry(serve_config())
    args = dict(application["args"])
    built = build_app(build(args), name=application["name"])
    names = {d.name for d in built.deployments}
    assert names == {d["name"] for d in application["deployments"]} == {"Embedder", "Frontend"}
    frontend = dict(args.pop("frontend"))
    ReplicaSpec.from_args(args)  # every replica setting is a known one,
    build_config(overrides={k: v for k, v in frontend.items() if k != "ray"})  # a clipserve one
    assert RaySettings.from_mapping(frontend["ray"]).unavailable_after_s > 0  # or a Ray one
    embedder = deployment(application, "Embedder")
    chunk = args["max_batch_size"]  # one batch per call (chunk_items unset)
    assert args["max_queue_items"] == embedder["max_ongoing_requests"] * chunk


def test_the_rayservice_serves_the_same_applications_on_matching_pod_groups() -> None:
    from ray.serve.schema import ServeDeploySchema

    service, balancer = rayservice()
    assert service["kind"] == "RayService" and balancer["kind"] == "Service"
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    assert embedded == serve_config()
    application = app_entry(embedded)
    groups = {g["groupName"]: g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    # the Frontend replicas ask for the custom resource only the frontend pods offer
    wanted = deployment(application, "Frontend")["ray_actor_options"]["resources"]
    offered = json.loads(json.loads(groups["frontend"]["rayStartParams"]["resources"]))
    assert wanted == offered == {"frontend": 1}
    # one Embedder replica per GPU pod
    gpus = deployment(application, "Embedder")["ray_actor_options"]["num_gpus"]
    container = groups["gpu"]["template"]["spec"]["containers"][0]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == gpus == 1
    # the load balancer selects the frontend pods, on the ports the front-ends bind
    labels = groups["frontend"]["template"]["metadata"]["labels"]
    assert balancer["spec"]["selector"].items() <= labels.items()
    front = application["args"]["frontend"]
    ports = {p["name"]: p["targetPort"] for p in balancer["spec"]["ports"]}
    assert ports == {"grpc": front["grpc_port"], "http": front["http_port"]}
    assert service["spec"]["rayClusterConfig"]["rayVersion"].startswith("2.")


def clipserve_commands(text: str) -> list[list[str]]:
    """Every ``clipserve serve ...`` command in a file (shell lines, JSON-form CMD)."""
    commands = []
    for match in re.finditer(r"CMD (\[.*\])", text):
        commands.append(json.loads(match.group(1)))
    for line in text.splitlines():
        found = re.search(r"(clipserve serve [^\"'`&|]*)", line)
        if found and "CMD [" not in line:
            commands.append(shlex.split(found.group(1)))
    return commands


def pip_installs(dockerfile: str) -> list[str]:
    return [line[4:].strip() for line in dockerfile.splitlines() if line.startswith("RUN pip ")]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda", "docker-compose.yaml"])
def test_every_clipserve_command_in_the_deploy_files_parses(name: str) -> None:
    commands = clipserve_commands((DEPLOY / name).read_text())
    assert commands
    for command in commands:
        assert command[:2] == ["clipserve", "serve"], command
        config = config_from_args(build_parser().parse_args(command[1:]))
        assert config.ray and config.ray["address"] in ("auto", "local"), command


def test_the_dockerfiles_run_the_commands_the_docs_give() -> None:
    guide = (REPO / "docs" / "cluster.md").read_text()
    readme = (REPO / "README.md").read_text()
    cpu = (DEPLOY / "Dockerfile").read_text()
    for install in pip_installs(cpu) + pip_installs((DEPLOY / "Dockerfile.cuda").read_text()):
        assert install in guide, f"docs/cluster.md does not show {install!r}"
    (command,) = [c for c in clipserve_commands(cpu) if c[:2] == ["clipserve", "serve"]]
    assert " ".join(command) in readme and " ".join(command) in guide
    assert 'RUN clipserve prepare --model "$MODEL"' in cpu


def test_the_compose_file_builds_the_image_and_joins_the_head() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    head, worker = compose["services"]["head"], compose["services"]["worker"]
    assert head["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / head["build"]["context"]).resolve() == REPO
    assert "ray start --head --port=6379" in head["command"][-1]
    assert worker["command"].startswith("ray start --address=head:6379")
    assert head["environment"]["RAY_AUTH_TOKEN"] == worker["environment"]["RAY_AUTH_TOKEN"]
