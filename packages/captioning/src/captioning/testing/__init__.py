"""Test harnesses for the captioning package — NOT used by the pipeline or the client.

`captioning.testing.fake_server.FakeChatServer` is a scripted OpenAI-compatible chat-completions server on
127.0.0.1 for the test suite and `benchmarks/caption_client.py`. It ships in the wheel only so that the
benchmark and downstream tests can import it; nothing in the production path imports this subpackage.
"""
