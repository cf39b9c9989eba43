"""natty-tunes (models.own.tunes): what a prompt is understood to ask, tunes of exactly the asked bars and meter,
the mode reaching the model, a MIDI score that reads back, audio whose pitch is the written notes, and the
checks and baseline the evaluation relies on. Tiny models and hand-made tunes, so the file runs in seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("music21")

from models.own import tunes  # noqa: E402
from models.own.tunes import BAR_UNITS, Tune, TuneLSTM, TuneLSTMConfig  # noqa: E402
from tests.tiny_models import recording_ctx  # noqa: E402

TINY = TuneLSTMConfig(n_embd=16, n_hidden=48, n_layer=1, dropout=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(seed: int = 0) -> TuneLSTM:
    torch.manual_seed(seed)
    return TuneLSTM(TINY)


# --- prompts ---------------------------------------------------------------------------------------------------

def test_prompt_words_understood_and_ignored():
    req, defaults, ignored = tunes.parse_prompt("a sad waltz in D minor, slow, 16 bars, dragon")
    assert (req.tonic, req.mode, req.meter, req.tempo, req.n_bars, req.kind) == (2, "minor", "3/4", "slow", 16,
                                                                                  "waltz")
    assert req.bpm == tunes.BPM["slow"]
    assert ignored == ["dragon"] and defaults == []
    assert req.describe() == "a slow waltz in D minor, 3/4, 72 bpm, 16 bars"


def test_prompt_keys_tempi_and_meters():
    req, _, ignored = tunes.parse_prompt("A waltz in E")  # the opening "A" is an article, not A major
    assert (req.tonic, req.mode, req.meter) == (4, "major", "3/4") and ignored == []
    req, _, _ = tunes.parse_prompt("a jig in Bb minor")
    assert (req.tonic, req.mode, req.meter, req.tempo) == (10, "minor", "6/8", "fast")
    req, _, _ = tunes.parse_prompt("Am, 96 bpm, fast, 8 measures")
    assert (req.tonic, req.mode, req.bpm, req.n_bars) == (9, "minor", 96, 8)  # an explicit bpm wins
    req, _, ignored = tunes.parse_prompt("a march in 5/4")
    assert "5/4" in ignored and req.meter == "2/4"  # a meter the model does not know is reported, not used


def test_prompt_with_nothing_musical_still_plays_and_says_what_was_picked():
    picks = set()
    for seed in range(12):
        req, defaults, ignored = tunes.parse_prompt("hello there", np.random.default_rng(seed))
        assert ignored == ["hello", "there"]
        assert f"key {tunes.NAMES[req.tonic]}" in defaults and req.mode in defaults and req.meter in defaults
        assert req.meter in BAR_UNITS and req.mode in tunes.MODES
        picks.add((req.tonic, req.mode, req.meter))
    assert len(picks) > 3  # the seed chooses


# --- generation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("meter", sorted(BAR_UNITS))
def test_generate_fills_exactly_the_asked_bars(meter):
    model = _tiny()
    for seed, n_bars in ((0, 3), (1, 7)):
        bars = model.generate("minor", meter, "slow", n_bars, seed=seed)
        assert len(bars) == n_bars
        assert [sum(u for _, u in bar) for bar in bars] == [BAR_UNITS[meter]] * n_bars
        assert all(u in tunes.DUR_UNITS for bar in bars for _, u in bar)
    assert model.generate("major", meter, "fast", 4, seed=5) == model.generate("major", meter, "fast", 4, seed=5)


def test_generate_in_key_keeps_to_the_scale():
    model = _tiny()
    for mode in tunes.MODES:
        free = {m % 12 for bar in model.generate(mode, "4/4", "moderate", 16, seed=2) for m, _ in bar if m is not None}
        kept = {m % 12 for bar in model.generate(mode, "4/4", "moderate", 16, seed=2, in_key=True) for m, _ in bar
                if m is not None}
        assert not free <= set(tunes.SCALES[mode])  # an untrained model wanders off the scale ...
        assert kept <= set(tunes.SCALES[mode])  # ... unless kept to it


def test_generate_reports_each_bar_and_stops_when_told():
    seen: list[int] = []
    bars = _tiny().generate("major", "4/4", "moderate", 8, seed=0, callback=lambda b: seen.append(b) or b >= 3)
    assert seen == [1, 2, 3] and len(bars) == 3


def _arpeggio(mode: str, meter: str = "4/4") -> Tune:
    third = 64 if mode == "major" else 63
    bar = [(60, 4), (third, 4), (67, 4), (72, 4)]
    return Tune(bars=[list(bar) for _ in range(4)], mode=mode, meter=meter, tempo="moderate")


def _fit(model: TuneLSTM, tune_list: list[Tune], steps: int) -> None:
    x, cond, pos, rem, y = _batch(tunes.TuneSet.from_tunes(tune_list))
    y[1, -3:] = -1  # padding targets are ignored: the loss stays finite and training still works
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(x, cond, pos, rem, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item())


def test_the_asked_mode_reaches_the_model():
    """Trained briefly on major and minor arpeggios that differ only in their third, the model plays the
    major third when asked for major and the minor third when asked for minor."""
    model = _tiny(1)
    _fit(model, [_arpeggio("major"), _arpeggio("minor")], steps=150)
    for mode, third, other in (("major", 64, 63), ("minor", 63, 64)):
        pitches = [m for bar in model.generate(mode, "4/4", "moderate", 4, seed=3, temperature=0.5) for m, _ in bar]
        assert pitches.count(third) >= 3 and pitches.count(other) == 0, (mode, pitches)


# --- data ------------------------------------------------------------------------------------------------------

WALTZ_IN_G = """X:1
T:A test waltz
R:air
M:3/4
L:1/4
K:G
G B d | g2 f | e d c | B2 A | G B d | c A F | G3 |]
"""


def test_an_abc_tune_is_read_transposed_to_c():
    t = tunes.parse_tune(WALTZ_IN_G, "oneills1850")
    assert t is not None
    assert (t.mode, t.meter, t.tempo, t.tonic) == ("major", "3/4", "slow", 7)
    assert len(t.bars) == 7 and t.bars[0] == [(72, 4), (76, 4), (79, 4)]  # G B d, moved up a fourth to C E G
    assert tunes.parse_tune(WALTZ_IN_G.replace("G B d | g2 f", "(3GBd G B d | g2 f")) is None  # tuplets dropped


def test_tune_set_round_trips(tmp_path):
    t = tunes.parse_tune(WALTZ_IN_G, "oneills1850")
    assert t is not None
    ts = tunes.TuneSet.from_tunes([t, _arpeggio("minor")], {"note": "x"})
    ts.save(tmp_path / "t.npz")
    back = tunes.TuneSet.load(tmp_path / "t.npz")
    assert len(back) == 2 and back.stats == {"note": "x"}
    assert np.array_equal(back.seq(1), ts.seq(1)) and np.array_equal(back.cond, ts.cond)
    s = back.seq(0)
    assert s[0] == tunes.BOS and s[-1] == tunes.END and (s == tunes.BAR).sum() == 6 and tunes.n_notes(s) == 17


def test_training_batches_are_whole_tunes_padded_with_ignored_targets(monkeypatch):
    from models.own import train

    waltz = tunes.parse_tune(WALTZ_IN_G, "oneills1850")
    assert waltz is not None
    small = tunes.TuneSet.from_tunes([waltz, _arpeggio("major"), _arpeggio("minor", "3/4")])
    small.val[:] = [False, False, True]
    monkeypatch.setattr(tunes, "load_tunes", lambda **_: small)
    task = train.task_for("tunes", None)
    assert isinstance(task, train.TuneTask) and task.natty_model == "tunelstm"
    x, cond, pos, rem, y = task.batch("train", 2, np.random.default_rng(0), torch.device("cpu"))
    lengths = sorted(len(small.seq(i)) - 1 for i in (0, 1))
    assert x.shape == y.shape == pos.shape == rem.shape == (2, lengths[-1]) and cond.shape == (2, 4)
    assert sorted(int((row >= 0).sum()) for row in y) == lengths  # each tune whole, the shorter one padded with -1
    assert all(int(row[(row >= 0)][-1]) == tunes.END for row in y)
    model = _tiny()
    assert math.isfinite(task.loss(model, (x, cond, pos, rem, y)).item())
    metrics = task.evaluate(model, torch.device("cpu"))
    assert metrics["bits_per_note"] == pytest.approx(
        tunes.model_nll_bits(model, small, np.array([2])) / tunes.n_notes(small.seq(2)))


# --- accompaniment, audio, score -------------------------------------------------------------------------------

def test_harmony_covers_every_bar_and_ends_on_the_tonic():
    bars = _arpeggio("major").bars + [[(67, 4), (71, 4), (74, 8)], [(72, 16)]]
    chords = tunes.harmonize(bars, "major", "4/4")
    assert [sum(u for _, u in segs) for segs in chords] == [16] * len(bars)
    assert chords[0][0][0] == (0, 4, 7) and chords[-1][-1][0] == (0, 4, 7) and chords[-2][-1][0] == (7, 11, 2)


def test_midi_score_reads_back_with_its_notes_meter_and_key():
    from music21 import converter

    model = _tiny()
    req, _, _ = tunes.parse_prompt("a waltz in D minor, 4 bars, 90 bpm")
    played = tunes.play(model, req, seed=4)
    assert len(played.bars) == 4
    score = converter.parse(played.midi, format="midi")
    assert len(score.parts) == 2  # melody and accompaniment
    melody = score.parts[0]
    assert [n.pitch.midi for n in melody.recurse().notes] == [m for bar in played.bars for m, _ in bar
                                                              if m is not None]
    assert melody.recurse().getElementsByClass("TimeSignature").first().ratioString == "3/4"
    assert round(score.recurse().getElementsByClass("MetronomeMark").first().number) == 90
    # the audio lasts the tune (4 bars of 3/4 at 90 bpm) plus the half second of release
    assert len(played.audio) / played.sample_rate == pytest.approx(4 * 3 * 60 / 90 + 0.5, abs=0.01)
    assert np.abs(played.audio).max() <= 1.0


FIXED_MELODY = [[(60, 4), (64, 4), (67, 4), (72, 4)], [(71, 8), (69, 4), (None, 4)],
                [(65, 2), (67, 2), (69, 4), (74, 8)], [(62, 6), (59, 2), (55, 8)]]


def test_rendered_pitch_is_the_written_pitch():
    ok, total = tunes.pitch_match(FIXED_MELODY, bpm=100)
    assert total > 100 and ok / total >= 0.95
    # the check can fail: the same melody a semitone sharp matches almost nowhere
    sharp = [[(None if m is None else m + 1, u) for m, u in bar] for bar in FIXED_MELODY]
    ok, total = tunes.pitch_match(FIXED_MELODY, bpm=100, audio=tunes.render(sharp, None, 0, 100))
    assert ok / total < 0.1


def test_key_of_scales():
    c_major = [[(60, 4), (62, 4), (64, 4), (65, 4)], [(67, 4), (69, 4), (71, 4), (72, 4)],
               [(72, 4), (67, 4), (64, 4), (62, 4)], [(60, 16)]]
    assert tunes.key_of(c_major) == (0, "major")
    a_minor = [[(57, 4), (59, 4), (60, 4), (62, 4)], [(64, 4), (65, 4), (68, 4), (69, 4)],
               [(69, 4), (64, 4), (60, 4), (59, 4)], [(57, 16)]]
    assert tunes.key_of(a_minor) == (9, "minor")
    assert tunes.key_of(tunes.transpose(c_major, 2)) == (2, "major")


# --- the baseline ----------------------------------------------------------------------------------------------

def test_trigram_is_a_proper_distribution():
    ts = tunes.TuneSet.from_tunes([_arpeggio("major"), _arpeggio("minor"), tunes.parse_tune(WALTZ_IN_G)])
    seqs = [ts.seq(i) for i in range(len(ts))]
    tri = tunes.TrigramModel(seqs[:2])
    for a, b in ((tunes.BOS, tunes.PITCH0 + 12), (None, tunes.BAR), (5, 7), (None, tunes.END)):
        probs = [tri.prob(a, b, x) for x in range(tunes.VOCAB)]
        assert min(probs) > 0 and sum(probs) == pytest.approx(1.0, abs=1e-9)
    uniform = math.log2(tunes.VOCAB)
    assert tri.nll_bits(seqs[0]) < 0.25 * uniform * (len(seqs[0]) - 1)  # what it saw, it predicts well
    assert tri.nll_bits(seqs[2]) > tri.nll_bits(seqs[0])  # an unseen tune costs more


def test_model_nll_bits_is_the_training_loss():
    ts = tunes.TuneSet.from_tunes([_arpeggio("major"), _arpeggio("minor")])
    model = _tiny()
    bits = tunes.model_nll_bits(model, ts, np.arange(2))
    _, loss, _ = model(*_batch(ts))
    assert bits == pytest.approx(loss.item() * 2 * (len(ts.seq(0)) - 1) / math.log(2), rel=1e-4)


def _batch(ts):
    seqs = [ts.seq(i) for i in range(len(ts))]
    feats = [tunes.features(s, tunes.METERS[int(ts.cond[i, 1])], int(ts.n_bars[i])) for i, s in enumerate(seqs)]
    return (torch.as_tensor(np.stack([s[:-1] for s in seqs])), torch.as_tensor(ts.cond),
            torch.as_tensor(np.stack([f[0][:-1] for f in feats])),
            torch.as_tensor(np.stack([f[1][:-1] for f in feats])), torch.as_tensor(np.stack([s[1:] for s in seqs])))


def test_piano_roll_is_drawn(tmp_path):
    from PIL import Image

    tunes.piano_roll_png(FIXED_MELODY, tmp_path / "roll.png", scale=4)
    img = Image.open(tmp_path / "roll.png")
    assert img.width == 64 * 4 + 2 and img.height > 20 * 4


# --- the bundled natty-tunes, end to end ---------------------------------------------------------------------

async def test_bundled_tunes_plays_the_asked_waltz_with_its_score():
    import io
    import wave

    from music21 import converter

    from models.base import AudioResult, Request
    from models.catalog import load_catalog
    from models.own import OwnModelsBackend

    entry = load_catalog().get("natty-tunes")
    assert entry is not None and entry.task == "text-to-audio"
    ctx, reports = recording_ctx()
    result = await OwnModelsBackend().run(entry, Request(task="text-to-audio", prompt="a slow waltz in D minor, 8 bars",
                                                         seed=5), ctx)
    assert isinstance(result, AudioResult)
    # 8 bars of 3/4 at the slow tempo (72 bpm) are 20 s; the last note's release adds half a second
    assert result.duration == pytest.approx(8 * 3 * 60 / tunes.BPM["slow"] + 0.5, abs=0.05)
    with wave.open(io.BytesIO(result.data)) as w:
        assert w.getnchannels() == 1 and w.getframerate() == result.sample_rate
        assert w.getnframes() / w.getframerate() == pytest.approx(result.duration)
    note = result.meta["note"]
    assert note.startswith("played: a slow waltz in D minor, 3/4, 72 bpm, 8 bars") and "ignored" not in note
    notes_line = note.split("\nnotes: ")[1]
    assert notes_line.count("|") == 7  # eight bars of notes in the message
    assert reports[-1].step == 8 and reports[-1].total == 8
    assert [name for name, _ in result.extra_files] == ["tune.mid"]
    score = converter.parse(result.extra_files[0][1], format="midi")
    melody = score.parts[0]
    assert melody.recurse().getElementsByClass("TimeSignature").first().ratioString == "3/4"
    written = [tunes.note_name(n.pitch.midi) for n in melody.recurse().notes]
    assert written == [w for w in notes_line.replace("|", " ").split() if w != "r"]
    assert result.meta["seed"] == 5


async def test_bundled_tunes_plays_a_prompt_with_nothing_musical_and_says_so():
    from models.base import Request
    from models.catalog import load_catalog
    from models.own import OwnModelsBackend

    result = await OwnModelsBackend().run(load_catalog().get("natty-tunes"),
                                          Request(task="text-to-audio", prompt="hello dragon", seed=1),
                                          recording_ctx()[0])
    note = result.meta["note"]
    assert "picked: key " in note and "ignored: 'hello', 'dragon'" in note and result.duration > 5


async def test_bundled_tunes_stops_when_cancelled():
    from models.base import Request
    from models.catalog import load_catalog
    from models.errors import BackendError, ErrorKind
    from models.own import OwnModelsBackend

    ctx, reports = recording_ctx(cancel_after=3)
    with pytest.raises(BackendError) as err:
        await OwnModelsBackend().run(load_catalog().get("natty-tunes"),
                                     Request(task="text-to-audio", prompt="a jig in G, 32 bars", seed=2), ctx)
    assert err.value.kind == ErrorKind.CANCELLED and len(reports) == 3


async def test_natty_generate_writes_the_tune_and_its_score(tmp_path):
    import soundfile
    from music21 import converter

    from tests.test_cli import natty

    env = {"NATTY_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": f"sqlite:///{tmp_path}/natty.db"}
    code, out, err = await natty("generate", "text-to-audio", "a march in G, 4 bars", "--model", "natty-tunes",
                                 "--seed", "1", "--out", str(tmp_path / "march.wav"), cwd=tmp_path, env=env)
    assert code == 0, err
    assert out.split() == [str(tmp_path / "march_1.wav"), str(tmp_path / "march_2.mid")]
    assert soundfile.info(str(tmp_path / "march_1.wav")).duration == pytest.approx(4 * 2 * 60 / 104 + 0.5, abs=0.05)
    score = converter.parse(str(tmp_path / "march_2.mid"))
    assert score.parts[0].recurse().getElementsByClass("TimeSignature").first().ratioString == "2/4"
