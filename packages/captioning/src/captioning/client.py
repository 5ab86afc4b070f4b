"""Async client for an OpenAI-compatible chat-completions endpoint (`vllm serve`), built on `openai.AsyncOpenAI`.

Bounded concurrency (one semaphore around each HTTP request), a wall-clock limit per request (connect, wait
and the whole body: a server trickling bytes cannot hold a request longer than `timeout_s`), a cap on the
body size, and our own retry loop (the openai client's retries are disabled so every attempt is counted
here): exponential backoff with jitter on 429 / 5xx / timeouts / connection errors / malformed HTTP 200
replies (honouring Retry-After), immediate re-asks when the answer holds no valid caption. A reply holding
an instruction, a command or hidden characters is rejected whole (`captioning.validate.UNSAFE_PROBLEMS`).
Nothing a server sends raises out of `caption()`: every failure is a counted reason and, after the last
attempt, a fallback. Configuration errors (401/403/404) abort: every request would fail; so does an HTTP 400
about the chat template / message roles before any request succeeded (e.g. Mixtral's template rejects a
`system` message): it names the --system-prompt flag instead of falling back per file.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import openai

from captioning.parse import CaptionParseError, MalformedReplyError, completion_content, parse_captions
from captioning.prompt import CaptionInput, PromptConfig, build_messages, caption_json_schema
from captioning.validate import UNSAFE_PROBLEMS, ValidationConfig, select_valid

log = logging.getLogger(__name__)

API_KEY_ENV_VARS = ("FLAM_LLM_API_KEY", "OPENAI_API_KEY")
STRUCTURED_MODES = ("response_format", "guided_json", "none")
# What vLLM says when the chat template rejects the messages (jinja raise_exception in the template).
_TEMPLATE_ERROR = re.compile(
    r"chat[ _-]?template|roles? must alternate|conversation roles|system role|role[^.]{0,40}not supported",
    re.I,
)


class LLMConfigError(RuntimeError):
    """The endpoint rejects us for a reason no retry fixes (bad key, unknown model or URL)."""


class ReplyTooLargeError(ValueError):
    """The HTTP body is larger than `ClientConfig.max_response_bytes`."""


def api_key_from_env(names: tuple[str, ...] = API_KEY_ENV_VARS) -> str | None:
    """The first non-empty API key among the environment variables `names` (never logged)."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


@dataclass(frozen=True)
class ClientConfig:
    """How to reach and query the captioning LLM (paper §4.1 uses Mixtral-8x7B-Instruct)."""

    endpoint: str = "http://127.0.0.1:8000/v1"
    model: str = "mistralai/Mixtral-8x7B-Instruct-v0.1"
    captions_per_file: int = 3
    max_concurrency: int = 16
    timeout_s: float = 60.0  # wall-clock limit of one request: connect, wait and the whole body
    max_attempts: int = 4  # requests per file, transport failures and bad answers together
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    temperature: float = 0.7
    max_tokens: int = 512
    max_response_bytes: int = 1 << 20  # a reply of N short captions is ~1 KB; larger bodies are malformed
    structured_output: str = "response_format"  # response_format | guided_json | none
    min_valid_captions: int = 1
    prompt: PromptConfig = field(default_factory=PromptConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self) -> None:
        problem = config_problem(self)
        if problem is not None:
            raise ValueError(problem)


def endpoint_problem(url: str) -> str | None:
    """Why `url` is not an http(s) base URL with a host, or None."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(str(url))
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        return f"endpoint must be an http(s) URL, got {redact_url_text(url)!r} ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"endpoint must be an http(s) URL such as http://HOST:8000/v1, got {redact_url_text(url)!r}"
    return None


def config_problem(cfg: ClientConfig) -> str | None:
    """The first invalid field of a ClientConfig as '<field> must be …, got …', or None (one rule for the
    library and the CLI, which names the flag)."""
    if cfg.structured_output not in STRUCTURED_MODES:
        return f"structured_output must be one of {STRUCTURED_MODES}, got {cfg.structured_output!r}"
    for name in ("captions_per_file", "max_concurrency", "max_attempts", "max_tokens", "min_valid_captions"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{name} must be an integer >= 1, got {value!r}"
    if cfg.max_response_bytes < 1024:
        return f"max_response_bytes must be >= 1024, got {cfg.max_response_bytes!r}"
    for name in ("timeout_s", "backoff_base_s", "backoff_max_s"):
        value = getattr(cfg, name)
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            return f"{name} must be a finite number > 0, got {value!r}"
    t = cfg.temperature
    if not isinstance(t, int | float) or not math.isfinite(t) or not 0.0 <= t <= 2.0:
        return f"temperature must be a number in [0, 2] (the OpenAI API's range), got {t!r}"
    if not str(cfg.model).strip():
        return "model must be a non-empty model name"
    return endpoint_problem(cfg.endpoint)


@dataclass
class LLMOutcome:
    """Result of asking the LLM about one file."""

    captions: list[str] | None  # valid captions, or None when every attempt failed
    reason: str | None = None  # why it failed (last failure kind)
    transient: bool = False  # True when the failure was transport-level (not worth caching)
    attempts: int = 0


def redact_url_text(url: str) -> str:
    """`url` with anything between '://' and '@' replaced, for messages about URLs that may not parse."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", str(url))


def redact_url(url: str) -> str:
    """The URL without any user:password@ part (safe to log or write)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': d = min(max, base·2^(attempt-1)); sleep U(d/2, d)."""
    d = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return d / 2 + rng.uniform(0, d / 2)


def _retry_after_s(exc: openai.APIStatusError) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _error_text(exc: openai.APIStatusError) -> str:
    """The server's error message (vLLM: {"error": {"message": ...}} or {"message": ...})."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
        if msg:
            return str(msg)
    return str(exc.message)


class CaptionClient:
    """Ask the LLM for N captions per file; counts every request and failure in `self.counts`."""

    def __init__(self, cfg: ClientConfig, api_key: str | None = None, seed: int | None = None) -> None:
        self.cfg = cfg
        key = api_key if api_key is not None else api_key_from_env()
        # vLLM without --api-key accepts any token; the placeholder is not a secret.
        self._client = openai.AsyncOpenAI(
            base_url=cfg.endpoint, api_key=key or "EMPTY", timeout=cfg.timeout_s, max_retries=0
        )
        self._sem: asyncio.Semaphore | None = None
        self._rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered = False  # set once the endpoint answered a request with HTTP 200
        self.fatal: str | None = None  # set by a configuration error: no further request is sent

    def __repr__(self) -> str:  # never show the key
        return f"CaptionClient(endpoint={redact_url(self.cfg.endpoint)!r}, model={self.cfg.model!r})"

    def _template_error_message(self, exc: openai.APIStatusError) -> str:
        layout = self.cfg.prompt.system_prompt
        hint = (
            "this model's chat template does not accept a system message: run with --system-prompt merged "
            "(the default: instructions at the top of the single user turn)"
            if layout == "system"
            else "check the served model's chat template; --system-prompt merged|system selects the layout "
            f"(now {layout!r})"
        )
        return (
            f"endpoint {redact_url(self.cfg.endpoint)} rejected the chat messages for model {self.cfg.model!r} "
            f"(HTTP 400: {_error_text(exc)[:200]}): {hint}"
        )

    def _request_kwargs(self, n: int) -> dict:
        schema = caption_json_schema(n)
        kw: dict = {}
        if self.cfg.structured_output == "response_format":
            kw["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "captions", "schema": schema, "strict": True},
            }
        elif self.cfg.structured_output == "guided_json":
            kw["extra_body"] = {"guided_json": schema}
        return kw

    async def _read_body(self, messages: list[dict], n: int) -> bytes:
        """POST one chat completion and read its body (at most max_response_bytes) without parsing it."""
        limit = self.cfg.max_response_bytes
        async with self._client.chat.completions.with_streaming_response.create(
            model=self.cfg.model,
            messages=messages,
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
            **self._request_kwargs(n),
        ) as resp:
            chunks, size = [], 0
            async for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ReplyTooLargeError(f"reply body over {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

    async def _request(self, messages: list[dict], n: int) -> str | None:
        """One request under the semaphore and the wall-clock limit; the answer text (None: empty).

        Raises openai errors (HTTP status, connection), TimeoutError (the wall-clock limit),
        MalformedReplyError / ReplyTooLargeError (an HTTP 200 body that is not a chat completion)."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.cfg.max_concurrency)
        async with self._sem:
            if self.fatal is not None:  # another file hit a configuration error while this one waited
                raise LLMConfigError(self.fatal)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.counts["requests_sent"] += 1
            try:
                async with asyncio.timeout(
                    self.cfg.timeout_s
                ):  # the whole request, not the gap between bytes
                    body = await self._read_body(messages, n)
            finally:
                self.in_flight -= 1
        content = completion_content(body)
        self.answered = True  # the endpoint answered with a chat completion: the URL and model work
        return content

    async def caption(self, inp: CaptionInput) -> LLMOutcome:
        """Up to `max_attempts` requests for one file; returns valid captions or the failure reason."""
        n = self.cfg.captions_per_file
        messages = build_messages(inp, n, self.cfg.prompt)
        reason, transient = None, False
        for attempt in range(1, self.cfg.max_attempts + 1):
            if attempt > 1:
                self.counts["retries"] += 1
            delay = None
            try:
                content = await self._request(messages, n)
            except openai.RateLimitError as exc:
                reason, transient = "rate_limited", True
                delay = _retry_after_s(exc)
            except (openai.APITimeoutError, TimeoutError):
                reason, transient = "timeout", True
            except (MalformedReplyError, ReplyTooLargeError) as exc:
                # an HTTP 200 that is not a chat completion: a proxy's page, a broken server; a transport
                # failure (retried with backoff, not cached: a re-run asks again)
                reason, transient = "malformed_reply", True
                self.counts[f"malformed_reply_{getattr(exc, 'reason', 'too_large')}"] += 1
            except openai.APIConnectionError:
                reason, transient = "connection_error", True
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in (401, 403, 404):
                    self.counts[f"failed_http_{status}"] += 1
                    self.fatal = (
                        f"endpoint {redact_url(self.cfg.endpoint)} answered HTTP {status} for model {self.cfg.model!r}: "
                        "check --endpoint, --model and the API key variable"
                    )
                    raise LLMConfigError(self.fatal) from None
                if status == 400 and not self.answered and _TEMPLATE_ERROR.search(_error_text(exc)):
                    self.counts["failed_http_400"] += 1
                    self.fatal = self._template_error_message(exc)
                    raise LLMConfigError(self.fatal) from None
                if status >= 500 or status == 408:
                    reason, transient = f"http_{status}", True
                else:  # other 4xx: this request itself is rejected; do not hammer
                    self.counts[f"failed_http_{status}"] += 1
                    return LLMOutcome(None, f"http_{status}", transient=False, attempts=attempt)
            except openai.OpenAIError as exc:  # any other library error on a reply: counted, retried
                reason, transient = "unexpected_error", True
                log.warning("caption request: %s: %s", type(exc).__name__, str(exc)[:200])
            except (ValueError, TypeError, AttributeError, KeyError, RecursionError, UnicodeError) as exc:
                # what a library may raise on a body it cannot handle (e.g. JSON nested too deep in an error
                # body): counted and retried, never out of the client
                reason, transient = "unexpected_error", True
                log.warning("caption request: %s: %s", type(exc).__name__, str(exc)[:200])
            else:
                try:
                    raw = parse_captions(content)
                except CaptionParseError:
                    reason, transient = "malformed_json", False
                else:
                    valid, problems = select_valid(raw, inp.filename, n, self.cfg.validation)
                    for why, k in problems.items():
                        self.counts[f"invalid_caption_{why}"] += k
                    if UNSAFE_PROBLEMS & problems.keys():  # an injection or a broken model: drop it whole
                        reason, transient = "unsafe_reply", False
                    elif len(valid) >= self.cfg.min_valid_captions:
                        return LLMOutcome(valid, None, attempts=attempt)
                    else:
                        reason, transient = "invalid_captions", False
            self.counts[f"failed_{reason}"] += 1
            if attempt < self.cfg.max_attempts and transient:
                if delay is None:
                    delay = backoff_delay(attempt, self.cfg.backoff_base_s, self.cfg.backoff_max_s, self._rng)
                await asyncio.sleep(min(delay, self.cfg.backoff_max_s))
        return LLMOutcome(None, reason, transient=transient, attempts=self.cfg.max_attempts)

    async def caption_many(self, inputs: list[CaptionInput]) -> list[LLMOutcome]:
        """Caption many files concurrently (the semaphore bounds requests in flight); on an error (e.g.
        LLMConfigError) the remaining files are cancelled before it is re-raised."""
        tasks = [asyncio.ensure_future(self.caption(i)) for i in inputs]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def aclose(self) -> None:
        await self._client.close()
