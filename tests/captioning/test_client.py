"""CaptionClient and LLMCaptioner against a real HTTP server on 127.0.0.1 (captioning.testing)."""

import asyncio
import logging
import re
import socket
import time

import pytest

from captioning.cache import CaptionCache
from captioning.captioner import LLMCaptioner, TemplateCaptioner, format_summary
from captioning.client import CaptionClient, ClientConfig, LLMConfigError, backoff_delay
from captioning.prompt import CaptionInput, PromptConfig, prompt_version
from captioning.testing.fake_server import FakeChatServer
from captioning.validate import caption_problem


def _inp(name, desc="a dog barking loudly", tags=("dog", "bark")):
    return CaptionInput(name, tuple(tags), desc, "test")


def _cfg(srv, **kw):
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    kw.setdefault("timeout_s", 5.0)
    return ClientConfig(endpoint=srv.base_url, model="test-model", **kw)


def _run(client, inputs):
    async def go():
        try:
            return await client.caption_many(inputs)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_concurrency_bound_and_good_answers():
    with FakeChatServer(latency_s=0.05) as srv:
        client = CaptionClient(_cfg(srv, max_concurrency=3, captions_per_file=4))
        outs = _run(client, [_inp(f"f{i}.wav") for i in range(20)])
    assert 2 <= srv.log.max_in_flight <= 3 and 2 <= client.max_in_flight <= 3  # the bound is the point
    assert len(srv.log.requests) == 20 == client.counts["requests_sent"]
    for o in outs:
        assert o.reason is None and o.attempts == 1 and len(o.captions) == 4
        assert all(caption_problem(c, "f.wav") is None for c in o.captions)
    # structured output request (vLLM-compatible response_format json_schema), our retries only
    body = srv.log.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["captions"]["minItems"] == 4
    assert body["model"] == "test-model" and [m["role"] for m in body["messages"]] == ["user"]  # merged


def test_system_layout_rejected_by_template_stops_the_run():
    """Mixtral's chat template rejects a system role (vLLM: HTTP 400): the default layout works, the
    'system' layout stops with an error that names the flag instead of falling back for every file."""
    inputs = [_inp(f"m{i}.wav") for i in range(6)]
    with FakeChatServer(reject_system_role=True) as srv:
        outs = _run(CaptionClient(_cfg(srv)), inputs)  # default: merged
        assert all(o.captions for o in outs) and len(srv.log.requests) == 6
        client = CaptionClient(_cfg(srv, max_concurrency=2, prompt=PromptConfig(system_prompt="system")))
        with pytest.raises(LLMConfigError, match="--system-prompt merged") as err:
            _run(client, inputs)
    assert "roles must alternate" in str(err.value)
    rejected = [r for r in srv.log.requests if r["behaviour"] == "reject_system_role"]
    assert 1 <= len(rejected) <= 2 and len(srv.log.requests) == 6 + len(rejected)  # no retries, no more files


def test_template_400_after_success_is_a_per_file_fallback():
    """Once the endpoint has answered, a 400 for one file is that file's problem (no run-wide stop)."""
    with FakeChatServer(reject_system_role=True) as srv:
        client = CaptionClient(_cfg(srv, prompt=PromptConfig(system_prompt="system")))
        client.answered = True  # as after a first successful request
        (out,) = _run(client, [_inp("late.wav")])
    assert out.captions is None and out.reason == "http_400" and client.counts["failed_http_400"] == 1


def test_guided_json_mode():
    with FakeChatServer() as srv:
        outs = _run(
            CaptionClient(_cfg(srv, structured_output="guided_json", captions_per_file=2)), [_inp("a.wav")]
        )
    assert "response_format" not in srv.log.requests[0]["body"]
    assert srv.log.requests[0]["body"]["guided_json"]["properties"]["captions"]["maxItems"] == 2
    assert len(outs[0].captions) == 2
    with pytest.raises(ValueError, match="structured_output"):
        ClientConfig(structured_output="xml")


def test_retries_backoff_and_counts():
    script = {
        "a.wav": ["429", "500", "503", "ok"],
        "b.wav": ["malformed", "fenced"],
        "c.wav": ["invalid", "refusal", "invalid", "invalid"],
        "d.wav": ["500"] * 4,
        "e.wav": ["400"],
    }
    with FakeChatServer(script=script) as srv:
        client = CaptionClient(_cfg(srv, max_attempts=4))
        a, b, c, d, e, f = _run(
            client, [_inp(n) for n in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav")]
        )
    assert a.captions and a.attempts == 4
    assert b.captions and b.attempts == 2
    assert c.captions is None and c.reason == "invalid_captions" and not c.transient
    assert d.captions is None and d.reason == "http_500" and d.transient
    assert e.captions is None and e.reason == "http_400" and e.attempts == 1  # 4xx: not retried
    assert f.captions and f.attempts == 1
    n = client.counts
    assert srv.per_file == {"a.wav": 4, "b.wav": 2, "c.wav": 4, "d.wav": 4, "e.wav": 1, "f.wav": 1}
    assert n["requests_sent"] == 16 == len(srv.log.requests)
    assert n["retries"] == 3 + 1 + 3 + 3
    assert n["failed_rate_limited"] == 1 and n["failed_http_500"] == 5 and n["failed_http_503"] == 1
    assert n["failed_malformed_json"] == 1 and n["failed_invalid_captions"] == 4 and n["failed_http_400"] == 1
    assert n["invalid_caption_refusal"] == 3  # the refusal answer's 3 captions


def test_timeout_then_success():
    # the hang (20 s) is far past the timeout (2.5 s), and 2.5 s is ample for the "ok" retry on a busy box
    with FakeChatServer(script={"slow.wav": ["hang", "ok"]}, hang_s=20.0) as srv:
        client = CaptionClient(_cfg(srv, timeout_s=2.5))
        (out,) = _run(client, [_inp("slow.wav")])
    assert out.captions and out.attempts == 2
    assert client.counts["failed_timeout"] == 1


def test_connection_error_counted():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    cfg = ClientConfig(endpoint=f"http://127.0.0.1:{port}/v1", model="m", max_attempts=3, backoff_base_s=0.01)
    client = CaptionClient(cfg)
    (out,) = _run(client, [_inp("x.wav")])
    assert out.captions is None and out.reason == "connection_error" and out.transient
    assert client.counts["failed_connection_error"] == 3 and client.counts["retries"] == 2


def test_auth_error_aborts_and_key_never_shown(monkeypatch, caplog):
    monkeypatch.setenv("FLAM_LLM_API_KEY", "sk-very-secret-123")
    caplog.set_level(logging.DEBUG)
    with FakeChatServer(script={"x.wav": ["401"]}) as srv:
        client = CaptionClient(_cfg(srv))
        with pytest.raises(LLMConfigError, match="HTTP 401") as err:
            _run(client, [_inp("x.wav")])
    assert srv.log.requests[0]["auth"] == "Bearer sk-very-secret-123"  # sent to the server ...
    assert "sk-very-secret" not in str(err.value) + repr(client) + caplog.text  # ... and nowhere else


def test_backoff_grows_with_jitter():
    import random

    rng = random.Random(0)
    d = [backoff_delay(k, 0.5, 30.0, rng) for k in (1, 2, 3, 4, 10)]
    assert 0.25 <= d[0] <= 0.5 and 0.5 <= d[1] <= 1.0 and 1.0 <= d[2] <= 2.0 and 2.0 <= d[3] <= 4.0
    assert 15.0 <= d[4] <= 30.0


def _captioner_run(captioner, inputs):
    async def go():
        try:
            return await captioner.caption_inputs(inputs)
        finally:
            await captioner.aclose()

    return asyncio.run(go())


def test_llm_captioner_cache_fallback_and_summary(tmp_path):
    inputs = [_inp(f"ok{i}.wav") for i in range(5)] + [
        _inp("bad.wav", "glass breaking on a floor", ("glass", "break")),
        _inp("down.wav", "", ("engine", "idle")),
    ]
    script = {"bad.wav": ["invalid"] * 3, "down.wav": ["500"] * 3}
    with FakeChatServer(script=script) as srv:
        cap = LLMCaptioner(_cfg(srv, max_attempts=3), cache=CaptionCache(tmp_path / "cache"))
        res = _captioner_run(cap, inputs)
        cap.cache.close()
        first = len(srv.log.requests)
        assert first == 5 + 3 + 3
        assert [r.caption_source for r in res] == ["llm"] * 5 + ["fallback"] * 2
        assert res[5].reason == "invalid_captions" and res[6].reason == "http_500"
        assert all(r.captions and r.prompt_version == prompt_version() for r in res)
        assert all(
            caption_problem(c, r_in.filename) is None
            for r, r_in in zip(res, inputs, strict=True)
            for c in r.captions
        )
        c = cap.all_counts()
        assert (c["files_llm"], c["files_fallback"], c["files_total"]) == (5, 2, 7)
        assert c["fallback_reason_invalid_captions"] == 1 and c["fallback_reason_http_500"] == 1
        text = format_summary(c)
        assert "files_fallback" in text and "http_500" in text and "failed_requests             6" in text

        # re-run: cached answers and the cached invalid verdict send nothing; the transport failure is retried
        cap2 = LLMCaptioner(_cfg(srv, max_attempts=3), cache=CaptionCache(tmp_path / "cache"))
        res2 = _captioner_run(cap2, inputs)
        assert len(srv.log.requests) - first == 1 and srv.per_file["down.wav"] == 4
        c2 = cap2.all_counts()
        assert c2["files_cache"] == 5 and c2["files_cache_fallback"] == 1 and c2["files_llm"] == 1
        assert [r.captions for r in res2[:5]] == [r.captions for r in res[:5]]
        assert res2[6].caption_source == "llm"

        # another model or prompt inputs -> other keys
        cap3 = LLMCaptioner(
            ClientConfig(endpoint=srv.base_url, model="other"), cache=CaptionCache(tmp_path / "cache")
        )
        _captioner_run(cap3, inputs[:1])
        assert srv.per_file["ok0.wav"] == 2


def test_template_captioner_labels():
    t = TemplateCaptioner(captions_per_file=2)
    (r,) = t.caption_inputs([_inp("a.wav")])
    assert (
        r.caption_source == "template" and r.caption_model is None and r.prompt_version.startswith("template")
    )
    assert r.columns()["captions"] == r.captions and 1 <= len(r.captions) <= 2


# ---- a misbehaving server: every bad reply is a counted retry, then a counted fallback, never an exception

NOT_A_COMPLETION = {  # behaviour -> the malformed_reply_<why> counter it must raise
    "not_json": "not_json",
    "html": "not_json",
    "no_choices": "no_choices",
    "bad_types": "content_type",
    "deep_body": "too_deep",
    "huge": "too_large",
}


def test_http_200_bodies_that_are_not_completions_are_retried_then_fail_softly():
    script = {f"{b}.wav": [b, b] for b in NOT_A_COMPLETION}
    script["late.wav"] = ["html", "ok"]  # one bad reply, then a good one: kept
    names = [*script, "fine.wav"]
    with FakeChatServer(script=script) as srv:
        client = CaptionClient(_cfg(srv, max_attempts=2))
        outs = dict(zip(names, _run(client, [_inp(n) for n in names]), strict=True))
    for b in NOT_A_COMPLETION:
        o = outs[f"{b}.wav"]
        assert o.captions is None and o.reason == "malformed_reply" and o.transient and o.attempts == 2, b
    assert outs["late.wav"].captions and outs["late.wav"].attempts == 2
    assert outs["fine.wav"].captions and outs["fine.wav"].attempts == 1
    n = client.counts
    assert n["failed_malformed_reply"] == 2 * len(NOT_A_COMPLETION) + 1
    assert n["retries"] == len(NOT_A_COMPLETION) + 1 and n["requests_sent"] == len(srv.log.requests)
    for why in set(NOT_A_COMPLETION.values()):
        expected = 2 * sum(1 for v in NOT_A_COMPLETION.values() if v == why) + (why == "not_json")
        assert n[f"malformed_reply_{why}"] == expected, why


def test_bad_answers_inside_a_completion_and_broken_connections_fail_softly():
    script = {
        "deep.wav": ["deep_caption", "deep_caption"],  # the answer is "[" * 5000
        "err.wav": ["500_deep", "500_deep"],  # an error body nested 5000 deep
        "gone.wav": ["close", "ok"],  # connection closed without an answer, then fine
    }
    with FakeChatServer(script=script) as srv:
        client = CaptionClient(_cfg(srv, max_attempts=2))
        deep, err, gone = _run(client, [_inp(n) for n in script])
    assert deep.captions is None and deep.reason == "malformed_json" and not deep.transient
    assert err.captions is None and err.reason == "http_500" and err.transient
    assert gone.captions and gone.attempts == 2 and client.counts["failed_connection_error"] == 1


def test_malformed_replies_become_counted_fallbacks_and_transport_ones_are_not_cached(tmp_path):
    inputs = [_inp("html.wav"), _inp("deep.wav"), _inp("ok.wav")]
    script = {"html.wav": ["html"] * 2, "deep.wav": ["deep_caption"] * 2}
    with FakeChatServer(script=script) as srv:
        cap = LLMCaptioner(_cfg(srv, max_attempts=2), cache=CaptionCache(tmp_path / "c"))
        res = _captioner_run(cap, inputs)
        cap.cache.close()
        assert [r.caption_source for r in res] == ["fallback", "fallback", "llm"]
        assert all(r.captions for r in res)
        c = cap.all_counts()
        assert c["fallback_reason_malformed_reply"] == 1 and c["fallback_reason_malformed_json"] == 1
        # re-run: the proxy page (transport) is asked again and now answered; the bad answer is cached
        cap2 = LLMCaptioner(_cfg(srv, max_attempts=2), cache=CaptionCache(tmp_path / "c"))
        res2 = _captioner_run(cap2, inputs)
    assert [r.caption_source for r in res2] == ["llm", "fallback", "llm"]
    assert srv.per_file == {"html.wav": 3, "deep.wav": 2, "ok.wav": 1}


def test_timeout_is_a_wall_clock_limit_per_request():
    """A server trickling a valid answer one byte per 0.1 s (~30 s in all; the gap between bytes is far
    below the timeout) and one trickling forever: each request ends at ~timeout_s."""
    timeout, slack = 1.0, 1.5
    with FakeChatServer(script={"t.wav": ["trickle", "trickle_forever"]}, trickle_s=0.1, hang_s=60) as srv:
        client = CaptionClient(_cfg(srv, timeout_s=timeout, max_attempts=2))
        t0 = time.monotonic()
        (out,) = _run(client, [_inp("t.wav")])
        took = time.monotonic() - t0
        deadline = time.time() + 5  # the server notices the closed connection at its next write
        while not all("t_end" in r for r in srv.log.requests) and time.time() < deadline:
            time.sleep(0.05)
    assert out.captions is None and out.reason == "timeout" and client.counts["failed_timeout"] == 2
    assert took < 2 * timeout + slack, took
    for r in srv.log.requests:  # the connection was closed: the server stopped sending, too
        assert not r["completed"] and r["t_end"] - r["t_start"] < timeout + slack


def test_unsafe_replies_are_rejected_whole_then_fall_back():
    script = {
        "ctl.wav": ["control"] * 2,  # control, bidi-override and zero-width characters
        "inj.wav": ["injection"] * 2,  # instructions and a shell command
        "once.wav": ["injection", "ok"],
    }
    with FakeChatServer(script=script) as srv:
        # 5 captions asked: each unsafe reply also holds 2 valid captions, and is still rejected whole
        client = CaptionClient(_cfg(srv, max_attempts=2, captions_per_file=5))
        ctl, inj, once = _run(client, [_inp(n) for n in script])
    for o in (ctl, inj):
        assert o.captions is None and o.reason == "unsafe_reply" and not o.transient
    assert once.captions and once.attempts == 2
    n = client.counts
    assert n["failed_unsafe_reply"] == 5
    assert n["invalid_caption_control_chars"] == 2 and n["invalid_caption_bidi_control"] == 2
    assert n["invalid_caption_zero_width"] == 2
    assert n["invalid_caption_instruction_like"] == 3 * 2 and n["invalid_caption_command_like"] == 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout_s", -1.0, "timeout_s must be a finite number > 0"),
        ("timeout_s", float("inf"), "timeout_s must be a finite number > 0"),
        ("temperature", -7.0, "temperature must be a number in [0, 2]"),
        ("temperature", float("nan"), "temperature must be a number in [0, 2]"),
        ("endpoint", "notaurl", "endpoint must be an http(s) URL"),
        ("endpoint", "ftp://host/v1", "endpoint must be an http(s) URL"),
        ("endpoint", "http://host:99999/v1", "endpoint must be an http(s) URL"),
        ("model", " ", "model must be a non-empty"),
        ("max_attempts", 0, "max_attempts must be an integer >= 1"),
    ],
)
def test_client_config_rejects_invalid_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ClientConfig(**{field: value})


def test_endpoint_error_never_shows_credentials():
    with pytest.raises(ValueError) as err:
        ClientConfig(endpoint="notaurl://user:sk-secret-1@host")
    assert "sk-secret-1" not in str(err.value)


def test_any_other_library_error_on_a_reply_is_counted_and_retried(monkeypatch, caplog):
    """The safety net: an error no rule above names (here a TypeError from reading the body) is counted as
    unexpected_error, logged with its type, retried, and never raised out of the client."""
    with FakeChatServer() as srv:
        client = CaptionClient(_cfg(srv, max_attempts=2))
        real = client._read_body
        calls = []

        async def flaky(messages, n):
            calls.append(1)
            if len(calls) == 1:
                raise TypeError("a library bug on an odd body")
            return await real(messages, n)

        monkeypatch.setattr(client, "_read_body", flaky)
        (out,) = _run(client, [_inp("x.wav")])
    assert out.captions and out.attempts == 2 and client.counts["failed_unexpected_error"] == 1
    assert "TypeError" in caplog.text
