"""Version policies, labels and request resolution, with a loader that needs no TensorFlow."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from tensorflow_serving.config import model_server_config_pb2

from tfmaas.serving.errors import ServingError
from tfmaas.serving.registry import Registry, VersionState, aspired_versions, versions_on_disk


class FakeServed:
    def __init__(self, version: int) -> None:
        self.version = version
        self.closed = False

    def close(self) -> None:
        self.closed = True


def make_version(base: Path, version: int | str) -> None:
    (base / str(version)).mkdir(parents=True)
    (base / str(version) / "saved_model.pb").write_bytes(b"")


def config(base: Path, policy: str = "", labels: dict[str, int] | None = None):
    text = f'model_config_list {{ config {{ name: "m" base_path: "{base}" {policy} }} }}'
    from google.protobuf import text_format

    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    for key, value in (labels or {}).items():
        parsed.model_config_list.config[0].version_labels[key] = value
    return parsed


@pytest.fixture
def loaded() -> dict[int, FakeServed]:
    return {}


@pytest.fixture
def registry(loaded: dict[int, FakeServed]) -> Registry:
    def load(name: str, version: int, path: Path) -> FakeServed:
        if (path / "broken").exists():
            raise ValueError("not a SavedModel")
        loaded[version] = FakeServed(version)
        return loaded[version]  # type: ignore[return-value]

    return Registry(load)  # type: ignore[arg-type]


def test_versions_on_disk_need_a_numeric_name_and_a_saved_model(tmp_path: Path) -> None:
    make_version(tmp_path, 2)
    make_version(tmp_path, 10)
    (tmp_path / "3").mkdir()  # still being written
    (tmp_path / "tmp").mkdir()
    assert versions_on_disk(tmp_path) == {2: "2", 10: "10"}
    assert versions_on_disk(tmp_path / "missing") == {}


def test_a_zero_padded_version_folder_keeps_its_name(tmp_path: Path) -> None:
    make_version(tmp_path, "00000123")
    make_version(tmp_path, "٣")  # not ASCII digits: not a version, as for TF Serving's strtoll
    assert versions_on_disk(tmp_path) == {123: "00000123"}


def test_of_two_folders_for_one_version_the_last_in_sorted_order_wins(tmp_path: Path) -> None:
    make_version(tmp_path, "007")
    make_version(tmp_path, "7")
    assert versions_on_disk(tmp_path) == {7: "7"}


def test_a_zero_padded_version_is_loaded_from_its_own_folder(
    tmp_path: Path, loaded: dict[int, FakeServed]
) -> None:
    paths: list[Path] = []

    def load(name: str, version: int, path: Path) -> FakeServed:
        paths.append(path)
        return FakeServed(version)

    registry = Registry(load)  # type: ignore[arg-type]
    make_version(tmp_path, "00000123")
    registry.apply_config(config(tmp_path))
    assert paths == [tmp_path / "00000123"]
    assert registry.resolve("m").version == 123
    assert registry.load_failures() == []


def test_policies_choose_versions(tmp_path: Path) -> None:
    on_disk = [1, 2, 3]

    def pick(policy):
        return aspired_versions(config(tmp_path, policy).model_config_list.config[0], on_disk)

    assert pick("") == {3}
    assert pick("model_version_policy { latest { num_versions: 2 } }") == {2, 3}
    assert pick("model_version_policy { all {} }") == {1, 2, 3}
    assert pick("model_version_policy { specific { versions: 1 versions: 7 } }") == {1}


def test_latest_policy_rolls_forward_and_unloads_the_old_version(
    tmp_path: Path, registry: Registry, loaded: dict[int, FakeServed]
) -> None:
    make_version(tmp_path, 1)
    registry.apply_config(config(tmp_path))
    assert registry.resolve("m").version == 1
    make_version(tmp_path, 2)
    registry.poll()
    assert registry.resolve("m").version == 2
    assert loaded[1].closed
    states = {r.version: r.state for r in registry.status("m")}
    assert states == {2: VersionState.AVAILABLE, 1: VersionState.END}


def test_labels_resolve_and_unknown_ones_are_invalid_argument(
    tmp_path: Path, registry: Registry
) -> None:
    for version in (1, 2):
        make_version(tmp_path, version)
    registry.apply_config(
        config(tmp_path, "model_version_policy { all {} }", {"stable": 1, "canary": 2})
    )
    assert registry.resolve("m", label="stable").version == 1
    assert registry.resolve("m", label="canary").version == 2
    assert registry.resolve("m").version == 2
    with pytest.raises(ServingError) as error:
        registry.resolve("m", label="beta")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.message == "Unrecognized servable version label: beta"


def test_a_label_moves_to_the_new_version_before_the_old_one_unloads(
    tmp_path: Path, registry: Registry, loaded: dict[int, FakeServed]
) -> None:
    """A request by label during a reload gets the old or the new version, never NOT_FOUND."""
    for version in (1, 2):
        make_version(tmp_path, version)
    specific = "model_version_policy {{ specific {{ versions: {} }} }}"
    registry.apply_config(config(tmp_path, specific.format(1), {"stable": 1}))
    seen_while_unloading: list[int] = []
    loaded[1].close = lambda: seen_while_unloading.append(  # type: ignore[method-assign]
        registry.resolve("m", label="stable").version  # type: ignore[attr-defined]
    )
    registry.apply_config(config(tmp_path, specific.format(2), {"stable": 2}))
    assert seen_while_unloading == [2]
    assert {r.version: r.state for r in registry.status("m")} == {
        2: VersionState.AVAILABLE,
        1: VersionState.END,
    }


def test_label_on_an_unavailable_version_is_refused_and_old_labels_stay(
    tmp_path: Path, registry: Registry
) -> None:
    make_version(tmp_path, 1)
    registry.apply_config(config(tmp_path, labels={"stable": 1}))
    with pytest.raises(ServingError) as error:
        registry.apply_config(config(tmp_path, labels={"stable": 5}))
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Request to assign label to version 5 of model m" in error.value.message
    assert registry.resolve("m", label="stable").version == 1


def test_missing_model_and_version_are_not_found(tmp_path: Path, registry: Registry) -> None:
    make_version(tmp_path, 1)
    registry.apply_config(config(tmp_path))
    cases = [
        (lambda: registry.resolve("other"), "Servable not found for request: Latest(other)"),
        (lambda: registry.resolve("m", 9), "Servable not found for request: Specific(m, 9)"),
        (lambda: registry.status("other"), "Could not find any versions of model other"),
        (lambda: registry.status("m", 9), "Could not find version 9 of model m"),
    ]
    for call, message in cases:
        with pytest.raises(ServingError) as error:
            call()
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        assert error.value.message == message


def test_a_version_that_fails_to_load_is_reported_and_not_served(
    tmp_path: Path, registry: Registry
) -> None:
    make_version(tmp_path, 1)
    registry.apply_config(config(tmp_path))
    make_version(tmp_path, 2)
    (tmp_path / "2" / "broken").write_text("")
    registry.poll()
    status = {r.version: r for r in registry.status("m")}
    assert status[2].state == VersionState.END and "not a SavedModel" in status[2].error
    assert registry.resolve("m").version == 1  # the old version keeps serving
    assert registry.load_failures() == [("m", 2, "ValueError: not a SavedModel")]


def test_a_model_left_out_of_a_new_config_is_unloaded(
    tmp_path: Path, registry: Registry, loaded: dict[int, FakeServed]
) -> None:
    make_version(tmp_path, 1)
    registry.apply_config(config(tmp_path))
    registry.apply_config(model_server_config_pb2.ModelServerConfig())
    assert loaded[1].closed
    with pytest.raises(ServingError):
        registry.resolve("m")


def test_s3_base_paths_are_refused_like_tf_serving(registry: Registry) -> None:
    with pytest.raises(ServingError, match="File system scheme 's3' not implemented"):
        registry.apply_config(config("s3://bucket/m"))  # type: ignore[arg-type]
