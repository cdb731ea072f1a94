"""A thread-safe client of one OpenAI-compatible server (vLLM `serve`, llama.cpp server, hosted APIs,
`sqlarbiter models serve-openai`), used by the `openai` generator and the `openai` discriminators.

It speaks `/v1/completions` and `/v1/chat/completions` over httpx with: a per-request timeout,
retries with exponential backoff (plus jitter, honouring a numeric Retry-After) on 429, 5xx and connection
errors/timeouts, a concurrency limit (a semaphore shared by every thread using the client) and an API key
read from the environment variable the spec names (`api_key_env`, default OPENAI_API_KEY; no key is fine
for local servers). When retries run out it raises `BackendUnavailable` (`BackendTimeout` for timeouts); a
4xx other than 429 raises `BackendError` (the request itself is wrong: retrying will not help).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from core.errors import BackendError, BackendTimeout, BackendUnavailable
from core.specs import options_of

RETRY_STATUS = {429, 500, 502, 503, 504}


def _api_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIClient:
    """A thread-safe client of one OpenAI-compatible server."""

    def __init__(self, url: str, *, api_key: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 120.0, max_retries: int = 3, backoff: float = 0.5, max_backoff: float = 8.0,
                 concurrency: int = 8, transport: httpx.BaseTransport | None = None):
        if not url:
            raise BackendError("the openai backend needs `url` (the server's base URL, e.g. http://127.0.0.1:8001/v1)")
        if max_retries < 0 or concurrency < 1:
            raise ValueError("max_retries must be >= 0 and concurrency >= 1")
        self.base = _api_base(url)
        key = api_key if api_key is not None else (os.environ.get(api_key_env) if api_key_env else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.concurrency = int(concurrency)
        self._sem = threading.BoundedSemaphore(self.concurrency)
        self._http = httpx.Client(base_url=self.base, headers=headers, timeout=httpx.Timeout(self.timeout),
                                  transport=transport,
                                  limits=httpx.Limits(max_connections=self.concurrency,
                                                      max_keepalive_connections=self.concurrency))

    # ---- transport with retries ----------------------------------------------------------------------
    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        if retry_after:
            try:
                delay = min(self.max_backoff, max(delay, float(retry_after)))
            except ValueError:
                pass
        time.sleep(delay + random.uniform(0, self.backoff / 4))

    def request(self, method: str, path: str, payload: dict | None = None) -> dict:
        """One API call with retries; returns the decoded JSON body."""
        last: str = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                with self._sem:
                    r = self._http.request(method, path, json=payload)
            except httpx.TimeoutException as e:
                last, kind = f"timed out after {self.timeout:g}s ({type(e).__name__})", "timeout"
            except httpx.TransportError as e:  # connection refused/reset, protocol errors
                last, kind = f"{type(e).__name__}: {e}", "connection"
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except ValueError as e:
                        raise BackendError(f"{self.base}{path}: response is not JSON: {r.text[:200]!r}") from e
                body = r.text[:500]
                if r.status_code not in RETRY_STATUS:
                    raise BackendError(f"{self.base}{path}: HTTP {r.status_code}: {body}")
                last, kind, retry_after = f"HTTP {r.status_code}: {body}", "status", r.headers.get("retry-after")
            if attempt < self.max_retries:
                self._sleep(attempt, retry_after)
        msg = f"{self.base}{path} unavailable after {self.max_retries + 1} attempts: {last}"
        raise BackendTimeout(msg) if kind == "timeout" else BackendUnavailable(msg)

    # ---- endpoints -----------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [m["id"] for m in self.request("GET", "/models").get("data", [])]

    def completions(self, prompt: str, **params: Any) -> dict:
        """POST /completions. params: model, n, temperature, top_p, max_tokens, seed, logprobs (int k), stop, ..."""
        return self.request("POST", "/completions", {"prompt": prompt, **_clean(params)})

    def chat(self, messages: list[dict[str, str]], **params: Any) -> dict:
        """POST /chat/completions. params: model, n, temperature, top_p, max_tokens, seed, logprobs (bool),
        top_logprobs (int k), stop, ..."""
        return self.request("POST", "/chat/completions", {"messages": messages, **_clean(params)})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _clean(params: dict) -> dict:
    return {k: v for k, v in params.items() if v is not None}


@dataclass(frozen=True)
class HTTPOptions:
    """The client's `options` of every backend over an OpenAI-compatible server."""

    timeout: float = 120.0  # seconds per request
    max_retries: int = 3  # on 429/5xx and connection errors
    backoff: float = 0.5  # seconds, doubled per retry
    concurrency: int = 8  # requests in flight


def client_from_spec(spec: Any) -> OpenAIClient:
    """An OpenAIClient configured by a ModelSpec (url, api_key_env, options: `HTTPOptions`)."""
    o = options_of(HTTPOptions, spec)
    return OpenAIClient(getattr(spec, "url", None) or "", api_key_env=getattr(spec, "api_key_env", None) or "OPENAI_API_KEY",
                        timeout=float(o.timeout), max_retries=int(o.max_retries), backoff=float(o.backoff),
                        concurrency=int(o.concurrency))


def choice_text(choice: dict) -> str:
    """The text of a completions or chat choice."""
    if "message" in choice:
        return (choice["message"] or {}).get("content") or ""
    return choice.get("text") or ""
