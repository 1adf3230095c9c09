"""Shared pytest configuration.

Fixtures that start real parts (control plane, MinIO, Prometheus) live in
`tests/fixtures/` as plugins, one module per part, and are session-scoped so a
test run pays for each start once.
"""

import importlib.util

pytest_plugins = [
    name
    for name in (
        "tests.fixtures.cluster",
        "tests.fixtures.frontend",
        "tests.fixtures.minio",
        "tests.fixtures.models",
        "tests.fixtures.prometheus",
    )
    if importlib.util.find_spec(name) is not None
]
