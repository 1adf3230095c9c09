"""Which owned-object updates are worth a reconcile."""

from __future__ import annotations

from tfmaas.operator.reconcile_runner import observed_state


def job(active: int, *conditions: str) -> dict:  # type: ignore[type-arg]
    return {
        "kind": "Job",
        "status": {
            "active": active,
            "conditions": [{"type": c, "status": "True"} for c in conditions]
            + [{"type": "Suspended", "status": "False"}],
        },
    }


def deployment(ready: int, version: str = "1", heartbeat: str = "t1") -> dict:  # type: ignore[type-arg]
    return {
        "kind": "Deployment",
        "metadata": {"generation": 2},
        "spec": {
            "replicas": 1,
            "template": {"metadata": {"labels": {"tfmaas.io/version": version}}},
        },
        "status": {
            "observedGeneration": 2,
            "readyReplicas": ready,
            "conditions": [{"type": "Progressing", "lastUpdateTime": heartbeat}],
        },
    }


def test_job_progress_without_an_outcome_is_ignored() -> None:
    assert observed_state(job(1)) == observed_state(job(0))
    assert observed_state(job(0, "SuccessCriteriaMet")) != observed_state(job(0))
    assert observed_state(job(0, "Failed")) != observed_state(job(0, "Complete"))


def test_deployment_rollout_fields_matter_and_heartbeats_do_not() -> None:
    assert observed_state(deployment(0, heartbeat="t1")) == observed_state(
        deployment(0, heartbeat="t2")
    )
    assert observed_state(deployment(1)) != observed_state(deployment(0))
    assert observed_state(deployment(1, version="2")) != observed_state(deployment(1))


def model_service(generation: int, observed: int | None) -> dict:  # type: ignore[type-arg]
    status = {} if observed is None else {"observedGeneration": observed, "phase": "Serving"}
    return {"metadata": {"generation": generation}, "status": status}


def test_only_a_new_or_changed_spec_asks_for_a_reconcile_of_its_own() -> None:
    from tfmaas.operator.handlers import spec_trigger

    assert spec_trigger("ADDED", model_service(1, None)) == "create"
    assert spec_trigger("MODIFIED", model_service(1, None)) == "create"
    assert spec_trigger("MODIFIED", model_service(3, 2)) == "update"
    # Our own status writes, and anything else that leaves the spec as last reconciled.
    assert spec_trigger("MODIFIED", model_service(3, 3)) is None
    # The listing a watch starts with: what changed while no operator watched.
    assert spec_trigger(None, model_service(1, None)) == "resume"
    assert spec_trigger(None, model_service(4, 3)) == "resume"
    assert spec_trigger(None, model_service(4, 4)) is None
    assert spec_trigger("DELETED", model_service(1, None)) is None
    # A status written under an older CRD, or by hand, without observedGeneration.
    assert spec_trigger("MODIFIED", {"metadata": {"generation": 2}, "status": {"phase": "x"}}) == (
        "update"
    )
