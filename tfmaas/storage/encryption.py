"""Server-side encryption of an S3 store: what publish asks for on every write and what pull
insists on when reading.

The setting reaches a pod as `TFMAAS_STORE_ENCRYPTION` (`sse-s3` or `sse-kms`) and
`TFMAAS_STORE_KMS_KEY_ID`, the way the endpoint reaches it as `AWS_ENDPOINT_URL`; the CLI's
`--encryption`/`--kms-key-id` override them. A KMS key id names a key, it is not one, but it
is still never written into an error message: it can be an account's ARN.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfmaas.errors import UserError
from tfmaas.storage.base import StoreError

ENCRYPTION_ENV = "TFMAAS_STORE_ENCRYPTION"
KMS_KEY_ID_ENV = "TFMAAS_STORE_KMS_KEY_ID"
MODES = ("sse-s3", "sse-kms")
# S3's names of the two algorithms, as sent in ServerSideEncryption and read back from it.
_ALGORITHM = {"sse-s3": "AES256", "sse-kms": "aws:kms"}
# Which stored algorithms satisfy a requirement: a KMS-encrypted object is encrypted at rest
# too, but an sse-s3 object does not satisfy sse-kms (the point of KMS is who holds the key).
_ACCEPTED = {
    "sse-s3": ("AES256", "aws:kms", "aws:kms:dsse"),
    "sse-kms": ("aws:kms", "aws:kms:dsse"),
}
# A key id, alias, or key/alias ARN (AWS caps them at 2048 characters); the same bound and
# alphabet as the CRD's storage.kmsKeyId.
KMS_KEY_ID_MAX = 2048
KMS_KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9:/_.@+=,-]{1,2048}")


class UnencryptedObjectError(StoreError):
    """An object of the store lacks the server-side encryption the store requires."""


@dataclass(frozen=True)
class StoreEncryption:
    mode: str  # one of MODES
    kms_key_id: str | None = None

    @classmethod
    def parse(
        cls, mode: str | None, kms_key_id: str | None, *, mode_name: str, key_name: str
    ) -> StoreEncryption | None:
        """The setting from user input, or None when `mode` is unset; errors name the field."""
        mode = (mode or "").strip() or None
        kms_key_id = (kms_key_id or "").strip() or None
        if mode is None:
            if kms_key_id is not None:
                raise UserError(
                    f"{key_name} is set but {mode_name} is not sse-kms; set both or neither"
                )
            return None
        if mode not in MODES:
            shown = mode if len(mode) <= 20 else mode[:17] + "..."
            raise UserError(f"{mode_name} {shown!r} is unknown; use one of {', '.join(MODES)}")
        if kms_key_id is not None:
            if mode != "sse-kms":
                raise UserError(f"{key_name} is set but {mode_name} is {mode}; it needs sse-kms")
            if not KMS_KEY_ID_PATTERN.fullmatch(kms_key_id):
                raise UserError(
                    f"{key_name} is not a KMS key id, alias or ARN (at most {KMS_KEY_ID_MAX} "
                    "letters, digits and :/_.@+=,-)"
                )
        return cls(mode=mode, kms_key_id=kms_key_id)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StoreEncryption | None:
        env = os.environ if environ is None else environ
        return cls.parse(
            env.get(ENCRYPTION_ENV),
            env.get(KMS_KEY_ID_ENV),
            mode_name=ENCRYPTION_ENV,
            key_name=KMS_KEY_ID_ENV,
        )

    def put_args(self) -> dict[str, str]:
        """The parameters of PutObject, CopyObject and CreateMultipartUpload (boto3's
        ExtraArgs take the same names)."""
        args = {"ServerSideEncryption": _ALGORITHM[self.mode]}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def check(self, response: Mapping[str, Any], *, uri: str) -> None:
        """Refuse an object whose HeadObject/GetObject answer shows weaker encryption."""
        stored = response.get("ServerSideEncryption")
        if stored in _ACCEPTED[self.mode]:
            return
        found = f"it is stored with {str(stored)[:40]!r}" if stored else "it is stored unencrypted"
        raise UnencryptedObjectError(
            f"{uri}: {found}, but the store's encryption setting (spec.storage.encryption, "
            f"--encryption or {ENCRYPTION_ENV}) requires {self.mode}; it was written without "
            "it: publish the model again as a new version with the setting in place"
        )
