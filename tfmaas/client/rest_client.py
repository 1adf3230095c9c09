"""REST client for TF Serving's `/v1/models` API, using only the standard library."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from tfmaas.client.explanations import EXPLAIN_SIGNATURE, Explanation, to_explanations
from tfmaas.client.predictions import Prediction, PredictionError, to_predictions
from tfmaas.client.retry import with_backoff

_HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def model_path(model: str, version: int | None, label: str | None) -> str:
    if version is not None and label:
        raise PredictionError("INVALID_ARGUMENT", "choose a version or a label, not both")
    path = f"/v1/models/{model}"
    if version is not None:
        path += f"/versions/{version}"
    elif label:
        path += f"/labels/{label}"
    return path


def _unavailable(error: Exception) -> bool:
    """A 503, or no answer at all: worth another try once the server is back."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code == 503
    return isinstance(error, urllib.error.URLError | ConnectionError | TimeoutError)


def _columns(answer: Any) -> dict[str, Any]:
    """The `outputs` object a columnar (`inputs`) request answers with several outputs."""
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, dict):
        raise PredictionError("INVALID_ARGUMENT", f"unexpected response: {str(answer)[:200]}")
    return outputs


class RestClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        token: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        """`token` goes with every request as `Authorization: Bearer`; `ca_file` (PEM) is the
        CA that an https:// server's certificate must chain to."""
        if "://" not in base_url:
            base_url = f"{'https' if ca_file else 'http'}://{base_url}"
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def request(self, method: str, path: str, payload: Any | None = None) -> Any:
        data = json.dumps(payload).encode("utf-8") if payload is not None else None

        def send() -> Any:
            request = urllib.request.Request(
                self.base_url + path,
                data=data,
                method=method,
                headers=self._headers,
            )
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self._context
            ) as response:
                return json.loads(response.read())

        try:
            return with_backoff(
                send, retries=self.retries, backoff=self.backoff, transient=_unavailable
            )
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                message = json.loads(body).get("error", "")
            except ValueError:
                message = body.decode("utf-8", "replace")
            code = _HTTP_CODES.get(exc.code, f"HTTP_{exc.code}")
            raise PredictionError(code, message or str(exc)) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PredictionError("UNAVAILABLE", f"cannot reach {self.base_url}: {reason}") from exc

    def predict_json(
        self,
        model: str,
        body: dict[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        return self.request("POST", model_path(model, version, label) + ":predict", body)

    def predict(
        self,
        model: str,
        texts: Sequence[str],
        *,
        version: int | None = None,
        label: str | None = None,
        classes: Sequence[str] | None = None,
    ) -> list[Prediction]:
        answer = self.predict_json(
            model, {"inputs": {"text": list(texts)}}, version=version, label=label
        )
        return to_predictions(_columns(answer), classes)

    def explain(
        self,
        model: str,
        texts: Sequence[str],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> list[Explanation]:
        """Why the model predicts what it does: `:predict` on the version's `explain` signature."""
        body = {"signature_name": EXPLAIN_SIGNATURE, "inputs": {"text": list(texts)}}
        answer = self.predict_json(model, body, version=version, label=label)
        return to_explanations(_columns(answer))

    def status(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> list[dict[str, Any]]:
        answer = self.request("GET", model_path(model, version, label))
        return [
            {
                "version": int(item["version"]),
                "state": item["state"],
                "error": item.get("status", {}).get("error_message", ""),
            }
            for item in answer.get("model_version_status", [])
        ]

    def metadata(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        return self.request("GET", model_path(model, version, label) + "/metadata")
