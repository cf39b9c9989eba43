"""natty-tunes: folk melodies from music21's corpus, a note-level LSTM conditioned on what a prompt can say, a
rule-based bass, a small synthesizer and a MIDI score.

Data. The melodies of three ABC collections bundled with music21 (`COLLECTIONS`): the Essen folk songs, O'Neill's
1850 and Ryan's Mammoth Collection. None of them carries chords at scale (the corpus's Nottingham file holds two
tunes), so the model learns melodies only and the accompaniment is derived by rule (`harmonize`: per bar or half
bar, the diatonic triad that best covers the melody's notes, a cadence on the tonic at the end). Each tune's key
is music21's key estimate (`Stream.analyze("key")`), because the Essen transcriptions write accidentals instead
of a minor key signature; tunes are transposed so that the tonic is C and the key enters the model only as its
mode (a tune is played in the asked key by transposing back). Meter comes from the time signature (2/2 counts as
4/4), tempo from a Q: field or a tune type in the title or notes (reel, jig, hornpipe: fast; air, lament, slow:
slow), otherwise unknown. Tunes with tuplets or odd durations, no bars, or modes other than major and minor (by
the estimate) are dropped.

Tokens. A tune is BOS, then per note a pitch (or rest) token and a duration token, BAR between measures and END
after the last. Alongside each token the model sees the position in the bar after it (in sixteenths) and the
bars still to go, so that `generate` can keep bars full and end when asked; bar lines and the end are forced by
that grammar rather than sampled.

Split. By tune, with near-duplicates kept together: tunes whose first eight notes agree share a group, and a
group is held out when its hash says so (`VAL_FRACTION`, fixed, independent of any training seed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.own.charrnn import sample_logits

COLLECTIONS = ("essenFolksong", "oneills1850", "ryansMammoth")
CACHE_VERSION = 1
VAL_FRACTION = 0.1

MODES = ("major", "minor")
METERS = ("4/4", "3/4", "2/4", "6/8", "other")
BAR_UNITS = {"4/4": 16, "3/4": 12, "2/4": 8, "6/8": 12}  # bar length in sixteenths
TEMPOS = ("unknown", "slow", "moderate", "fast")
LENGTHS = (8, 12, 16, 24, 32, 48)  # a tune's bars, bucketed to the first bound it does not exceed
DURATIONS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # quarter lengths
DUR_UNITS = tuple(int(d * 4) for d in DURATIONS)
LOW, HIGH = 48, 84  # melody pitch range after transposing to C; notes outside are folded by octaves

# The scales `generate(in_key=True)` keeps to: minor is the harmonic minor. With the natural 7th allowed too, most
# of the tunes asked in minor that music21 heard in another key were heard in the relative or subtonic major.
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 11)}
BOS, BAR, END, REST = 0, 1, 2, 3
PITCH0 = 4
N_PITCH = HIGH - LOW + 1
DUR0 = PITCH0 + N_PITCH
VOCAB = DUR0 + len(DURATIONS)
MAX_POS = 32  # position-in-bar embedding size, sixteenths
MAX_REM = 8  # bars-to-go embedding clips here

SLOW_WORDS = ("slow", "air", "lament", "lullaby", "andante", "adagio", "largo")
FAST_WORDS = ("reel", "jig", "hornpipe", "polka", "slide", "quick", "lively", "allegro", "presto", "fling")


# --- data -------------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """`$NATTY_DATA_DIR`, or ~/.cache/natty."""
    return Path(os.environ.get("NATTY_DATA_DIR") or Path.home() / ".cache" / "natty")


def corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def split_abc(text: str) -> list[str]:
    """The tunes of an ABC file, each from its X: line."""
    parts = re.split(r"(?m)^(?=X:)", text)
    return [p for p in parts if p.startswith("X:")]


def header(tune: str, key: str) -> str:
    return " ".join(m.strip() for m in re.findall(rf"(?m)^{key}:(.*)$", tune))


def meter_class(ratio: str) -> str:
    if ratio in ("4/4", "2/2"):
        return "4/4"
    return ratio if ratio in METERS else "other"


def tempo_class(bpm: float | None, words: str) -> str:
    if bpm is not None:
        return "slow" if bpm < 90 else "fast" if bpm >= 130 else "moderate"
    w = words.lower()
    if any(re.search(rf"\b{x}", w) for x in SLOW_WORDS):
        return "slow"
    if any(re.search(rf"\b{x}", w) for x in FAST_WORDS):
        return "fast"
    return "unknown"


def length_class(bars: int) -> int:
    return next((i for i, b in enumerate(LENGTHS) if bars <= b), len(LENGTHS) - 1)


def fold(midi: int, low: int = LOW, high: int = HIGH) -> int:
    """A pitch moved by octaves into [low, high] (the tune model's range unless given)."""
    while midi < low:
        midi += 12
    while midi > high:
        midi -= 12
    return midi


@dataclass
class Tune:
    """One tune: its notes as (midi or None for a rest, sixteenths) per bar, transposed to tonic C."""

    bars: list[list[tuple[int | None, int]]]
    mode: str
    meter: str
    tempo: str
    tonic: int = 0  # the original tonic's pitch class
    title: str = ""
    collection: str = ""

    def tokens(self) -> list[int]:
        out = [BOS]
        for i, bar in enumerate(self.bars):
            if i:
                out.append(BAR)
            for midi, units in bar:
                out += [REST if midi is None else PITCH0 + fold(midi) - LOW, DUR0 + DUR_UNITS.index(units)]
        out.append(END)
        return out


def parse_tune(abc: str, collection: str = "") -> Tune | None:
    """A Tune from one ABC tune's text, or None when it does not fit the data set (see the module docstring)."""
    from music21 import converter

    try:
        score = converter.parse(abc, format="abc")
    except Exception:  # music21's ABC reader raises many kinds on odd files
        return None
    part = score.parts[0] if hasattr(score, "parts") and score.parts else score
    measures = list(part.getElementsByClass("Measure"))
    ts = part.recurse().getElementsByClass("TimeSignature").first()
    if len(measures) < 2 or ts is None:
        return None
    k = score.analyze("key")
    if k.mode not in MODES:
        return None
    shift = -((k.tonic.pitchClass + 6) % 12 - 6)  # the smallest move that makes the tonic C
    bars = []
    for m in measures:
        bar: list[tuple[int | None, int]] = []
        for n in m.notesAndRests:
            ql = float(n.quarterLength)
            if ql == 0:  # grace notes
                continue
            units = ql * 4
            if abs(units - round(units)) > 1e-6 or int(round(units)) not in DUR_UNITS:
                return None
            midi = None if n.isRest else int(max(p.midi for p in n.pitches)) + shift
            bar.append((midi, int(round(units))))
        if bar:
            bars.append(bar)
    if len(bars) < 2:
        return None
    q = re.search(r"(\d+)\s*$", header(abc, "Q"))
    words = " ".join((header(abc, "T"), header(abc, "R"), header(abc, "N")))
    return Tune(bars=bars, mode=k.mode, meter=meter_class(ts.ratioString), tempo=tempo_class(
        float(q.group(1)) if q else None, words), tonic=k.tonic.pitchClass, title=header(abc, "T")[:80],
        collection=collection)


def corpus_tunes(limit_per_collection: int | None = None, log: Callable[[str], None] | None = None
                 ) -> tuple[list[Tune], dict]:
    """Parse the collections' ABC files (all tunes, or the first `limit_per_collection` of each)."""
    tunes: list[Tune] = []
    stats: dict = {}
    for coll in COLLECTIONS:
        t0, seen = time.perf_counter(), 0
        kept_before = len(tunes)
        for f in sorted((corpus_root() / coll).glob("*.abc")):
            for abc in split_abc(f.read_text(encoding="latin-1")):
                if limit_per_collection is not None and seen >= limit_per_collection:
                    break
                seen += 1
                t = parse_tune(abc, coll)
                if t is not None:
                    tunes.append(t)
                if log and seen % 500 == 0:
                    log(f"{coll}: {seen} tunes parsed, {len(tunes) - kept_before} kept")
        stats[coll] = {"tunes": seen, "kept": len(tunes) - kept_before,
                       "parse_s": round(time.perf_counter() - t0, 1)}
    return tunes, stats


def group_key(tune: Tune) -> str:
    notes = [n for bar in tune.bars for n in bar if n[0] is not None][:8]
    return hashlib.md5(repr(notes).encode()).hexdigest()


def is_val(tune: Tune) -> bool:
    return int(group_key(tune)[:8], 16) / 2**32 < VAL_FRACTION


@dataclass
class TuneSet:
    """Tunes as arrays: every tune's tokens concatenated, with offsets and per-tune conditioning."""

    tokens: np.ndarray  # int16, all tunes one after another
    offsets: np.ndarray  # (N + 1,)
    cond: np.ndarray  # (N, 4): mode, meter, tempo, length class
    n_bars: np.ndarray  # (N,)
    tonic: np.ndarray  # (N,) original tonic pitch class
    val: np.ndarray  # (N,) bool, held out
    collection: np.ndarray  # (N,) index into COLLECTIONS
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def seq(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.val if split == "val" else ~self.val)

    @classmethod
    def from_tunes(cls, tunes: list[Tune], stats: dict | None = None) -> TuneSet:
        seqs = [t.tokens() for t in tunes]
        return cls(
            tokens=np.concatenate([np.array(s, np.int16) for s in seqs]) if seqs else np.zeros(0, np.int16),
            offsets=np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64),
            cond=np.array([[MODES.index(t.mode), METERS.index(t.meter), TEMPOS.index(t.tempo),
                            length_class(len(t.bars))] for t in tunes], np.int64).reshape(-1, 4),
            n_bars=np.array([len(t.bars) for t in tunes], np.int64),
            tonic=np.array([t.tonic for t in tunes], np.int64),
            val=np.array([is_val(t) for t in tunes], bool),
            collection=np.array([COLLECTIONS.index(t.collection) if t.collection in COLLECTIONS else 0
                                 for t in tunes], np.int64),
            stats=stats or {},
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: v for k, v in asdict(self).items() if k != "stats"}
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, stats=np.array(json.dumps(self.stats)), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> TuneSet:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "stats"}
            return cls(**arrays, stats=json.loads(str(z["stats"])))


def load_tunes(limit_per_collection: int | None = None, log: Callable[[str], None] | None = None) -> TuneSet:
    """The corpus as a TuneSet, parsed once (minutes for the whole corpus) and cached in `cache_dir()`."""
    name = f"tunes-v{CACHE_VERSION}-{limit_per_collection or 'all'}.npz"
    path = cache_dir() / name
    if path.exists():
        return TuneSet.load(path)
    t0 = time.perf_counter()
    tunes, stats = corpus_tunes(limit_per_collection, log)
    stats["parse_s"] = round(time.perf_counter() - t0, 1)
    ts = TuneSet.from_tunes(tunes, stats)
    ts.save(path)
    return ts


def features(tokens: np.ndarray, meter: str, n_bars: int) -> tuple[np.ndarray, np.ndarray]:
    """Per token, the position in the bar after it (sixteenths, clipped) and the bars to go after it."""
    pos = np.zeros(len(tokens), np.int64)
    rem = np.zeros(len(tokens), np.int64)
    p, done = 0, 0
    for i, t in enumerate(tokens):
        if t == BAR:
            p, done = 0, done + 1
        elif t >= DUR0:
            p += DUR_UNITS[t - DUR0]
        pos[i] = min(p, MAX_POS - 1)
        rem[i] = min(max(n_bars - done - 1, 0), MAX_REM)
    return pos, rem


# --- the model --------------------------------------------------------------------------------------------

@dataclass
class TuneLSTMConfig:
    n_embd: int = 96
    n_hidden: int = 256
    n_layer: int = 2
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class TuneLSTM(nn.Module):
    """Token + conditioning (mode, meter, tempo, length) + position-in-bar + bars-to-go embeddings, summed, into a
    stacked LSTM and a linear head over the token vocabulary."""

    def __init__(self, config: TuneLSTMConfig) -> None:
        super().__init__()
        self.config = config
        e = config.n_embd
        self.wte = nn.Embedding(VOCAB, e)
        self.mode = nn.Embedding(len(MODES), e)
        self.meter = nn.Embedding(len(METERS), e)
        self.tempo = nn.Embedding(len(TEMPOS), e)
        self.length = nn.Embedding(len(LENGTHS), e)
        self.pos = nn.Embedding(MAX_POS, e)
        self.rem = nn.Embedding(MAX_REM + 1, e)
        self.lstm = nn.LSTM(e, config.n_hidden, config.n_layer, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.n_hidden, VOCAB)

    def forward(self, idx: torch.Tensor, cond: torch.Tensor, pos: torch.Tensor, rem: torch.Tensor,
                targets: torch.Tensor | None = None, state=None):
        """idx, pos, rem (B, T), cond (B, 4) -> logits (B, T, V), mean cross-entropy (targets -1 ignored), state."""
        c = self.mode(cond[:, 0]) + self.meter(cond[:, 1]) + self.tempo(cond[:, 2]) + self.length(cond[:, 3])
        x = self.wte(idx) + c[:, None] + self.pos(pos) + self.rem(rem)
        h, state = self.lstm(self.drop(x), state)
        logits = self.head(self.drop(h))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-1)
        return logits, loss, state

    @torch.no_grad()
    def generate(self, mode: str, meter: str, tempo: str, n_bars: int, seed: int | None = None,
                 temperature: float = 1.0, top_k: int | None = None,
                 callback: Callable[[int], bool | None] | None = None, in_key: bool = False
                 ) -> list[list[tuple[int | None, int]]]:
        """A tune of `n_bars` full bars (notes as (midi or None, sixteenths), tonic C). Bar lines and the end are
        placed by the grammar; only pitches and durations that fit the bar are sampled, and with `in_key` only
        pitches of the mode's scale (`SCALES`). `callback(bars_done)` after each bar; returning True stops
        early."""
        self.eval()
        pitch_ok = np.zeros(VOCAB, bool)
        pitch_ok[REST] = True
        for t in range(PITCH0, DUR0):
            pitch_ok[t] = not in_key or (t - PITCH0 + LOW) % 12 in SCALES[mode]
        rng = np.random.default_rng(seed)
        bar_units = BAR_UNITS.get(meter, 16)
        # a moderate tempo is asked as "unknown": only 4 training tunes say "moderate", most (87%) say nothing
        tempo = "unknown" if tempo == "moderate" else tempo
        cond = torch.tensor([[MODES.index(mode), METERS.index(meter), TEMPOS.index(tempo), length_class(n_bars)]])
        dev = self.head.weight.device
        cond = cond.to(dev)
        bars: list[list[tuple[int | None, int]]] = [[]]
        tok, p, state = BOS, 0, None
        pitch: int | None = None
        while True:
            rem = min(max(n_bars - len(bars), 0), MAX_REM)
            logits, _, state = self(torch.tensor([[tok]], device=dev), cond, torch.tensor([[min(p, MAX_POS - 1)]],
                                    device=dev), torch.tensor([[rem]], device=dev), state=state)
            z = logits[0, -1].double().cpu().numpy()
            allowed = np.full(VOCAB, -np.inf)
            if tok >= PITCH0 and tok < DUR0 or tok == REST:  # a duration that fits what is left of the bar
                fits = [DUR0 + j for j, u in enumerate(DUR_UNITS) if u <= bar_units - p]
                allowed[fits] = 0.0
            else:
                allowed[pitch_ok] = 0.0
            tok = int(sample_logits((z + allowed)[None], rng, temperature, top_k)[0])
            if tok < DUR0:
                pitch = None if tok == REST else tok - PITCH0 + LOW
                continue
            units = DUR_UNITS[tok - DUR0]
            bars[-1].append((pitch, units))
            p += units
            if p >= bar_units:
                if callback is not None and callback(len(bars)):
                    return bars
                if len(bars) >= n_bars:
                    return bars
                # the forced bar line: run it through the model so its state sees it, as in training
                logits, _, state = self(torch.tensor([[tok]], device=dev), cond, torch.tensor(
                    [[min(p, MAX_POS - 1)]], device=dev), torch.tensor([[rem]], device=dev), state=state)
                tok, p = BAR, 0
                bars.append([])


# --- prompts ----------------------------------------------------------------------------------------------

PITCH_CLASSES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MOODS = {  # word -> (mode, tempo)
    "sad": ("minor", "slow"), "melancholy": ("minor", "slow"), "gloomy": ("minor", "slow"),
    "dark": ("minor", None), "mournful": ("minor", "slow"), "happy": ("major", "fast"), "cheerful": ("major", "fast"),
    "joyful": ("major", "fast"), "bright": ("major", None), "calm": (None, "slow"), "peaceful": (None, "slow"),
    "gentle": (None, "slow"), "lively": (None, "fast"), "energetic": (None, "fast"), "upbeat": ("major", "fast"),
}
TUNE_TYPES = {"waltz": "3/4", "minuet": "3/4", "mazurka": "3/4", "jig": "6/8", "march": "2/4", "polka": "2/4",
              "reel": "4/4", "hornpipe": "4/4", "hymn": "4/4"}
TEMPO_WORDS = {"slow": "slow", "slowly": "slow", "fast": "fast", "quick": "fast", "quickly": "fast",
               "moderate": "moderate", "medium": "moderate"}
BPM = {"slow": 72, "moderate": 104, "fast": 144, "unknown": 104}
FILLER = frozenset("a an the in of with and or me play some please tune song melody music piece little bit for "
                   "key time that is very".split())


@dataclass
class TuneRequest:
    """What a prompt asked for, with defaults filled in."""

    tonic: int = 0
    mode: str = "major"
    meter: str = "4/4"
    tempo: str = "moderate"
    bpm: int = 104
    n_bars: int = 16
    kind: str = "tune"  # waltz, jig, ... when named

    def describe(self) -> str:
        pace = f"{self.tempo} " if self.tempo in ("slow", "fast") else ""
        return (f"a {pace}{self.kind} in {NAMES[self.tonic]} {self.mode}, {self.meter}, {self.bpm} bpm, "
                f"{self.n_bars} bars")


def parse_prompt(prompt: str, rng: np.random.Generator | None = None) -> tuple[TuneRequest, list[str], list[str]]:
    """(request, defaults picked, words ignored) for a prompt like "a sad waltz in D minor, slow, 16 bars"."""
    rng = rng or np.random.default_rng(0)
    text = prompt.strip()
    req = TuneRequest()
    got: set[str] = set()
    used: set[int] = set()  # character offsets of words understood
    tempo_word = None

    def take(m: re.Match) -> None:
        used.update(range(m.start(), m.end()))

    for m in re.finditer(r"\b(\d{2,3})\s*bpm\b", text, re.I):
        req.bpm, tempo_word = max(30, min(int(m.group(1)), 240)), "bpm"
        take(m)
    for m in re.finditer(r"\b(\d{1,2})\s*(bars?|measures?)\b", text, re.I):
        req.n_bars = max(2, min(int(m.group(1)), 48))
        got.add("bars")
        take(m)
    for m in re.finditer(r"\b(\d)/(\d)\b", text):
        if meter_class(m.group(0)) in BAR_UNITS:  # 5/4, 7/8 ...: not a meter the model knows; left as ignored
            req.meter = meter_class(m.group(0))
            got.add("meter")
            take(m)
    # a key: a capital letter with an accidental or a mode ("Bb", "D minor", "Am"), or after "in" / "key (of)";
    # the first such, so that a sentence's opening "A" is not taken for A major
    km = next((k for k in re.finditer(
        r"(?<![A-Za-z])([A-G])([#b]|\s*sharp|\s*flat)?\s*(major|minor|maj|min|m)?(?![A-Za-z#])", text)
        if k.group(3) or k.group(2) or re.search(r"\bin\s*$|\bkey\s*(of\s*)?$", text[: k.start()], re.I)), None)
    if km:
        acc = (km.group(2) or "").strip()
        step = 1 if acc in ("#", "sharp") else -1 if acc in ("b", "flat") else 0
        req.tonic = (PITCH_CLASSES[km.group(1)] + step) % 12
        got.add("key")
        if km.group(3):
            req.mode = "major" if km.group(3).startswith("maj") else "minor"
            got.add("mode")
        take(km)
    for m in re.finditer(r"[A-Za-z']+", text):
        w = m.group(0).lower()
        if w in ("major", "minor") and "mode" not in got:
            req.mode = w
            got.add("mode")
        elif w in MOODS:
            mode, tempo = MOODS[w]
            if mode and "mode" not in got:
                req.mode = mode
                got.add("mode")
            if tempo and tempo_word is None:
                req.tempo, tempo_word = tempo, w
        elif w in TUNE_TYPES:
            req.kind = w
            if "meter" not in got:
                req.meter = TUNE_TYPES[w]
                got.add("meter")
            if w in ("jig", "reel", "polka", "hornpipe") and tempo_word is None:
                req.tempo, tempo_word = "fast", w
        elif w in TEMPO_WORDS:
            if tempo_word != "bpm":  # an explicit bpm wins
                req.tempo, tempo_word = TEMPO_WORDS[w], w
        elif w not in FILLER and w not in ("bpm", "bar", "bars", "measures", "sharp", "flat"):
            continue
        take(m)
    if tempo_word == "bpm":
        req.tempo = tempo_class(req.bpm, "")
    else:
        req.bpm = BPM[req.tempo]
    defaults = []
    if "key" not in got:
        req.tonic = int(rng.choice([0, 2, 7, 9, 5, 4]))
        defaults.append(f"key {NAMES[req.tonic]}")
    if "mode" not in got:
        req.mode = "major" if "key" in got or rng.random() < 0.6 else "minor"  # "in G" means G major
        defaults.append(req.mode)
    if "meter" not in got:
        req.meter = str(rng.choice(["4/4", "3/4", "6/8", "2/4"]))
        defaults.append(req.meter)
    if tempo_word is None:
        defaults.append(f"{req.bpm} bpm")
    if "bars" not in got:
        defaults.append(f"{req.n_bars} bars")
    ignored = [m.group(0) for m in re.finditer(r"[^\s,.;:!?]+", text)
               if not any(i in used for i in range(m.start(), m.end())) and m.group(0).lower() not in FILLER]
    return req, defaults, ignored


# --- accompaniment, audio and score -----------------------------------------------------------------------

CHORDS = {"major": ((0, 4, 7), (5, 9, 0), (7, 11, 2), (9, 0, 4), (2, 5, 9)),
          "minor": ((0, 3, 7), (5, 8, 0), (7, 11, 2), (3, 7, 10), (8, 0, 3), (10, 2, 5))}


def harmonize(bars: list[list[tuple[int | None, int]]], mode: str, meter: str
              ) -> list[list[tuple[tuple[int, ...], int]]]:
    """Per bar, (triad as pitch classes relative to the tonic, sixteenths) segments: a half bar in 4/4 and 6/8,
    else a bar; the triad that covers most of the segment's melody (downbeats weigh double, earlier chords in
    the list win ties), the last one on the tonic, the one before it on the dominant unless it is the tonic."""
    table = CHORDS[mode]
    per = BAR_UNITS.get(meter, 16) // (2 if meter in ("4/4", "6/8") else 1)
    out: list[list[list]] = []
    for bar in bars:
        t, cur = 0, {}  # type: ignore[var-annotated]
        for midi, units in bar:
            if midi is not None:
                seg = cur.setdefault(t // per, {})
                seg[midi % 12] = seg.get(midi % 12, 0) + units * (2 if t % per == 0 else 1)
            t += units
        segs = []
        for s in range(max(1, -(-t // per))):
            weights = cur.get(s, {})
            scores = [sum(weights.get(pc, 0) for pc in ch) - 0.1 * i for i, ch in enumerate(table)]
            segs.append([table[int(np.argmax(scores))], min(per, t - s * per)])
        out.append(segs)
    flat = [seg for segs in out for seg in segs]
    if flat:
        flat[-1][0] = table[0]
        if len(flat) > 1 and flat[-2][0] != table[0]:
            flat[-2][0] = table[2]
    return [[(ch, u) for ch, u in segs] for segs in out]


def transpose(bars: list[list[tuple[int | None, int]]], tonic: int) -> list[list[tuple[int | None, int]]]:
    shift = (tonic + 6) % 12 - 6  # the nearest octave, so tunes stay in a singable range
    return [[(None if m is None else m + shift, u) for m, u in bar] for bar in bars]


def tone(midi: float, seconds: float, sr: int, gain: float, bright: float = 1.0) -> np.ndarray:
    """A plucked-organ tone: six harmonics falling as 1/k^1.5, 10 ms attack, exponential decay, 30 ms release."""
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    wave = sum((1 / k**1.5) * bright ** (k - 1) * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 7)
               if k * f0 < sr / 2)
    env = np.minimum(1.0, t / 0.01) * (0.35 + 0.65 * np.exp(-t * 3.0)) * np.minimum(1.0, (seconds - t) / 0.03)
    return gain * wave * np.clip(env, 0, 1)


def render(bars: list[list[tuple[int | None, int]]], chords: list[list[tuple[tuple[int, ...], int]]] | None, tonic: int,
           bpm: int, sr: int = 22050, melody: np.ndarray | None = None) -> np.ndarray:
    """Melody (already in its key) plus, when `chords` are given (triads relative to the tonic, from `harmonize`), a
    bass on the root and a soft triad; mono float audio in [-1, 1]. `melody`: the melody line already rendered at
    `sr` (by the WaveNet instrument, models.own.instrument), mixed in instead of the synthesized one."""
    sixteenth = 60.0 / bpm / 4
    total = sum(u for bar in bars for _, u in bar)
    audio = np.zeros(int((total * sixteenth + 0.5) * sr))
    if melody is not None:
        n = min(len(audio), len(melody))
        audio[:n] += melody[:n]
    t = 0
    for bar in bars if melody is None else ():
        for midi, units in bar:
            if midi is not None:
                x = tone(midi, units * sixteenth, sr, 0.5)
                i = int(t * sixteenth * sr)
                audio[i : i + len(x)] += x
            t += units
    if chords:
        t = 0
        for bar_chords in chords:
            for triad, units in bar_chords:
                pc = (triad[0] + tonic) % 12
                x = tone(36 + pc if pc < 8 else 24 + pc, units * sixteenth, sr, 0.35, bright=0.7)
                for iv in triad:
                    x = x + tone(48 + (iv + tonic) % 12, units * sixteenth, sr, 0.06, bright=0.5)
                i = int(t * sixteenth * sr)
                audio[i : i + len(x)] += x[: len(audio) - i]
                t += units
    peak = np.abs(audio).max()
    return audio / peak * 0.9 if peak > 0 else audio


def note_name(midi: int | None) -> str:
    return "r" if midi is None else f"{NAMES[midi % 12]}{midi // 12 - 1}"


def notes_text(bars: list[list[tuple[int | None, int]]], limit: int = 1400) -> str:
    """Note names per bar ("C5 D5 E5 | ..."), durations left out, cut to `limit` characters."""
    text = " | ".join(" ".join(note_name(m) for m, _ in bar) for bar in bars)
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + " …"


def midi_bytes(bars: list[list[tuple[int | None, int]]], chords: list[list[tuple[tuple[int, ...], int]]] | None,
               tonic: int, mode: str, meter: str, bpm: int) -> bytes:
    """The score (melody, and the bass and triads when given) as a standard MIDI file, written by music21."""
    from music21 import chord, key, midi, note, stream, tempo
    from music21 import meter as m21meter

    score = stream.Score()
    melody = stream.Part()
    melody.append(tempo.MetronomeMark(number=bpm))
    if meter in BAR_UNITS:
        melody.append(m21meter.TimeSignature(meter))
    melody.append(key.Key(NAMES[tonic], mode))
    for bar in bars:
        for m, units in bar:
            melody.append(note.Rest(quarterLength=units / 4) if m is None else note.Note(m, quarterLength=units / 4))
    score.insert(0, melody)
    if chords:
        acc = stream.Part()
        for bar_chords in chords:
            for triad, units in bar_chords:
                pc = (triad[0] + tonic) % 12
                pitches = [36 + pc if pc < 8 else 24 + pc] + [48 + (iv + tonic) % 12 for iv in triad]
                acc.append(chord.Chord(pitches, quarterLength=units / 4))
        score.insert(0, acc)
    mf = midi.translate.streamToMidiFile(score)
    return mf.writestr()


@dataclass
class Played:
    """A generated tune, ready to deliver."""

    request: TuneRequest
    bars: list[list[tuple[int | None, int]]]  # in the asked key
    chords: list[list[tuple[tuple[int, ...], int]]]
    audio: np.ndarray
    sample_rate: int
    midi: bytes
    instrument: str = "synthesizer"  # what played the melody: "synthesizer" or "wavenet"
    melody: np.ndarray | None = None  # the WaveNet's melody line alone, when it played


def play(model: TuneLSTM, req: TuneRequest, seed: int, temperature: float = 1.0, sr: int = 22050,
         callback: Callable[[int], bool | None] | None = None, in_key: bool = True, instrument: Any = None,
         instrument_callback: Callable[[int, int], bool | None] | None = None,
         instrument_temperature: float = 1.0) -> Played:
    """Sample a tune for `req` (kept to the mode's scale unless `in_key` is False), harmonize it, render it and
    write its score. With `instrument` (a locally conditioned WaveNet, models.own.instrument) the melody is played
    by it, at its sample rate, and mixed with the synthesized bass and chords; `instrument_callback(done, total)`
    every tenth of a second of audio, returning True to stop (the rest of the melody line stays silent)."""
    bars_c = model.generate(req.mode, req.meter, req.tempo, req.n_bars, seed=seed, temperature=temperature,
                            callback=callback, in_key=in_key)
    chords = harmonize(bars_c, req.mode, req.meter)
    bars = transpose(bars_c, req.tonic)
    midi = midi_bytes(bars, chords, req.tonic, req.mode, req.meter, req.bpm)
    if instrument is None:
        return Played(req, bars, chords, render(bars, chords, req.tonic, req.bpm, sr), sr, midi)
    from models.own import instrument as wavenet_instrument

    sr = instrument.config.sample_rate
    notes = wavenet_instrument.notes_from_bars(bars, req.bpm, sr)
    line = wavenet_instrument.play(instrument, notes, seed=seed, temperature=instrument_temperature,
                                   callback=instrument_callback, every=sr // 10)
    audio = render(bars, chords, req.tonic, req.bpm, sr, melody=line)
    return Played(req, bars, chords, audio, sr, midi, instrument="wavenet", melody=line)


# --- checks and baselines ---------------------------------------------------------------------------------

def key_of(bars: list[list[tuple[int | None, int]]]) -> tuple[int, str]:
    """music21's key estimate (tonic pitch class, mode) of a melody."""
    from music21 import note, stream

    s: Any = stream.Stream()
    for bar in bars:
        for m, units in bar:
            s.append(note.Rest(quarterLength=units / 4) if m is None else note.Note(m, quarterLength=units / 4))
    k = s.analyze("key")
    return k.tonic.pitchClass, k.mode


def pitch_match(bars: list[list[tuple[int | None, int]]], bpm: int, sr: int = 22050, edge_s: float = 0.05,
                audio: np.ndarray | None = None) -> tuple[int, int]:
    """(frames within a quarter tone of the written note, note frames) of `audio` (default: the melody-only
    render of `bars`), by librosa's pyin; frames within `edge_s` of a note's start or end are not counted
    (onsets and releases), unvoiced frames count as misses."""
    import librosa

    if audio is None:
        audio = render(bars, None, 0, bpm, sr)
    hop = 256
    f0, _, _ = librosa.pyin(audio, fmin=80, fmax=2000, sr=sr, frame_length=2048, hop_length=hop)
    times = librosa.times_like(f0, sr=sr, hop_length=hop)
    sixteenth = 60.0 / bpm / 4
    ok = total = 0
    t = 0
    for bar in bars:
        for m, units in bar:
            start, end = t * sixteenth + edge_s, (t + units) * sixteenth - edge_s
            t += units
            if m is None or end <= start:
                continue
            sel = (times >= start) & (times <= end)
            cents = 1200 * np.log2(np.where(np.isnan(f0[sel]), 1e-9, f0[sel]) / (440.0 * 2 ** ((m - 69) / 12)))
            ok += int((np.abs(cents) <= 50).sum())
            total += int(sel.sum())
    return ok, total


class TrigramModel:
    """An interpolated Witten-Bell 3-gram over the token stream, fitted on the training tunes."""

    def __init__(self, seqs: list[np.ndarray]) -> None:
        from collections import Counter

        self.c1: Counter = Counter()
        self.c2: Counter = Counter()
        self.c3: Counter = Counter()
        for seq in seqs:
            s = [int(x) for x in seq]
            for i in range(1, len(s)):
                self.c1[s[i]] += 1
                self.c2[(s[i - 1], s[i])] += 1
                if i >= 2:
                    self.c3[(s[i - 2], s[i - 1], s[i])] += 1
        self.n1 = sum(self.c1.values())
        self.h1: Counter = Counter()
        self.t1: Counter = Counter()
        for (a, _), c in self.c2.items():
            self.h1[a] += c
            self.t1[a] += 1
        self.h2: Counter = Counter()
        self.t2: Counter = Counter()
        for (a, b, _), c in self.c3.items():
            self.h2[(a, b)] += c
            self.t2[(a, b)] += 1

    def prob(self, a: int | None, b: int, x: int) -> float:
        p = (self.c1[x] + 1) / (self.n1 + VOCAB)  # add-one unigram: nothing has zero probability
        n, t = self.h1[b], self.t1[b]
        if n:
            p = (self.c2[(b, x)] + t * p) / (n + t)
        if a is not None:
            n, t = self.h2[(a, b)], self.t2[(a, b)]
            if n:
                p = (self.c3[(a, b, x)] + t * p) / (n + t)
        return p

    def nll_bits(self, seq: np.ndarray) -> float:
        s = [int(x) for x in seq]
        return -sum(math.log2(self.prob(s[i - 2] if i >= 2 else None, s[i - 1], s[i])) for i in range(1, len(s)))


def n_notes(s: np.ndarray) -> int:
    return int(((s >= DUR0)).sum())


@torch.no_grad()
def model_nll_bits(model: TuneLSTM, ts: TuneSet, idx: np.ndarray) -> float:
    """Total bits the model gives the tokens of tunes `idx` (each scored whole, after BOS)."""
    model.eval()
    dev = model.head.weight.device
    total = 0.0
    for i in idx:
        s = ts.seq(int(i))
        meter = METERS[int(ts.cond[i, 1])]
        pos, rem = features(s, meter, int(ts.n_bars[i]))
        x = torch.as_tensor(s[None, :-1], device=dev)
        logits, _, _ = model(x, torch.as_tensor(ts.cond[i][None], device=dev),
                             torch.as_tensor(pos[None, :-1], device=dev), torch.as_tensor(rem[None, :-1], device=dev))
        total += F.cross_entropy(logits[0], torch.as_tensor(s[1:], device=dev), reduction="sum").item() / math.log(2)
    return total


def piano_roll_png(bars: list[list[tuple[int | None, int]]], path: Path, scale: int = 6) -> None:
    """The melody as a piano roll (time across, pitch up), bar lines grey."""
    from PIL import Image, ImageDraw

    notes = [m for bar in bars for m, _ in bar if m is not None]
    lo, hi = (min(notes) - 2, max(notes) + 2) if notes else (60, 72)
    total = sum(u for bar in bars for _, u in bar)
    img = Image.new("RGB", (total * scale + 2, (hi - lo + 1) * scale + 2), "white")
    d = ImageDraw.Draw(img)
    t = 0
    for bar in bars:
        d.line([(t * scale, 0), (t * scale, img.height)], fill=(200, 200, 200))
        for m, u in bar:
            if m is not None:
                y = (hi - m) * scale
                d.rectangle([t * scale + 1, y, (t + u) * scale - 1, y + scale - 1], fill=(30, 90, 200))
            t += u
    img.save(path)
