"""The char-RNN: causal, stateful sampling equal to re-running the prefix, learning, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.own import load_checkpoint, save_checkpoint  # noqa: E402
from models.own.charrnn import CharRNN, CharRNNConfig, sample_logits  # noqa: E402

CHARS = "\n abcdefghijklmnopqrstuvwxyz.,"


def tiny(seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(CharRNNConfig(chars=CHARS, n_embd=16, n_hidden=32, n_layer=2, dropout=0.0)).eval()


def test_changing_position_t_never_changes_earlier_logits():
    model = tiny().double()
    x = torch.randint(0, len(CHARS), (1, 24))
    with torch.no_grad():
        base = model(x)[0]
        for t in range(x.shape[1]):
            y = x.clone()
            y[0, t] = (y[0, t] + 1) % len(CHARS)
            out = model(y)[0]
            torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)
            assert not torch.equal(out[:, t], base[:, t])


def test_stateful_generation_equals_rerunning_the_prefix():
    model = tiny().double()
    for seed in (0, 1, 2):
        fast = model.generate("the cat", 60, temperature=0.9, top_k=8, seed=seed)
        naive = model.generate_naive("the cat", 60, temperature=0.9, top_k=8, seed=seed)
        assert fast == naive and len(fast) == 60
    assert model.generate("", 10, seed=0) == model.generate_naive("", 10, seed=0)


def test_callback_streams_text_and_stops():
    model = tiny()
    seen: list[str] = []
    text = model.generate("a", 50, seed=0, callback=lambda s: seen.append(s) or len(s) >= 5)
    assert len(text) == 5 and seen[-1] == text and [len(s) for s in seen] == [1, 2, 3, 4, 5]


def test_sampling_temperature_and_top_k():
    rng = np.random.default_rng(0)
    logits = np.array([[0.0, 3.0, 1.0, 2.0]])
    assert {int(sample_logits(logits, rng, 1.0, top_k=1)[0]) for _ in range(20)} == {1}
    assert {int(sample_logits(logits, rng, 1.0, top_k=2)[0]) for _ in range(200)} == {1, 3}
    assert int(sample_logits(logits, rng, 0.0)[0]) == 1


def test_loss_falls_on_a_tiny_run():
    torch.manual_seed(0)
    model = tiny().train()
    text = "the quick brown fox jumps over the lazy dog. " * 20
    ids = torch.tensor([model.stoi[c] for c in text])[:801]
    x, y = ids[:-1].view(4, -1), ids[1:].view(4, -1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = model(x, y)[1]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_checkpoint_round_trip(tmp_path):
    model = tiny(3)
    save_checkpoint(model, tmp_path, {"step": 7})
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["natty_model"] == "charrnn" and meta["step"] == 7 and loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert loaded.generate("hello", 30, seed=5) == model.generate("hello", 30, seed=5)
