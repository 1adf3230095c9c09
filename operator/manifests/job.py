"""The training Job of one version (an Indexed Job plus a headless Service when the spec
asks for several workers), running contract 5's `tfmaas train`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tfmaas.api import ModelService, TrainingSpec
from tfmaas.errors import USER_ERROR_EXIT_CODE
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.common import (
    GPU_RESOURCE,
    container_security_context,
    namespace_of,
    owner_of,
    pod_security_context,
    scratch_env,
    storage_env,
    store_ca_mounts,
    store_ca_volumes,
)
from tfmaas.operator.manifests.placement import training_placement
from tfmaas.operator.naming import (
    COMPLETION_INDEX_ANNOTATION,
    JOB_NAME_LABEL,
    SEARCH_LABEL,
    TRAINER_CONTAINER,
    TRAINING_COMPONENT,
    TRAINING_HASH_ANNOTATION,
    TRIAL_LABEL,
    TRIAL_PARAMETERS_ANNOTATION,
    TUNING_COMPONENT,
    VERSION_LABEL,
    WORKER_PORT,
    job_name,
    labels,
    metadata,
    trial_job_name,
)

WORKER_INDEX_ENV = "TFMAAS_WORKER_INDEX"


def tf_config_template(service: ModelService, version: int) -> str:
    """TF_CONFIG for a worker of the Indexed Job; `$(TFMAAS_WORKER_INDEX)` is expanded by the
    kubelet from the pod's completion index, so one pod template serves every worker."""
    name = job_name(service.name, version)
    namespace = namespace_of(service)
    workers = [
        f"{name}-{index}.{name}.{namespace}.svc:{WORKER_PORT}"
        for index in range(service.spec.training.workers)
    ]
    cluster = json.dumps({"worker": workers}, separators=(",", ":"))
    return f'{{"cluster":{cluster},"task":{{"type":"worker","index":$({WORKER_INDEX_ENV})}}}}'


def trainer_command(
    service: ModelService,
    version: int,
    *,
    training: TrainingSpec | None = None,
    tuning_table: Mapping[str, Any] | None = None,
) -> list[str]:
    """`training` is what to train when it is not spec.training as written (a search's best
    configuration, whose trial table `tuning_table` goes to the model card)."""
    command = [
        "tfmaas",
        "train",
        "--name",
        service.name,
        "--version",
        str(version),
        "--store",
        service.spec.storage.uri,
        "--training-json",
        (training or service.spec.training).to_json(),
    ]
    if tuning_table is not None:
        command += ["--tuning-json", json.dumps(tuning_table, separators=(",", ":"))]
    return command


def trial_command(service: ModelService, trial: int, training: TrainingSpec) -> list[str]:
    return [
        "tfmaas",
        "train",
        "--name",
        service.name,
        "--trial",
        str(trial),
        "--store",
        service.spec.storage.uri,
        "--training-json",
        training.to_json(),
    ]


def _trainer_resources(service: ModelService) -> dict[str, Any]:
    resources = service.spec.training.resources
    amounts: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    limits = dict(amounts)
    if resources.gpu:
        limits[GPU_RESOURCE] = resources.gpu
    return {"requests": amounts, "limits": limits}


def pod_failure_policy() -> dict[str, Any]:
    """Which failed pods count against backoffLimit. A pod taken away (preemption, eviction,
    a drained node: Kubernetes marks it DisruptionTarget) is replaced without counting, and
    the replacement resumes from the last epoch's checkpoint; a trainer that exited with the
    user-error status (a bad spec, a missing dataset, a taken version) fails the Job at once,
    since a retry would fail the same way. Other failures are retried up to backoffLimit."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": [USER_ERROR_EXIT_CODE],
                },
            },
        ]
    }


def build_training_job(
    service: ModelService,
    version: int,
    config: OperatorConfig,
    *,
    training: TrainingSpec | None = None,
    tuning_table: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Version `version`'s Job. It trains `training` when given (a search's best
    configuration) but carries spec.training's hash: it is that spec's version."""
    name = job_name(service.name, version)
    version_labels = labels(service.name, TRAINING_COMPONENT, **{VERSION_LABEL: str(version)})
    command = trainer_command(service, version, training=training, tuning_table=tuning_table)
    return _job(
        service,
        config,
        name=name,
        object_labels=version_labels,
        annotations={TRAINING_HASH_ANNOTATION: service.spec.training.fingerprint()},
        command=command,
        workers=service.spec.training.workers,
        tf_config=tf_config_template(service, version),
    )


def build_trial_job(
    service: ModelService,
    trial: int,
    parameters: Mapping[str, float | int],
    config: OperatorConfig,
) -> dict[str, Any]:
    """Trial `trial` of spec.training.tuning's search: one worker with training.resources,
    training spec.training with `parameters`, scored on the validation split."""
    fingerprint = service.spec.training.fingerprint()
    name = trial_job_name(service.name, fingerprint, trial)
    trial_labels = labels(
        service.name, TUNING_COMPONENT, **{SEARCH_LABEL: fingerprint, TRIAL_LABEL: str(trial)}
    )
    training = service.spec.training.with_parameters(parameters)
    return _job(
        service,
        config,
        name=name,
        object_labels=trial_labels,
        annotations={
            TRAINING_HASH_ANNOTATION: fingerprint,
            TRIAL_PARAMETERS_ANNOTATION: json.dumps(dict(parameters), sort_keys=True),
        },
        command=trial_command(service, trial, training),
        workers=1,
        tf_config="",
    )


def _job(
    service: ModelService,
    config: OperatorConfig,
    *,
    name: str,
    object_labels: dict[str, str],
    annotations: dict[str, str],
    command: list[str],
    workers: int,
    tf_config: str,
) -> dict[str, Any]:
    training = service.spec.training
    placed = training_placement(training.pod, gpu=training.resources.gpu > 0, config=config)
    # The spec's labels cannot name the operator's (the CRD refuses them); the operator's
    # still go last, so a default from elsewhere cannot break the Job's selectors either.
    job_labels = {**placed.labels, **object_labels}
    image = training.image or config.trainer_image
    env = [
        *storage_env(service, config, image=image, service_account=placed.service_account_name),
        *scratch_env(),
    ]
    if workers > 1:
        env = [
            {
                "name": WORKER_INDEX_ENV,
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
                    }
                },
            },
            {"name": "TF_CONFIG", "value": tf_config},
            *env,
        ]
    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": image,
        "imagePullPolicy": config.trainer_image_pull_policy,
        "command": command,
        "env": env,
        "resources": _trainer_resources(service),
        "securityContext": container_security_context(),
        # The trainer writes its metrics as the termination message, so the operator needs
        # no storage credentials; a crash leaves the log's tail there instead.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}, *store_ca_mounts(service)],
    }
    if workers > 1:
        container["ports"] = [{"name": "worker", "containerPort": WORKER_PORT}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(config),
        # An identity webhook (IRSA) projects its own token; the API token stays out.
        "automountServiceAccountToken": False,
        **placed.pod_spec_fields(),
        "containers": [container],
        # The export and the trainer's caches go to scratch; a model larger than the
        # trainer's memory could not have been trained, so that bounds the disk too.
        "volumes": [
            {"name": "scratch", "emptyDir": {"sizeLimit": training.resources.memory}},
            *store_ca_volumes(service),
        ],
    }
    template_meta: dict[str, Any] = {"labels": job_labels}
    if placed.annotations:
        template_meta["annotations"] = dict(placed.annotations)
    job_spec: dict[str, Any] = {
        "backoffLimit": config.training_backoff_limit,
        "podFailurePolicy": pod_failure_policy(),
        "activeDeadlineSeconds": config.training_deadline_seconds,
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if workers > 1:
        pod_spec["subdomain"] = name
        job_spec.update(completionMode="Indexed", completions=workers, parallelism=workers)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            name,
            namespace_of(service),
            owner_of(service),
            job_labels,
            {**placed.annotations, **annotations},
        ),
        "spec": job_spec,
    }


def build_worker_service(service: ModelService, version: int) -> dict[str, Any] | None:
    """The headless Service that gives each worker of a multi-worker Job a DNS name."""
    if service.spec.training.workers <= 1:
        return None
    name = job_name(service.name, version)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            name,
            namespace_of(service),
            owner_of(service),
            labels(service.name, TRAINING_COMPONENT, **{VERSION_LABEL: str(version)}),
        ),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: name},
            "ports": [{"name": "worker", "port": WORKER_PORT, "targetPort": WORKER_PORT}],
        },
    }
