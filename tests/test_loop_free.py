"""No generation step runs on the event loop: every forward pass of a torch module and every call into natty's own
samplers happens in a thread without a running loop (or in the worker process).

`ticks > 0` style checks only show that the loop ran *at some point* during a job; a model that stepped on the
loop between ticks would pass them. Here every step is watched where it runs: a global forward pre-hook sees each
torch module call (natty's RNN, PixelCNN and WaveNet, transformers pipelines), and the own models' `generate`
entry points (WaveNet's compiled step is not a torch module) are wrapped. Each call records whether its thread is
running an event loop. The control test proves the watch catches a step that does run on the loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from models.backends.pipelines import PipelinesBackend  # noqa: E402
from models.base import Request, RunContext  # noqa: E402
from models.catalog import ModelEntry, load_catalog  # noqa: E402
from models.own import OwnModelsBackend, charrnn, gpt, pixelcnn, wavenet  # noqa: E402
from tests import tiny_pipelines as tiny  # noqa: E402


class Watch:
    """Where each generation step ran: (what, on the loop?)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, bool]] = []

    def saw(self, what: str) -> None:
        self.steps.append((what, asyncio._get_running_loop() is not None))

    @property
    def on_loop(self) -> list[str]:
        return sorted({what for what, on_loop in self.steps if on_loop})


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    w = Watch()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: w.saw(type(module).__name__))
    for cls in (charrnn.CharRNN, gpt.GPT, pixelcnn.PixelCNN, wavenet.WaveNet):
        for name in ("generate", "generate_naive"):
            original = getattr(cls, name)

            def wrapped(self, *a, _original=original, _what=f"{cls.__name__}.{name}", **kw):
                w.saw(_what)
                return _original(self, *a, **kw)

            monkeypatch.setattr(cls, name, functools.wraps(original)(wrapped))
    try:
        yield w
    finally:
        handle.remove()


def test_the_watch_catches_a_step_on_the_loop(watch: Watch) -> None:
    model = charrnn.CharRNN(charrnn.CharRNNConfig(chars="ab ", n_embd=8, n_hidden=8, n_layer=1))

    async def bad() -> None:  # what a careless backend would do: generate inside a coroutine
        model.generate("a", 3, seed=0)

    asyncio.run(bad())
    assert "CharRNN.generate" in watch.on_loop and any(what == "LSTM" for what, _ in watch.steps)


async def test_natty_own_models_never_step_on_the_loop(watch: Watch) -> None:
    backend = OwnModelsBackend()
    catalog = load_catalog()
    try:
        for name in ("natty-rnn", "natty-gpt"):
            await backend.run(catalog.get(name), Request(task="chat", prompt="The sea", seed=1,
                                                         params={"max_new_tokens": 16}), RunContext())
        await backend.run(catalog.get("natty-pixelcnn"), Request(task="text-to-image", prompt="3", seed=1,
                                                                 params={"size": 8}), RunContext())
        await backend.run(catalog.get("natty-wavenet"), Request(task="text-to-audio", prompt="a C note", seed=1,
                                                                params={"seconds": 0.1}), RunContext())
    finally:
        await backend.aclose()
    ran = {what for what, _ in watch.steps}
    assert {"CharRNN.generate", "GPT.generate", "PixelCNN.generate", "WaveNet.generate"} <= ran  # each model stepped
    assert watch.on_loop == []


async def test_transformers_pipelines_never_step_on_the_loop(watch: Watch, tmp_path: Path) -> None:
    folder = tiny.build_tiny_gpt2(tmp_path / "gpt2")
    backend = PipelinesBackend(cache_dir=str(tmp_path / "hf-cache"), endpoint="http://127.0.0.1:9")
    entry = ModelEntry(name="tiny-chat", task="chat", backend="local", model=folder)
    try:
        requests = [Request(task="chat", prompt=p, params={"max_new_tokens": 6, "temperature": 0})
                    for p in ("hello", "the sea at night")]
        await asyncio.gather(*(backend.run(entry, r, RunContext()) for r in requests))  # batched decode steps
    finally:
        await backend.aclose()
    assert any(what == "GPT2LMHeadModel" for what, _ in watch.steps)
    assert watch.on_loop == []
