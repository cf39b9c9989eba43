"""natty-tunes' WaveNet instrument: a WaveNet locally conditioned on the notes to play, trained on notes rendered
by natty-tunes' own synthesizer timbre (`tunes.tone`, the melody's plucked organ), at 16 kHz.

Data. Random melodies from the tune model's domain: per sequence a tempo (72, 104 or 144 bpm, the tempos natty-tunes
plays), note lengths drawn from the tune durations (a sixteenth to a whole note, eighths and quarters most often),
about one rest in twelve, and pitches as a random walk of small steps (mostly seconds and thirds) over MIDI `LOW` to
`HIGH`, the range natty-tunes' melodies span in their keys. Each note is `tunes.tone(midi, length, 16000, 0.5)`,
exactly what `tunes.render` plays for a melody note, placed as `render` places it; the audio is mu-law encoded to
256 levels. Sequences are split by sequence: the training and held-out sets come from different seeds.

Conditioning. Per sample, `N_FEATURES` numbers: a one-hot of the MIDI pitch sounding (all zero in silence), the
sine and cosine of the fundamental's phase since the note's onset, and the note's envelope clocks (attack ramp over
10 ms, exponential decay since the onset, release ramp over the last 30 ms), all zero in silence. All of them are
functions of the note sequence alone (pitch, onset and length per note); the WaveNet still has to learn the
timbre: the harmonics, their levels and the envelope's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.own import tunes
from models.own.wavenet import WaveNet, mu_law_decode, mu_law_encode

SAMPLE_RATE = 16000
LOW, HIGH = 48, 89  # MIDI range of the instrument (C3 to F6): natty-tunes' melodies in their keys
N_PITCH = HIGH - LOW + 1
N_FEATURES = N_PITCH + 5  # one-hot pitch, sin/cos phase, attack, decay, release
GAIN = 0.5  # the melody's gain in tunes.render
BPMS = (72, 104, 144)
UNITS = (1, 2, 3, 4, 6, 8, 12, 16)  # sixteenths
UNIT_P = np.array([8, 30, 6, 28, 8, 12, 4, 4], float)
STEPS = np.arange(-5, 6)
STEP_P = np.array([1, 2, 4, 6, 10, 3, 10, 6, 4, 2, 1], float)
TRAIN_CLIPS, VAL_CLIPS, CLIP_SECONDS = 240, 24, 4.0  # the data `natty train instrument` uses
TRAIN_SEED, VAL_SEED = 1, 2


@dataclass
class Notes:
    """A monophonic note sequence in samples: pitch (MIDI), onset and length per note; `n` samples in all."""

    pitch: np.ndarray  # (N,) int
    onset: np.ndarray  # (N,) int, sample where the note starts
    length: np.ndarray  # (N,) int, samples
    n: int

    def active(self) -> np.ndarray:
        """(n,) int: the index of the note sounding at each sample, -1 in silence (a later note wins overlaps)."""
        idx = np.full(self.n, -1, np.int64)
        for i, (o, m) in enumerate(zip(self.onset, self.length, strict=True)):
            idx[o : min(o + m, self.n)] = i
        return idx


def fold(midi: int) -> int:
    """A pitch moved by octaves into the instrument's range."""
    return tunes.fold(midi, LOW, HIGH)


def notes_from_bars(bars: list[list[tuple[int | None, int]]], bpm: int, sr: int = SAMPLE_RATE) -> Notes:
    """A melody (notes as (midi or None, sixteenths) per bar) timed as `tunes.render` times it, with the pitches
    folded into the instrument's range; the sequence lasts as long as `render`'s audio."""
    sixteenth = 60.0 / bpm / 4
    pitch, onset, length = [], [], []
    t = 0
    for bar in bars:
        for midi, units in bar:
            if midi is not None:
                pitch.append(fold(midi))
                onset.append(int(t * sixteenth * sr))
                length.append(max(1, int(units * sixteenth * sr)))
            t += units
    n = int((t * sixteenth + 0.5) * sr)
    return Notes(np.array(pitch, np.int64), np.array(onset, np.int64), np.array(length, np.int64), n)


def random_melody(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> Notes:
    """A random melody of about `seconds` (see the module docstring), as bars of sixteenths and timed like one."""
    bpm = int(rng.choice(BPMS))
    sixteenth = 60.0 / bpm / 4
    total = int(seconds / sixteenth)
    p = int(rng.integers(55, 80))
    notes: list[tuple[int | None, int]] = []
    t = 0
    while t < total:
        units = int(rng.choice(UNITS, p=UNIT_P / UNIT_P.sum()))
        if rng.random() < 1 / 12:
            notes.append((None, units))
        else:
            p = int(np.clip(p + rng.choice(STEPS, p=STEP_P / STEP_P.sum()), LOW, HIGH))
            if rng.random() < 0.05:  # an occasional octave leap
                p = fold(p + int(rng.choice([-12, 12])))
            notes.append((p, units))
        t += units
    return notes_from_bars([notes], bpm, sr)


def synthesize(notes: Notes, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The notes played by natty-tunes' synthesizer (its melody timbre), float audio."""
    audio = np.zeros(notes.n)
    for midi, o, m in zip(notes.pitch, notes.onset, notes.length, strict=True):
        x = tunes.tone(int(midi), m / sr, sr, GAIN)
        audio[o : o + len(x)] += x[: max(0, notes.n - o)]
    return audio


def features(notes: Notes, start: int = 0, stop: int | None = None, sr: int = SAMPLE_RATE,
             active: np.ndarray | None = None) -> np.ndarray:
    """(stop - start, N_FEATURES) float32 conditioning of samples start..stop (see the module docstring)."""
    stop = notes.n if stop is None else stop
    idx = (notes.active() if active is None else active)[start:stop]
    out = np.zeros((stop - start, N_FEATURES), np.float32)
    on = np.flatnonzero(idx >= 0)
    if not len(on):
        return out
    k = idx[on]
    pitch = notes.pitch[k]
    t = (start + on - notes.onset[k]) / sr  # seconds since the onset
    dur = notes.length[k] / sr
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    phase = 2 * np.pi * f0 * t
    out[on, pitch - LOW] = 1.0
    out[on, N_PITCH] = np.sin(phase)
    out[on, N_PITCH + 1] = np.cos(phase)
    out[on, N_PITCH + 2] = np.minimum(1.0, t / 0.01)
    out[on, N_PITCH + 3] = np.exp(-3.0 * t)
    out[on, N_PITCH + 4] = np.clip((dur - t) / 0.03, 0.0, 1.0)
    return out


@dataclass
class Clip:
    """One training or held-out sequence: its notes, which note sounds at each sample, and the mu-law audio."""

    notes: Notes
    active: np.ndarray  # (n,) int16
    levels: np.ndarray  # (n,) uint8 mu-law

    def features(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return features(self.notes, start, stop, active=self.active.astype(np.int64))


def make_clips(n_clips: int, seed: int, seconds: float = CLIP_SECONDS) -> list[Clip]:
    """`n_clips` random melodies of about `seconds` each, synthesized and mu-law encoded."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n_clips):
        notes = random_melody(rng, seconds)
        clips.append(Clip(notes, notes.active().astype(np.int16), mu_law_encode(synthesize(notes)).astype(np.uint8)))
    return clips


def split(n_train: int = TRAIN_CLIPS, n_val: int = VAL_CLIPS) -> dict[str, list[Clip]]:
    """The training and held-out clips: different melodies, from different seeds."""
    return {"train": make_clips(n_train, TRAIN_SEED), "val": make_clips(n_val, VAL_SEED)}


def play(model: WaveNet, notes: Notes, seed: int, temperature: float = 1.0,
         callback: Callable[[int, int], bool | None] | None = None, every: int = 1600) -> np.ndarray:
    """The notes played by the WaveNet: float audio of `notes.n` samples at the model's rate, drawn after a
    sample of silence. `callback(done, total)` every `every` samples; returning True stops early (the audio so far)."""
    feats = features(notes, sr=model.config.sample_rate)
    local = np.concatenate([np.zeros((1, N_FEATURES), np.float32), feats])  # the silent prime, then the notes
    prime = np.full((1, 1), model.config.n_classes // 2, np.int64)
    cb = None if callback is None else (lambda done, _: callback(done, notes.n))
    q = model.generate(notes.n, seed=seed, temperature=temperature, prime=prime, local=local, callback=cb,
                       every=every)
    return mu_law_decode(q[0], model.config.n_classes)


# --- the baseline: a linear predictor scored over the same 256 mu-law classes ---------------------------------

def level_edges(levels: int = 256) -> np.ndarray:
    """(levels + 1,) the linear-domain boundaries of the mu-law classes: class k holds the x that `mu_law_encode`
    sends to k, [edges[k], edges[k + 1]); the outer edges are -inf and inf (encoding clips to [-1, 1])."""
    mu = levels - 1
    y = 2 * ((np.arange(levels + 1) - 0.5) / mu) - 1
    x = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu
    x[0], x[-1] = -np.inf, np.inf
    return x


def _lags(x: np.ndarray, taps: int, start: int) -> np.ndarray:
    """(len(x) - start, taps + 1): x[t - 1], ..., x[t - taps] and 1, for t = start..len(x) - 1."""
    cols = [x[start - k : len(x) - k] for k in range(1, taps + 1)]
    return np.stack([*cols, np.ones(len(x) - start)], axis=1)


class LinearPredictor:
    """The baseline: x[t] predicted by least squares from the `taps` samples before it (mu-law decoded audio,
    plus a constant), fitted on the training clips; its residual as a distribution whose scale depends on how loud
    the last `taps` samples were (their RMS, in `N_BINS` bins: exact silence, then log-spaced), each bin's
    family (Gaussian or logistic), scale and floor (a share of uniform mass over the 256 classes) chosen to
    maximise the training clips' likelihood of their mu-law classes. Scored as the probability mass each
    class's interval gets, over the same 256 classes as the WaveNet."""

    N_BINS = 14
    SCALES = np.logspace(-6, 0, 31)  # then refined around the best, a tenth of a decade apart
    FLOORS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)

    def __init__(self, taps: int = 64, start: int | None = None) -> None:
        self.taps = taps
        self.start = taps if start is None else max(start, taps)  # the first sample of a clip that is scored
        self.edges = level_edges()
        self.rms_edges = np.concatenate([[0.0, 1e-9], np.logspace(-4, 0, self.N_BINS - 2), [np.inf]])

    def _context(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lag matrix, targets' classes, RMS bin per scored sample) of one clip."""
        x = mu_law_decode(levels).astype(np.float64)
        a = _lags(x, self.taps, self.start)
        rms = np.sqrt(np.mean(a[:, : self.taps] ** 2, axis=1))
        bins = np.asarray(np.searchsorted(self.rms_edges, rms, side="right") - 1)
        return a, levels[self.start :].astype(np.int64), bins

    def fit(self, clips: list[np.ndarray], fit_every: int = 5) -> LinearPredictor:
        """Least squares on every scored sample of the clips (mu-law levels); then, on every `fit_every`-th, the
        residual's family, scale and floor per loudness bin."""
        n = self.taps + 1
        ata, atb = np.zeros((n, n)), np.zeros(n)
        for q in clips:
            a, _, _ = self._context(q)
            y = mu_law_decode(q[self.start :]).astype(np.float64)
            ata += a.T @ a
            atb += a.T @ y
        self.coef = np.linalg.solve(ata + 1e-9 * np.eye(n), atb)
        mus, ks, bins = [], [], []
        for q in clips:
            a, k, b = self._context(q)
            mus.append((a @ self.coef)[::fit_every])
            ks.append(k[::fit_every])
            bins.append(b[::fit_every])
        mu, k, b = np.concatenate(mus), np.concatenate(ks), np.concatenate(bins)
        self.params: list[tuple[str, float, float]] = []
        floors = np.array(self.FLOORS)[:, None]
        for i in range(self.N_BINS):
            sel = b == i
            best = ("gaussian", 1e-2, 1e-2)  # a bin no training sample falls in
            if sel.any():
                scores: dict[tuple[str, float, float], float] = {}

                def score(fam: str, s: float, mu_b: np.ndarray = mu[sel], k_b: np.ndarray = k[sel],
                          out: dict = scores) -> None:
                    m = self._mass(mu_b, k_b, fam, s)  # the CDFs once; every floor from them
                    ll = np.log((1 - floors) * m + floors / 256 + 1e-300).sum(axis=1)
                    for eps, v in zip(self.FLOORS, ll, strict=True):
                        out[(fam, float(s), eps)] = float(v)

                for fam in ("gaussian", "logistic"):
                    for s in self.SCALES:
                        score(fam, s)
                    top = max((key for key in scores if key[0] == fam), key=lambda key: scores[key])[1]
                    for s in top * 10 ** np.linspace(-0.2, 0.2, 5):
                        score(fam, s)
                best = max(scores, key=lambda key: scores[key])
            self.params.append(best)
        return self

    def _logp(self, mu: np.ndarray, k: np.ndarray, family: str, scale: float, floor: float) -> np.ndarray:
        m = self._mass(mu, k, family, scale)
        return np.log((1 - floor) * m + floor / (len(self.edges) - 1) + 1e-300)

    def _mass(self, mu: np.ndarray, k: np.ndarray, family: str, scale: float) -> np.ndarray:
        """The probability each class's interval gets from the residual distribution around mu."""
        from scipy.special import expit, ndtr

        cdf = ndtr if family == "gaussian" else expit
        with np.errstate(invalid="ignore"):
            lo = cdf((self.edges[k] - mu) / scale)
            hi = cdf((self.edges[k + 1] - mu) / scale)
            # far in a tail both CDFs round to 1: take the mass from the other side
            upper = (self.edges[k] - mu) > 0
            lo_c = cdf(-(self.edges[k] - mu) / scale)
            hi_c = cdf(-(self.edges[k + 1] - mu) / scale)
        return np.maximum(np.where(upper, lo_c - hi_c, hi - lo), 0.0)

    def nll(self, levels: np.ndarray) -> np.ndarray:
        """Nats of each scored sample (start..) of one clip."""
        a, k, b = self._context(levels)
        mu = a @ self.coef
        out = np.empty(len(k))
        for i, (fam, s, eps) in enumerate(self.params):
            sel = b == i
            if sel.any():
                out[sel] = -self._logp(mu[sel], k[sel], fam, s, eps)
        return out
