"""A throwaway MinIO server on 127.0.0.1: the real S3 the store's tests talk to.

The binary comes from `tfmaas.dev.tools.ensure("minio")` (built from its Go module);
`TFMAAS_MINIO_BIN` points at another one. It always runs with MinIO's single-key KMS
(`MINIO_KMS_SECRET_KEY`), so SSE-S3 and SSE-KMS requests are really encrypted; with
`tls=True` it serves https:// with a certificate from a CA of its own (`ca_bundle`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import ssl
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from tfmaas.dev import processes

READY_TIMEOUT_SECONDS = 60.0
KMS_KEY_NAME = "tfmaas-store-key"
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and MinIO binding it


def minio_binary() -> Path:
    configured = os.environ.get("TFMAAS_MINIO_BIN")
    if configured:
        return Path(configured)
    from tfmaas.dev import tools

    return tools.ensure("minio")


class MinioServer:
    """Start with `start()` or `with MinioServer() as server:`; data lives in a temp dir."""

    def __init__(
        self,
        *,
        binary: Path | None = None,
        data_dir: Path | None = None,
        access_key: str = "tfmaas-admin",
        secret_key: str | None = None,
        region: str = "us-east-1",
        tls: bool = False,
    ) -> None:
        self._binary = binary
        self._own_dir = data_dir is None
        self.base_dir = data_dir or Path(tempfile.mkdtemp(prefix="tfmaas-minio-"))
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_hex(16)
        self.region = region
        self.tls = tls
        self.kms_key_name = KMS_KEY_NAME
        self.port = 0
        self._process: processes.ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        if not self.port:
            raise RuntimeError("MinioServer is not started")
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def certs_dir(self) -> Path:
        return self.base_dir / "certs"

    @property
    def ca_bundle(self) -> Path:
        """The CA that signed the https:// certificate (only with tls=True)."""
        return self.certs_dir / "test-ca.crt"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and `tfmaas`) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
        }

    @property
    def log_path(self) -> Path:
        return self.base_dir / "minio.log"

    def start(self) -> MinioServer:
        binary = self._binary or minio_binary()
        data = self.base_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.certs_dir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self._write_certificate()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base_dir),
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_REGION": self.region,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_KMS_SECRET_KEY": f"{self.kms_key_name}:{self._kms_key()}",
        }
        last_error: Exception | None = None
        for _ in range(_START_ATTEMPTS):
            port, console_port = processes.free_port(), processes.free_port()
            process = processes.start(
                "minio",
                [
                    str(binary),
                    "server",
                    str(data),
                    "--address",
                    f"127.0.0.1:{port}",
                    "--console-address",
                    f"127.0.0.1:{console_port}",
                    "--certs-dir",
                    str(self.certs_dir),
                    "--quiet",
                ],
                log_path=self.log_path,
                env=env,
            )
            self.port = port
            try:
                processes.wait_until(
                    self._ready,
                    timeout=READY_TIMEOUT_SECONDS,
                    what=f"MinIO to be ready on {self.endpoint}",
                    processes=[process],
                )
            except (RuntimeError, TimeoutError) as exc:
                process.stop()
                last_error = exc
                continue
            self._process = process
            return self
        self.port = 0
        raise RuntimeError(f"MinIO did not start after {_START_ATTEMPTS} attempts: {last_error}")

    def _kms_key(self) -> str:
        """The KMS key (base64 of 32 bytes), kept beside the data: a data dir that outlives the
        server (the local stack's) stays readable after a restart."""
        path = self.base_dir / "kms.key"
        if not path.is_file():
            path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
            path.chmod(0o600)
        return path.read_text().strip()

    def _write_certificate(self) -> None:
        """public.crt/private.key, which MinIO serves from --certs-dir, signed by a new CA."""
        from tfmaas.dev import pki

        authority = pki.CertificateAuthority.create("tfmaas-minio-test-ca")
        certificate, key = authority.issue(
            pki.CertRequest(
                "minio", dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True
            )
        )
        (self.certs_dir / "public.crt").write_bytes(pki.certificate_pem(certificate))
        (self.certs_dir / "private.key").write_bytes(pki.private_key_pem(key))
        self.certs_dir.joinpath("private.key").chmod(0o600)
        # Outside CAs/: MinIO would trust it for its own outgoing calls, which it makes none of.
        self.ca_bundle.write_bytes(pki.certificate_pem(authority.certificate))

    def _ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_bundle)) if self.tls else None
        return processes.http_ok(f"{self.endpoint}/minio/health/ready", context)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def client(self) -> Any:
        """A boto3 S3 client with the root credentials, whatever the environment says."""
        from tfmaas.storage.s3 import make_client

        return make_client(
            self.endpoint,
            self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
            ca_bundle=str(self.ca_bundle) if self.tls else None,
        )

    def bucket(self, name: str) -> str:
        """Create bucket `name` unless it exists; return its name."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def __enter__(self) -> MinioServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
