"""natty-tunes' WaveNet instrument (models.own.instrument): notes timed and synthesized as natty-tunes renders them,
conditioning that reaches the output, the three samplers drawing the same conditioned samples, a tiny model that
learns to play the asked pitch where an unconditioned one cannot, the linear-predictor baseline's scoring, `natty
train instrument` end to end, and natty-tunes playing through it in the backend. Tiny models, so it runs in
seconds."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("music21")

from models.own import instrument, load_checkpoint, save_checkpoint, tunes  # noqa: E402
from models.own.wavenet import WaveNet, WaveNetConfig, mu_law_decode, mu_law_encode  # noqa: E402
from tests.tiny_models import recording_ctx  # noqa: E402

Bars = list[list[tuple[int | None, int]]]
BARS: Bars = [[(60, 4), (67, 4), (64, 4), (72, 4)]]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(seed: int = 0, n_local: int = instrument.N_FEATURES, **kw) -> WaveNet:
    torch.manual_seed(seed)
    cfg = WaveNetConfig(**{"n_residual": 8, "n_dilation": 8, "n_skip": 16, "n_blocks": 1, "n_layers": 4,
                           "n_local": n_local, **kw})
    return WaveNet(cfg).eval()


# --- data -------------------------------------------------------------------------------------------------

def test_notes_are_timed_and_sound_as_natty_tunes_renders_its_melody():
    bars = [[(60, 4), (None, 2), (74, 2), (40, 8)]]  # a rest, and a note below the range (folded up an octave)
    notes = instrument.notes_from_bars(bars, 104)
    assert list(notes.pitch) == [60, 74, 52]
    ref = tunes.render([[(60, 4), (None, 2), (74, 2), (52, 8)]], None, 0, 104, sr=instrument.SAMPLE_RATE)
    audio = instrument.synthesize(notes)
    assert len(audio) == len(ref) == notes.n
    # the same to within the release ramp's timing (a note's length is whole samples here)
    np.testing.assert_allclose(audio / np.abs(audio).max() * 0.9, ref, atol=2e-3)
    active = notes.active()
    assert (active[: notes.onset[1]] <= 0).all() and (active[notes.onset[1] : notes.onset[1] + 10] == 1).all()


def test_features_say_the_pitch_the_phase_and_the_envelope_and_nothing_in_silence():
    notes = instrument.notes_from_bars([[(None, 4), (69, 4)]], 120)
    f = instrument.features(notes)
    o, end = int(notes.onset[0]), int(notes.onset[0] + notes.length[0])
    assert f.shape == (notes.n, instrument.N_FEATURES) and not f[:o].any() and not f[end:].any()
    assert f[o:end, 69 - instrument.LOW].all() and f[:, : instrument.N_PITCH].sum(axis=1).max() == 1
    sin = f[o:, instrument.N_PITCH]
    np.testing.assert_allclose(sin[:100], np.sin(2 * np.pi * 440 * np.arange(100) / instrument.SAMPLE_RATE),
                               atol=1e-5)
    # a slice is the same as the whole, cut
    np.testing.assert_array_equal(instrument.features(notes, o - 5, o + 50), f[o - 5 : o + 50])


def test_clips_are_split_by_melody_and_encoded():
    clips = instrument.make_clips(3, seed=4, seconds=1.0)
    again = instrument.make_clips(3, seed=4, seconds=1.0)
    other = instrument.make_clips(3, seed=5, seconds=1.0)
    assert all(np.array_equal(a.levels, b.levels) for a, b in zip(clips, again, strict=True))
    assert not np.array_equal(clips[0].notes.pitch[:5], other[0].notes.pitch[:5])
    c = clips[0]
    assert c.levels.dtype == np.uint8 and np.array_equal(c.levels, mu_law_encode(instrument.synthesize(c.notes)))
    assert all(instrument.LOW <= p <= instrument.HIGH for c in clips for p in c.notes.pitch)


# --- the conditioned WaveNet -------------------------------------------------------------------------------

def test_the_pitch_sequence_reaches_the_logits():
    model = tiny(1)
    a = instrument.notes_from_bars(BARS, 104)
    other: Bars = [[(62, 4), (67, 4), (64, 4), (72, 4)]]  # only the first note differs
    b = instrument.notes_from_bars(other, 104)
    x = torch.as_tensor(mu_law_encode(instrument.synthesize(a))[None, :-1])
    with torch.no_grad():
        la = model(x, local=torch.as_tensor(instrument.features(a)[None, 1:]))[0]
        lb = model(x, local=torch.as_tensor(instrument.features(b)[None, 1:]))[0]
    second = int(a.onset[1])
    assert not torch.allclose(la[:, 100:second], lb[:, 100:second])
    assert torch.equal(la[:, second + model.config.receptive_field :], lb[:, second + model.config.receptive_field :])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_naive_numpy_and_numba_draw_the_same_conditioned_samples(temperature):
    pytest.importorskip("numba")
    model = tiny(2)
    notes = instrument.notes_from_bars([[(60, 1), (72, 1)]], 144)
    local = np.concatenate([np.zeros((1, instrument.N_FEATURES), np.float32), instrument.features(notes)])[:301]
    prime = np.full((1, 1), 128)
    naive = model.generate_naive(300, seed=3, temperature=temperature, prime=prime, local=local)
    for engine in ("numpy", "numba"):
        fast = model.generate(300, seed=3, temperature=temperature, prime=prime, local=local, engine=engine,
                              every=70, callback=lambda n, s: None)
        assert np.array_equal(fast, naive), engine


def test_numpy_and_numba_agree_across_their_blocks_of_features():
    """Longer than one 4096-sample block of projected features (NumPy) and than a chunk (numba)."""
    pytest.importorskip("numba")
    model = tiny(3, n_residual=4, n_dilation=4, n_skip=8)
    notes = instrument.notes_from_bars([[(55, 4), (79, 4)]], 144)
    n = 4300
    local = np.concatenate([np.zeros((1, instrument.N_FEATURES), np.float32), instrument.features(notes)])[: n + 1]
    a = model.generate(n, seed=1, local=local, engine="numpy")
    b = model.generate(n, seed=1, local=local, engine="numba", every=1000, callback=lambda done, s: None)
    assert np.array_equal(a, b)


def _train(clips: list[instrument.Clip], n_local: int, steps: int = 120) -> WaveNet:
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(n_residual=16, n_dilation=16, n_skip=32, n_blocks=1, n_layers=6, n_local=n_local))
    rf, seq = model.config.receptive_field, 256
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        xs, fs = [], []
        for c in rng.integers(0, len(clips), 8):
            clip = clips[int(c)]
            start = int(rng.integers(0, len(clip.levels) - rf - seq))
            xs.append(clip.levels[start : start + rf + seq].astype(np.int64))
            fs.append(clip.features(start + 1, start + rf + seq))
        x = torch.as_tensor(np.stack(xs))
        logits, _ = model(x[:, :-1], local=torch.as_tensor(np.stack(fs)) if n_local else None)
        loss = torch.nn.functional.cross_entropy(logits[:, rf - 1 :].reshape(-1, 256), x[:, rf:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_a_tiny_conditioned_model_plays_the_asked_pitches_and_an_unconditioned_one_cannot():
    pytest.importorskip("librosa")
    clips = instrument.make_clips(16, seed=3, seconds=2.0)
    notes = instrument.notes_from_bars(BARS, 104)
    played = instrument.play(_train(clips, instrument.N_FEATURES), notes, seed=0, temperature=0.5)
    plain = _train(clips, 0)
    babble = mu_law_decode(plain.generate(notes.n, seed=0, temperature=0.5)[0])
    ok, total = tunes.pitch_match(BARS, 104, sr=instrument.SAMPLE_RATE, audio=played)
    ok_plain, _ = tunes.pitch_match(BARS, 104, sr=instrument.SAMPLE_RATE, audio=babble)
    assert total > 100 and ok / total > 0.4 and ok_plain / total < 0.1, (ok, ok_plain, total)


def test_play_reports_and_stops_when_asked():
    model = tiny(4)
    notes = instrument.notes_from_bars(BARS, 144)
    seen: list[tuple[int, int]] = []
    def on_audio(done: int, total: int) -> bool:
        seen.append((done, total))
        return done >= 3000

    audio = instrument.play(model, notes, seed=0, every=1000, callback=on_audio)
    assert len(audio) == 3000 and seen == [(1000, notes.n), (2000, notes.n), (3000, notes.n)]
    assert len(instrument.play(model, notes, seed=0)) == notes.n


# --- the baseline ---------------------------------------------------------------------------------------------

def test_level_edges_are_the_mu_law_classes():
    edges = instrument.level_edges()
    mids = (edges[1:-2] + edges[2:-1]) / 2
    assert np.array_equal(mu_law_encode(mids), np.arange(1, 255))
    assert np.array_equal(mu_law_encode(edges[1:-1] + 1e-12), np.arange(1, 256))
    assert np.array_equal(mu_law_encode(edges[1:-1] - 1e-12), np.arange(0, 255))


def test_linear_predictor_is_a_distribution_over_the_classes_and_predicts_a_tone():
    t = np.arange(8000)
    tone = mu_law_encode(0.5 * np.sin(2 * np.pi * 300 * t / 16000) * np.minimum(1, t / 800))
    rng = np.random.default_rng(0)
    noise = mu_law_encode(rng.uniform(-0.5, 0.5, 8000))
    lp = instrument.LinearPredictor(16).fit([tone])
    # the probabilities of all 256 classes sum to one at a few contexts
    a, _, bins = lp._context(tone)
    mu = a @ lp.coef
    for i in (100, 4000):
        fam, s, eps = lp.params[bins[i]]
        total = np.exp(lp._logp(np.full(256, mu[i]), np.arange(256), fam, s, eps)).sum()
        assert total == pytest.approx(1.0, abs=1e-6)
    assert lp.nll(tone).mean() < 2.0 < lp.nll(noise).mean()


# --- natty train instrument and the backend ------------------------------------------------------------------

def test_natty_train_instrument_runs_end_to_end(tmp_path, monkeypatch, capsys):
    from models.own import train

    monkeypatch.setattr(train.InstrumentTask, "sizes", (4, 2))
    out = tmp_path / "instrument"
    args = ["instrument", "--out", str(out), "--steps", "4", "--batch-size", "2", "--seq-len", "64", "--eval-every",
            "2", "--threads", "1", "--set", "n_residual=4", "--set", "n_dilation=4", "--set", "n_skip=8",
            "--set", "n_layers=3"]
    assert train.train_main(args) == 0
    model, meta = load_checkpoint(out)
    assert meta["natty_model"] == "wavenet" and meta["data"] == "instrument" and meta["step"] == 4
    assert isinstance(model, WaveNet) and model.config.n_local == instrument.N_FEATURES
    assert model.config.n_residual == 4 and model.config.sample_rate == instrument.SAMPLE_RATE
    assert (out / "loss.png").is_file() and (out / "train_state.pt").is_file()
    assert 0 < meta["metrics"]["nll_nats"] < np.log(256) + 1
    assert train.eval_main([str(out)]) == 0
    assert "wavenet" in capsys.readouterr().out


def _entry(tmp_path, **params):
    import dataclasses

    from models.catalog import load_catalog

    entry = load_catalog().get("natty-tunes-wavenet")
    assert entry is not None and entry.task == "text-to-audio" and entry.params["instrument"] == "wavenet"
    save_checkpoint(tiny(5), tmp_path / "inst", {"data": "instrument"})
    return dataclasses.replace(entry, params={**entry.params, "instrument_model": str(tmp_path / "inst"), **params})


async def test_natty_tunes_wavenet_plays_the_melody_with_the_instrument_and_says_so(tmp_path):
    from models.base import AudioResult, Request
    from models.own import OwnModelsBackend

    ctx, reports = recording_ctx()
    backend = OwnModelsBackend()
    entry = _entry(tmp_path)
    assert (await backend.check(entry))[0]
    result = await backend.run(entry, Request(task="text-to-audio", prompt="a fast march in G, 2 bars", seed=3), ctx)
    assert isinstance(result, AudioResult) and result.sample_rate == instrument.SAMPLE_RATE
    assert result.duration == pytest.approx(2 * 2 * 60 / tunes.BPM["fast"] + 0.5, abs=0.05)
    assert result.meta["instrument"] == "wavenet" and "WaveNet instrument" in result.meta["note"]
    assert [name for name, _ in result.extra_files] == ["tune.mid"]
    assert any("wavenet playing" in (r.message or "") for r in reports)
    assert reports[-1].step == reports[-1].total


async def test_natty_tunes_wavenet_stops_when_cancelled_and_says_what_is_missing(tmp_path):
    from models.base import Request
    from models.errors import BackendError, ErrorKind
    from models.own import OwnModelsBackend

    ctx, reports = recording_ctx()
    entry = _entry(tmp_path)
    n_bars = 4

    def report(p) -> None:  # cancel once the WaveNet has started playing
        reports.append(p)
        if "wavenet playing" in (p.message or ""):
            ctx.cancel.cancel()

    ctx.report = report
    with pytest.raises(BackendError) as err:
        await OwnModelsBackend().run(entry, Request(task="text-to-audio", prompt=f"a reel in D, {n_bars} bars",
                                                    seed=2), ctx)
    assert err.value.kind == ErrorKind.CANCELLED
    assert sum("wavenet playing" in (r.message or "") for r in reports) == 1
    import dataclasses

    missing = dataclasses.replace(entry, params={**entry.params, "instrument_model": str(tmp_path / "nothing")})
    ok, why = await OwnModelsBackend().check(missing)
    assert not ok and "natty train" in why
    bad = dataclasses.replace(entry, params={**entry.params, "instrument": "kazoo"})
    with pytest.raises(BackendError) as err:
        await OwnModelsBackend().run(bad, Request(task="text-to-audio", prompt="a reel", seed=2), recording_ctx()[0])
    assert err.value.kind == ErrorKind.BAD_REQUEST


async def test_the_bundled_instrument_plays_the_written_notes():
    """The bundled checkpoint (models/own/checkpoints/instrument) through the catalog entry users pick."""
    pytest.importorskip("librosa")
    from models.base import Request
    from models.catalog import load_catalog
    from models.own import CHECKPOINTS, OwnModelsBackend

    if not (CHECKPOINTS / "instrument" / "model.safetensors").is_file():
        pytest.skip("no bundled instrument checkpoint")
    model, meta = load_checkpoint(CHECKPOINTS / "instrument")
    assert meta["data"] == "instrument" and isinstance(model, WaveNet) and model.config.n_local == instrument.N_FEATURES
    line = instrument.play(model, instrument.notes_from_bars(BARS, 144), seed=0)
    ok, total = tunes.pitch_match(BARS, 144, sr=instrument.SAMPLE_RATE, audio=line)
    assert ok / total >= 0.9
    entry = load_catalog().get("natty-tunes-wavenet")
    assert entry is not None
    result = await OwnModelsBackend().run(entry, Request(task="text-to-audio", prompt="a fast jig, 2 bars", seed=1),
                                          recording_ctx()[0])
    assert result.meta["instrument"] == "wavenet" and result.extra_files[0][0] == "tune.mid"
