"""Shared fixtures. The end-to-end harness lives in tests/harness.py."""

import pytest


@pytest.fixture(autouse=True)
def _no_real_keys(monkeypatch):
    """Tests never see a developer's real keys, and never rely on them."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "DISCORD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
