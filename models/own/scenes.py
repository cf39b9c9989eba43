"""Simple scenes for the scene PixelCNN: the procedural data set, its attribute tokens, and the prompt parser.

A scene is one or two objects on a 32 x 32 canvas. Each object has a shape (circle, square, triangle, star,
heart, a letter A-Z or a digit 0-9, the glyphs drawn with the font Pillow ships, `ImageFont.load_default`), a
colour from a small palette, and a slot: centre, left, right, top or bottom (two objects take left and right,
or top and bottom). Pixels are palette indices (0 is the white background), so the model's output is a softmax
over palette entries.

The model is conditioned on tokens, one per (slot, shape) and per (slot, colour) of each object: binding the
attributes to the slot keeps "a red star above a blue circle" apart from "a blue star above a red circle".
`parse_prompt` maps words to a scene and says what it understood and which words it ignored.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass

import numpy as np

SIZE = 32
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("white", (255, 255, 255)),  # the background; objects are never white
    ("black", (25, 25, 25)),
    ("red", (220, 40, 40)),
    ("orange", (245, 140, 20)),
    ("yellow", (235, 200, 20)),
    ("green", (40, 165, 60)),
    ("blue", (40, 90, 220)),
    ("purple", (140, 60, 190)),
)
COLOURS = tuple(name for name, _ in PALETTE[1:])
FIGURES = ("circle", "square", "triangle", "star", "heart")
LETTERS = tuple(string.ascii_uppercase)
DIGITS = tuple(string.digits)
SHAPES = FIGURES + LETTERS + DIGITS
SLOTS = ("centre", "left", "right", "top", "bottom")
N_TOKENS = len(SLOTS) * (len(SHAPES) + len(COLOURS))
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


@dataclass(frozen=True)
class Obj:
    shape: str  # one of SHAPES
    colour: str  # one of COLOURS
    slot: str  # one of SLOTS


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]  # one, or two in opposite slots

    def tokens(self) -> np.ndarray:
        """The multi-hot conditioning vector (N_TOKENS,): each object's (slot, shape) and (slot, colour)."""
        v = np.zeros(N_TOKENS, np.float32)
        per_slot = len(SHAPES) + len(COLOURS)
        for o in self.objects:
            base = SLOTS.index(o.slot) * per_slot
            v[base + SHAPES.index(o.shape)] = 1
            v[base + len(SHAPES) + COLOURS.index(o.colour)] = 1
        return v

    def describe(self) -> str:
        """The scene in words, e.g. "a red star above a blue circle"."""
        if len(self.objects) == 1:
            (o,) = self.objects
            where = {"centre": "", "left": " on the left", "right": " on the right", "top": " at the top",
                     "bottom": " at the bottom"}[o.slot]
            return _name(o) + where
        a, b = self.objects
        rel = {"left": "left of", "right": "right of", "top": "above", "bottom": "below"}[a.slot]
        return f"{_name(a)} {rel} {_name(b)}"


def _name(o: Obj) -> str:
    if o.shape in LETTERS:
        what = f"letter {o.shape}"
    elif o.shape in DIGITS:
        what = f"digit {o.shape}"
    else:
        what = o.shape
    return f"{'an' if o.colour == 'orange' else 'a'} {o.colour} {what}"


# --- the data set ---------------------------------------------------------------------------------------------

def random_scene(rng: np.random.Generator) -> Scene:
    """One scene: half of them one object (centre 40%, else a side), half two objects side by side or stacked;
    each object a figure or a glyph with even odds."""
    def obj(slot: str) -> Obj:  # half figures, half glyphs: there are five figures and 36 glyphs
        pool = FIGURES if rng.random() < 0.5 else LETTERS + DIGITS
        return Obj(pool[int(rng.integers(len(pool)))], COLOURS[int(rng.integers(len(COLOURS)))], slot)

    if rng.random() < 0.5:
        slot = "centre" if rng.random() < 0.4 else SLOTS[1 + int(rng.integers(4))]
        return Scene((obj(slot),))
    first = ("left", "right", "top", "bottom")[int(rng.integers(4))]
    return Scene((obj(first), obj(OPPOSITE[first])))


_CENTRES = {"centre": (15.5, 15.5), "left": (8.5, 15.5), "right": (22.5, 15.5), "top": (15.5, 8.5),
            "bottom": (15.5, 22.5)}


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The scene as (SIZE, SIZE) palette indices, with a little random jitter in size and position."""
    from PIL import Image, ImageDraw

    img = Image.new("P", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(img)
    draw.fontmode = "1"  # no anti-aliasing: every pixel is one palette entry
    for o in scene.objects:
        cx, cy = _CENTRES[o.slot]
        big = o.slot == "centre"
        s = float(rng.uniform(16, 22) if big else rng.uniform(11, 13.5))
        j = 2.0 if big else 1.0
        cx, cy = cx + rng.uniform(-j, j), cy + rng.uniform(-j, j)
        _draw(draw, o.shape, cx, cy, s, 1 + COLOURS.index(o.colour))
    return np.asarray(img, dtype=np.uint8).copy()


def _draw(draw, shape: str, cx: float, cy: float, s: float, fill: int) -> None:
    r = s / 2
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        q = 0.85 * r
        draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill)
    elif shape == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r * 1.05, r * 0.45)
        draw.polygon(list(zip(cx + rad * np.cos(a), cy + 0.1 * r + rad * np.sin(a), strict=True)), fill=fill)
    elif shape == "heart":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        hx = 16 * np.sin(t) ** 3
        hy = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        k = r / 16.5
        draw.polygon(list(zip(cx + k * hx, cy + k * (hy + 2.5), strict=True)), fill=fill)
    else:  # a letter or digit, its ink's box centred on (cx, cy), cap height about s
        font = _font(max(6, round(s / _cap_ratio())))
        left, top, right, bottom = draw.textbbox((0, 0), shape, font=font)
        draw.text((cx - (left + right) / 2, cy - (top + bottom) / 2), shape, font=font, fill=fill)


@functools.lru_cache(maxsize=64)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (Aileron), no system fonts needed


@functools.lru_cache(maxsize=1)
def _cap_ratio() -> float:
    left, top, right, bottom = _font(100).getbbox("H")
    return (bottom - top) / 100


def make_batch(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[Scene]]:
    """n random scenes: images (n, SIZE, SIZE) int64, tokens (n, N_TOKENS) float32, and the scenes."""
    scenes = [random_scene(rng) for _ in range(n)]
    x = np.stack([render(s, rng) for s in scenes]).astype(np.int64)
    y = np.stack([s.tokens() for s in scenes])
    return x, y, scenes


def to_rgb(x: np.ndarray) -> np.ndarray:
    """Palette indices (..., H, W) as RGB (..., H, W, 3) uint8."""
    lut = np.array([rgb for _, rgb in PALETTE], np.uint8)
    return lut[np.clip(x, 0, len(PALETTE) - 1)]


def png_grid(x: np.ndarray, scale: int, cols: int = 4, rows_done: int | None = None) -> tuple[bytes, int, int]:
    """Images (B, H, W) of palette indices side by side in a PNG, nearest-neighbour upscaled; unsampled rows
    grey. Returns the PNG bytes, width and height."""
    import io

    from PIL import Image

    b, h, w = x.shape
    rgb = to_rgb(x)
    if rows_done is not None:
        rgb[:, rows_done:] = 200
    cols = min(b, cols)
    rows = -(-b // cols)
    sheet = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, 3), 255, np.uint8)
    sheet[:] = 160  # thin grey lines between images
    for i in range(b):
        r, c = divmod(i, cols)
        sheet[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = rgb[i]
    img = Image.fromarray(sheet, "RGB").resize((sheet.shape[1] * scale, sheet.shape[0] * scale),
                                               Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), img.width, img.height


# --- prompts --------------------------------------------------------------------------------------------------

CAN_DRAW = ("it draws circles, squares, triangles, stars, hearts, letters A-Z and digits 0-9 in red, orange, "
            "yellow, green, blue, purple or black, one or two of them; try: a red star above a blue circle")

_COLOUR_WORDS = {**{c: c for c in COLOURS}, "violet": "purple", "grey": None, "gray": None}
_FIGURE_WORDS = {"circle": "circle", "circles": "circle", "disc": "circle", "dot": "circle", "ring": "circle",
                 "square": "square", "squares": "square", "box": "square", "triangle": "triangle",
                 "triangles": "triangle", "star": "star", "stars": "star", "heart": "heart", "hearts": "heart"}
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_GLYPH_NOUNS = {"letter": LETTERS, "letters": LETTERS, "character": LETTERS, "digit": DIGITS, "number": DIGITS,
                "numeral": DIGITS}
# (words, what they mean): a relation puts the first object at that side of the second; a place puts a lone
# object there. Longest first, so "to the left of" wins over "left".
_RELATIONS = [(p.split(), side) for p, side in (
    ("to the left of", "left"), ("on the left of", "left"), ("left of", "left"),
    ("to the right of", "right"), ("on the right of", "right"), ("right of", "right"),
    ("on top of", "top"), ("above", "top"), ("over", "top"), ("atop", "top"),
    ("underneath", "bottom"), ("beneath", "bottom"), ("below", "bottom"), ("under", "bottom"),
    ("next to", "left"), ("beside", "left"), ("and", "left"), ("with", "left"),
)]
_PLACES = [(p.split(), slot) for p, slot in (
    ("on the left", "left"), ("at the left", "left"), ("to the left", "left"), ("left", "left"),
    ("on the right", "right"), ("at the right", "right"), ("to the right", "right"), ("right", "right"),
    ("at the top", "top"), ("on top", "top"), ("top", "top"),
    ("at the bottom", "bottom"), ("bottom", "bottom"),
    ("in the middle", "centre"), ("in the centre", "centre"), ("in the center", "centre"), ("middle", "centre"),
    ("centre", "centre"), ("center", "centre"),
)]
FILLER = frozenset("a an the of to on at in draw me please make picture image some and with".split())


@dataclass
class _Found:
    kind: str  # "object", "relation" or "place"
    start: int  # token span [start, end)
    end: int
    value: str  # the shape, side or slot
    colour: str | None = None
    colour_at: int | None = None  # the colour word's token index


def parse_prompt(text: str, rng: np.random.Generator | None = None) -> tuple[Scene | None, str, list[str]]:
    """The scene a prompt asks for, what was understood (the scene in words, "" when none) and the phrases that
    were ignored, in prompt order. A shape is needed; a colour not given is drawn from `rng`. At most two
    objects: a third one's words are ignored. With nothing drawable the scene is None."""
    rng = rng if rng is not None else np.random.default_rng(0)
    spans = [(m.group(), m.start(), m.end()) for m in re.finditer(r"[A-Za-z0-9]+", text)]
    words = [w.lower() for w, _, _ in spans]
    found: list[_Found] = []
    colour: tuple[str, int] | None = None
    i = 0
    while i < len(words):
        w = words[i]
        glyph = _glyph(text, spans, i)
        if w in _COLOUR_WORDS:
            c = _COLOUR_WORDS[w]
            colour = (c, i) if c else None  # grey is not in the palette: ignored with the words around it
            i += 1
            continue
        shape, n = None, 1
        if w in _FIGURE_WORDS:
            shape = _FIGURE_WORDS[w]
        elif w in _GLYPH_NOUNS and i + 1 < len(words):
            shape = _glyph(text, spans, i + 1, _GLYPH_NOUNS[w])
            n = 2
        elif glyph:
            shape = glyph
        if shape is not None:
            obj = _Found("object", i, i + n, shape)
            if colour is not None:
                obj.colour, obj.colour_at = colour
                colour = None
            found.append(obj)
            i += n
            continue
        phrase = _match(words, i, _RELATIONS) or _match(words, i, _PLACES)
        if phrase:
            n, value = phrase
            kind = "relation" if _match(words, i, _RELATIONS) else "place"
            found.append(_Found(kind, i, i + n, value))
            i += n
            continue
        i += 1

    objects = [f for f in found if f.kind == "object"][:2]
    if not objects:
        return None, "", _ignored(text, spans, set())
    used: set[int] = set()
    for o in objects:
        used.update(range(o.start, o.end))
        if o.colour_at is not None:
            used.add(o.colour_at)
    colours = [o.colour or COLOURS[int(rng.integers(len(COLOURS)))] for o in objects]
    if len(objects) == 1:
        (o,) = objects
        place = next((f for f in found if f.kind == "place"), None)
        slot = "centre"
        if place is not None:
            slot = place.value
            used.update(range(place.start, place.end))
        scene = Scene((Obj(o.value, colours[0], slot),))
    else:
        a, b = objects
        # a place after each object ("a star on the left and a circle on the right") or a relation between them
        places = [next((f for f in found if f.kind == "place" and o.end <= f.start
                        and (f.end <= b.start if o is a else True)), None) for o in (a, b)]
        relation = next((f for f in found if f.kind == "relation" and a.end <= f.start and f.end <= b.start), None)
        side = "left"
        pa, pb = places
        if pa is not None and pa.value in OPPOSITE and (pb is None or pb.value == OPPOSITE[pa.value]):
            side = pa.value
            used.update(range(pa.start, pa.end))
            if pb is not None:
                used.update(range(pb.start, pb.end))
        elif pb is not None and pb.value in OPPOSITE and pa is None:
            side = OPPOSITE[pb.value]
            used.update(range(pb.start, pb.end))
        if relation is not None:
            if side == "left" and pa is None and pb is None:
                side = relation.value
            used.update(range(relation.start, relation.end))
        scene = Scene((Obj(a.value, colours[0], side), Obj(b.value, colours[1], OPPOSITE[side])))
    return scene, scene.describe(), _ignored(text, spans, used)


def _glyph(text: str, spans: list[tuple[str, int, int]], i: int, allowed: tuple[str, ...] | None = None
           ) -> str | None:
    """The letter or digit token i names: after "letter"/"digit" (`allowed` given) any single character or digit
    word; alone, a single digit, an upper-case letter other than the words A and I, or a quoted character."""
    word, start, end = spans[i]
    if allowed is not None:
        if word.lower() in _DIGIT_WORDS and allowed is DIGITS:
            return str(_DIGIT_WORDS.index(word.lower()))
        return word.upper() if len(word) == 1 and word.upper() in allowed else None
    if len(word) != 1:
        return None
    if word.isdigit():
        return word
    quoted = 0 < start and end < len(text) and text[start - 1] in "'\"" and text[end] == text[start - 1]
    if quoted or (word.isupper() and word not in ("A", "I")):
        return word.upper()
    return None


def _match(words: list[str], i: int, table: list[tuple[list[str], str]]) -> tuple[int, str] | None:
    for phrase, value in table:
        if words[i : i + len(phrase)] == phrase:
            return len(phrase), value
    return None


def _ignored(text: str, spans: list[tuple[str, int, int]], used: set[int]) -> list[str]:
    """Runs of unused words, as written, that hold more than filler ("a", "the", "draw", ...)."""
    runs: list[list[int]] = []
    for i in range(len(spans)):
        if i in used:
            continue
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    out = []
    for run in runs:
        while run and spans[run[0]][0].lower() in ("a", "an", "the", "and", "with"):
            run = run[1:]  # an article or a joining word leading an ignored phrase is not worth quoting
        if any(spans[i][0].lower() not in FILLER for i in run):
            out.append(text[spans[run[0]][1] : spans[run[-1]][2]])
    return out
