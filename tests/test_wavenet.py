"""WaveNet: causality and receptive field, Fast WaveNet equal to naive generation, mu-law, learning, checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.own import load_checkpoint, save_checkpoint  # noqa: E402
from models.own.wavenet import WaveNet, WaveNetConfig, mu_law_decode, mu_law_encode  # noqa: E402


def tiny(seed: int = 0, **kw) -> WaveNet:
    torch.manual_seed(seed)
    cfg = WaveNetConfig(n_classes=32, n_residual=8, n_dilation=8, n_skip=16, n_blocks=2, n_layers=3, **kw)
    return WaveNet(cfg).eval()


def test_changing_sample_t_never_changes_earlier_logits_and_respects_the_receptive_field():
    model = tiny().double()
    rf = model.config.receptive_field
    assert rf == 1 + 2 * (1 + 2 + 4)
    T = 40
    x = torch.randint(0, 32, (1, T))
    with torch.no_grad():
        base = model(x)[0]
        for t in range(T):
            y = x.clone()
            y[0, t] = (y[0, t] + 1) % 32
            out = model(y)[0]
            assert torch.equal(out[:, :t], base[:, :t]), f"sample {t} leaks into earlier logits"
            assert torch.equal(out[:, t + rf :], base[:, t + rf :]), "output sees past its receptive field"
            assert not torch.equal(out[:, t + rf - 1], base[:, t + rf - 1]) if t + rf - 1 < T else True


def _local(n: int, n_local: int, seed: int = 5) -> np.ndarray | None:
    """Made-up per-sample features (a slow square wave and noise), or None for an unconditioned model."""
    if not n_local:
        return None
    rng = np.random.default_rng(seed)
    return np.where((np.arange(n) // 17) % 2 == 0, 1.0, -1.0)[:, None] * rng.normal(size=(1, n_local))


@pytest.mark.parametrize("engine", ["numba", "numpy"])
@pytest.mark.parametrize(("n_global", "n_local"), [(0, 0), (3, 0), (0, 4), (3, 4)])
def test_fast_generation_equals_naive_generation(n_global, n_local, engine):
    model = tiny(n_global=n_global, n_local=n_local).double()
    g = 2 if n_global else None
    prime = np.array([[16, 20, 25, 20, 16, 11, 7]])
    local = _local(prime.shape[1] + 120, n_local)
    for seed in (0, 1):
        logits: list[np.ndarray] = []
        fast = model.generate(120, g=g, seed=seed, prime=prime, logits_out=logits, engine=engine, local=local)
        naive = model.generate_naive(120, g=g, seed=seed, prime=prime, local=local)
        assert np.array_equal(fast, naive)
    # the fast path's logits are the network's, run over the whole sequence at once
    seq = torch.as_tensor(np.concatenate([prime, fast], axis=1))
    lt = None if local is None else torch.as_tensor(local[None, 1:])
    with torch.no_grad():
        ref = model(seq[:, :-1], g=None if g is None else torch.tensor([g]), local=lt)[0][0, prime.shape[1] - 1 :]
    np.testing.assert_allclose(np.stack(logits)[:, 0], ref.numpy(), rtol=0, atol=1e-9)


def test_local_conditioning_reaches_the_output_causally():
    """Changing the features of sample t changes the output that predicts it and later ones, never earlier ones;
    an unconditioned model of the same size ignores them."""
    model = tiny(4, n_local=3).double()
    x = torch.randint(0, 32, (1, 40))
    local = torch.as_tensor(_local(40, 3))[None]
    with torch.no_grad():
        base = model(x, local=local)[0]
        changed = local.clone()
        changed[0, 20] += 1.0
        out = model(x, local=changed)[0]
        assert torch.equal(out[:, :20], base[:, :20]) and not torch.equal(out[:, 20], base[:, 20])
        plain = tiny(4)
        assert torch.equal(plain.double()(x, local=changed)[0], plain(x)[0])
    with pytest.raises(ValueError, match="local"):
        model.generate(5)


def test_fast_generation_in_float32_batch_and_callback():
    model = tiny(1, n_global=2)
    ticks: list[int] = []
    out = model.generate(50, batch=3, g=[0, 1, 1], seed=0, callback=lambda n, s: ticks.append(n), every=10)
    assert out.shape == (3, 50) and ticks == [10, 20, 30, 40, 50]
    assert np.array_equal(out, model.generate_naive(50, batch=3, g=[0, 1, 1], seed=0))
    stopped = model.generate(50, seed=0, callback=lambda n, s: n >= 20, every=10)
    assert stopped.shape == (1, 20)


@pytest.mark.parametrize("n_local", [0, 3])
@pytest.mark.parametrize("batch", [1, 4])
def test_numba_step_draws_the_naive_samples_in_float32(batch, n_local):
    """The compiled step (all layers, head and sampling in one loop) against the per-sample forward pass."""
    pytest.importorskip("numba")  # the `local` extra installs it; without it generate runs the NumPy step
    model = tiny(3, n_global=2, n_local=n_local)
    g = [i % 2 for i in range(batch)]
    prime = np.array([[16, 20, 25, 20, 16, 11, 7]])
    local = _local(prime.shape[1] + 80, n_local)
    if local is not None and batch > 1:  # each stream its own features
        local = np.stack([local * (1 + b) for b in range(batch)])
    kw = {"batch": batch, "g": g, "prime": prime, "local": local}
    for seed, temperature in ((0, 1.0), (1, 0.7), (2, 0.0)):
        naive = model.generate_naive(80, seed=seed, temperature=temperature, **kw)
        jit = model.generate(80, seed=seed, temperature=temperature, engine="numba", **kw)
        assert np.array_equal(jit, naive), (seed, temperature)
        numpy = model.generate(80, seed=seed, temperature=temperature, engine="numpy", **kw)
        assert np.array_equal(numpy, naive), (seed, temperature)
    # chunks between callbacks continue the same queues, the same features and the same generator
    ticks: list[int] = []
    chunked = model.generate(80, seed=0, engine="numba", every=30, callback=lambda n, s: ticks.append(n), **kw)
    assert ticks == [30, 60] and np.array_equal(chunked, model.generate_naive(80, seed=0, **kw))
    stopped = model.generate(80, seed=0, engine="numba", every=10, callback=lambda n, s: n >= 20, **kw)
    assert np.array_equal(stopped, chunked[:, :20])


def test_engine_is_checked_and_numba_is_imported_only_by_generation():
    with pytest.raises(ValueError, match="engine"):
        tiny().generate(5, engine="cuda")
    code = "import sys, models.own, models.own.wavenet; print('numba' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # bot start-up (which may import models.own) never pays for numba


def test_numba_step_compiles_without_a_cache_when_nowhere_is_writable():
    """numba finds no cache location for a read-only install with a read-only home, nor for code without a file."""
    pytest.importorskip("numba")
    from models.own import wavenet_jit

    scope: dict = {}
    exec("def add_one(x):\n    return x + 1\n", scope)  # "<string>": no file, so nowhere to cache it either
    with pytest.warns(RuntimeWarning, match="without a cache"):
        add_one = wavenet_jit._compile(scope["add_one"])
    assert add_one(41) == 42


def test_mu_law_round_trip():
    q = np.arange(256)
    assert np.array_equal(mu_law_encode(mu_law_decode(q)), q)
    x = np.linspace(-1, 1, 101)
    assert np.abs(mu_law_decode(mu_law_encode(x)) - x).max() < 0.04
    assert mu_law_encode(np.zeros(1))[0] == 128


def test_loss_falls_on_a_tiny_run():
    torch.manual_seed(0)
    model = tiny()
    model.train()
    t = np.arange(400)
    wave = mu_law_encode(0.5 * np.sin(2 * np.pi * t / 20), 32)
    x = torch.as_tensor(np.stack([wave[i : i + 200] for i in range(0, 160, 40)]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model(x[:, :-1], x[:, 1:])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_round_trip(tmp_path):
    model = tiny(2, n_global=2)
    save_checkpoint(model, tmp_path)
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["natty_model"] == "wavenet" and isinstance(loaded, WaveNet) and loaded.config == model.config
    assert np.array_equal(loaded.generate(40, g=1, seed=1), model.generate(40, g=1, seed=1))
