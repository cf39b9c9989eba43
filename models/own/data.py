"""The datasets natty's own models train on, all of which the project may redistribute.

- digits: scikit-learn's bundled copy of the UCI optical handwritten digits (8x8, grey levels 0..16, CC BY 4.0),
  kept at 17 discrete levels.
- corpus: `models/own/data/corpus.txt`, original prose and verse written for natty: hand-written passages plus
  sentences from a small grammar, produced by `python -m models.own.data corpus` (deterministic).
- tones: sine tones and triads with a few harmonics at 16 kHz, synthesized here from a seed.

Held-out splits are fixed (seed 0) so that `natty eval` measures the same data whatever the training seed.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).with_name("data")
CORPUS = DATA_DIR / "corpus.txt"
SAMPLE_RATE = 16000
SOUND_KINDS = ("tone", "chord")  # the WaveNet's global-conditioning classes


# --- digits -----------------------------------------------------------------------------------------------

def load_digits_split(val_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, val_x, val_y): x is (N, 8, 8) int64 levels 0..16, y the digit."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.int64)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    n_val = int(len(x) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


# --- text ---------------------------------------------------------------------------------------------------

def load_text(path: str | Path = CORPUS, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, val): the last `val_fraction` of the file is held out."""
    text = Path(path).read_text(encoding="utf-8")
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


_PASSAGES = [
    """The lighthouse keeper counted the boats every evening, not because anyone asked him to, but because the
counting made the harbour feel finished. Seven boats meant a quiet night. Six meant he would keep the lamp
turning a little longer and listen for an engine under the wind.""",
    """In the town by the river there was a bakery that opened before the birds. The baker sang while she worked,
always the same three songs, and the people who walked past in the dark could tell the hour by which song
they heard through the window.""",
    """A map is a promise that the world will hold still long enough to be walked. Most maps keep that promise
for a while. The old ones, folded and soft at the creases, remember roads that the rain has since taken
back.""",
    """The robot in the garden had been built to pull weeds, and it did so with great care. When it found a
flower it did not know, it stopped, took a photograph, and waited for someone to tell it what to do. Nobody
ever did, so the garden slowly filled with flowers it did not know.""",
    """Winter came early that year. The lake froze in a single night, clear as a window, and in the morning the
children lay on the ice and looked down at the fish moving slowly in the green light below them.""",
    """She kept a notebook of small things: the colour of the sky at four o'clock, the sound a kettle makes just
before it sings, the name of every dog she met. When the notebook was full she started another, and the
shelf of notebooks grew into a quiet history of ordinary days.""",
    """The train left the city at midnight and ran all night through the hills. In the dining car a man played
cards against himself and lost, and laughed each time, and dealt again.""",
    """Old bridges know the weight of everything that has crossed them. They creak a little when the carts go
over, not in complaint but in memory, the way a grandmother hums a tune without knowing she is doing it.""",
]

_POEMS = [
    """The rain is writing on the roof
a letter no one asked it for,
and I, who have no better proof
of morning, listen at the door.""",
    """Slow river, carry what you can:
a leaf, a feather, half a plan,
the shadow of a passing crow,
and all the names I used to know.""",
    """Under the lamp the moths are dancing,
under the moon the tide is advancing,
under the hill the village is sleeping,
and under the quiet, the clocks are keeping.""",
    """I planted a word in the garden
and watered it every day;
it grew into a sentence
and walked itself away.""",
]

_WORDS = {
    "adj": "quiet old small bright cold green golden patient distant gentle silver hidden narrow warm tired "
           "careful sudden wild empty little".split(),
    "noun": "river garden lantern harbour window mountain village forest letter kettle bridge orchard sparrow "
            "engine library station meadow compass candle island".split(),
    "person": "the baker|the sailor|the old teacher|my grandmother|the keeper|a stranger|the children|the "
              "gardener|the clockmaker|a traveller|the fisherman|the girl with the red scarf".split("|"),
    "verb": "watched|followed|remembered|carried|painted|mended|counted|opened|crossed|found|lost|forgot|"
            "named|visited".split("|"),
    "intrans": "waited|listened|laughed|slept|wandered|sang|whispered|stayed|hurried home|sat very "
               "still".split("|"),
    "place": "by the river|in the orchard|under the bridge|at the edge of the forest|near the harbour|on the "
             "hill|in the old library|behind the station|across the meadow|inside the lighthouse".split("|"),
    "time": "In the morning|At dusk|Long ago|Every winter|Before the rain|After supper|On the first day of "
            "spring|When the bells rang|At midnight|All afternoon".split("|"),
    "feeling": "the world was larger than it looked|nothing had really changed|the day was not yet "
               "finished|someone was thinking of them|the road would be kind|the stars were listening|it was "
               "good to be home|every door could open".split("|"),
}


def _sentence(r: random.Random) -> str:
    w = {k: r.choice(v) for k, v in _WORDS.items()}
    a, n = r.choice(_WORDS["adj"]), r.choice(_WORDS["noun"])
    templates = [
        f"{w['time']}, {w['person']} {w['verb']} the {w['adj']} {w['noun']} {w['place']}.",
        f"{w['person'].capitalize()} {w['intrans']} {w['place']}, and felt that {w['feeling']}.",
        f"The {w['adj']} {w['noun']} was {w['place']}, where {w['person']} had left it.",
        f"{w['time']}, the {w['noun']} and the {n} were {a} and {w['adj']}.",
        f"Nobody {w['verb']} the {w['noun']}, but {w['person']} {w['intrans']} anyway.",
        f"\"Look at the {w['adj']} {w['noun']},\" said {w['person']}. \"It is {a} today.\"",
        f"{w['person'].capitalize()} believed that {w['feeling']}.",
        f"There was a {w['adj']} {w['noun']} {w['place']}, and it was {a} as a {n}.",
    ]
    return r.choice(templates)


def _stanza(r: random.Random) -> str:
    lines = []
    for _ in range(4):
        w = {k: r.choice(v) for k, v in _WORDS.items()}
        lines.append(r.choice([
            f"the {w['adj']} {w['noun']} {w['place']}",
            f"{w['person']} {w['intrans']}",
            f"{w['time'].lower()}, {w['feeling']}",
            f"and {w['adj']} is the {w['noun']}",
        ]))
    lines[0] = lines[0][0].upper() + lines[0][1:]
    return ",\n".join(lines) + "."


def make_corpus(n_chars: int = 200_000, seed: int = 0) -> str:
    """Original text for the char-RNN: the hand-written pieces, then generated paragraphs and stanzas."""
    r = random.Random(seed)
    parts = _PASSAGES + _POEMS
    size = sum(len(p) for p in parts)
    while size < n_chars:
        if r.random() < 0.25:
            piece = _stanza(r)
        elif r.random() < 0.1:
            piece = r.choice(_PASSAGES + _POEMS)
        else:
            piece = " ".join(_sentence(r) for _ in range(r.randint(3, 6)))
        parts.append(piece)
        size += len(piece) + 2
    return "\n\n".join(parts) + "\n"


# --- audio --------------------------------------------------------------------------------------------------

_SCALE = [0, 2, 4, 5, 7, 9, 11]  # major scale steps
_TRIADS = ([0, 4, 7], [0, 3, 7])  # major, minor


def synth(
    kind: str, rng: np.random.Generator, seconds: float = 1.0, sr: int = SAMPLE_RATE,
    root: int | None = None, minor: bool | None = None,
) -> np.ndarray:
    """One note ("tone") or triad ("chord") with soft harmonics and an attack-decay envelope, in [-1, 1].

    `root` is a MIDI note (random in A3..G#5 when None); `minor` picks the triad (random when None).
    """
    pick_root = 57 + int(rng.choice(_SCALE)) + 12 * int(rng.integers(0, 2))
    pick_minor = bool(rng.integers(0, 2))
    root = pick_root if root is None else root
    minor = pick_minor if minor is None else minor
    notes = [root] if kind == "tone" else [root + s for s in _TRIADS[int(minor)]]
    t = np.arange(int(seconds * sr)) / sr
    wave = np.zeros_like(t)
    for note in notes:
        f = 440.0 * 2 ** ((note - 69) / 12)
        phase = rng.uniform(0, 2 * np.pi)
        for harmonic, amp in ((1, 1.0), (2, 0.4), (3, 0.15)):
            wave += amp * np.sin(2 * np.pi * f * harmonic * t + phase * harmonic)
    env = np.minimum(t / 0.01, 1.0) * np.exp(-t * rng.uniform(0.5, 2.0))
    wave *= env / np.abs(wave).max() * rng.uniform(0.4, 0.7)
    return wave.astype(np.float32)


def make_tones(n_clips: int, seed: int, seconds: float = 1.0) -> tuple[list[np.ndarray], list[int]]:
    """(clips, kinds): `n_clips` synthesized clips alternating tone and chord."""
    rng = np.random.default_rng(seed)
    kinds = [i % len(SOUND_KINDS) for i in range(n_clips)]
    return [synth(SOUND_KINDS[k], rng, seconds) for k in kinds], kinds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.own.data", description="Write natty's training data.")
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("corpus", help="write models/own/data/corpus.txt")
    c.add_argument("--out", default=str(CORPUS))
    c.add_argument("--chars", type=int, default=200_000)
    t = sub.add_parser("tones", help="write synthesized clips as 16 kHz WAV files")
    t.add_argument("--out", required=True)
    t.add_argument("--clips", type=int, default=20)
    t.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.what == "corpus":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(make_corpus(args.chars), encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        import soundfile as sf

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        clips, kinds = make_tones(args.clips, args.seed)
        for i, (clip, k) in enumerate(zip(clips, kinds, strict=True)):
            sf.write(out / f"{i:03d}_{SOUND_KINDS[k]}.wav", clip, SAMPLE_RATE)
        print(f"wrote {len(clips)} clips to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
