"""`python -m models.evaluate scenes|text|tunes|instrument`: does the scene PixelCNN draw what it is asked, how well
do the char-RNN and the GPT know held-out Shakespeare (`text`, see evaluate_text), does natty-tunes beat a 3-gram
and play in the asked key (`tunes`, see evaluate_tunes), and does its WaveNet instrument beat a linear predictor on
held-out notes and play the asked pitches (`instrument`, see evaluate_instrument)?

A small CNN is trained on the procedural scenes (models.own.scenes) to read, for each of the five slots, the
shape and colour there (or that it is empty). It is scored on real held-out scenes, then on the model's samples
for random scenes: an asked object counts as recognised when the classifier reads the asked shape and colour
in the asked slot. It also times the cached sampler against the naive one at batch 1 (medians of repeats), and
writes a PNG grid of samples, one prompt per row.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.own import CHECKPOINTS, load_checkpoint, scenes
from models.own.charrnn import CharLM
from models.own.pixelcnn import PixelCNN

EMPTY_SHAPE, EMPTY_COLOUR = len(scenes.SHAPES), len(scenes.COLOURS)  # the classes "nothing in this slot"
GRID_PROMPTS = (
    "a red star above a blue circle", "a green heart", "a yellow triangle left of a purple square",
    "a blue letter A", "an orange 7 on the right", "a black circle below a red heart",
)


class SceneClassifier(nn.Module):
    """Palette image (B, H, W) -> per slot, logits over shapes + empty and colours + empty."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        n = len(scenes.PALETTE)
        self.net = nn.Sequential(
            nn.Conv2d(n, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * (scenes.SIZE // 8) ** 2, 256), nn.ReLU(),
        )
        self.shape = nn.Linear(256, len(scenes.SLOTS) * (EMPTY_SHAPE + 1))
        self.colour = nn.Linear(256, len(scenes.SLOTS) * (EMPTY_COLOUR + 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(F.one_hot(x, len(scenes.PALETTE)).permute(0, 3, 1, 2).float())
        n = len(scenes.SLOTS)
        return self.shape(h).view(-1, n, EMPTY_SHAPE + 1), self.colour(h).view(-1, n, EMPTY_COLOUR + 1)


def targets(batch: list[scenes.Scene]) -> tuple[np.ndarray, np.ndarray]:
    """Per scene and slot, the shape and colour class (EMPTY_* where the slot holds nothing)."""
    shape = np.full((len(batch), len(scenes.SLOTS)), EMPTY_SHAPE, np.int64)
    colour = np.full((len(batch), len(scenes.SLOTS)), EMPTY_COLOUR, np.int64)
    for i, s in enumerate(batch):
        for o in s.objects:
            k = scenes.SLOTS.index(o.slot)
            shape[i, k], colour[i, k] = scenes.SHAPES.index(o.shape), scenes.COLOURS.index(o.colour)
    return shape, colour


def train_classifier(steps: int, seed: int = 0, batch_size: int = 64, log=print) -> SceneClassifier:
    """Fit the classifier on fresh procedural scenes (a new batch every step)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    clf = SceneClassifier()
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for step in range(steps):
        x, _, batch = scenes.make_batch(batch_size, rng)
        ys, yc = (torch.as_tensor(a) for a in targets(batch))
        ls, lc = clf(torch.as_tensor(x))
        loss = F.cross_entropy(ls.flatten(0, 1), ys.flatten()) + F.cross_entropy(lc.flatten(0, 1), yc.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 200 == 0:
            log(f"classifier step {step + 1}/{steps} loss {loss.item():.3f}")
    return clf.eval()


@torch.no_grad()
def recognised(clf: SceneClassifier, x: np.ndarray, batch: list[scenes.Scene]) -> dict[str, np.ndarray]:
    """Per asked object (flattened in scene order): shape right, colour right, both right, and whether a glyph."""
    ps, pc = (t.argmax(-1).numpy() for t in clf(torch.as_tensor(x, dtype=torch.long)))
    shape_ok, colour_ok, glyph = [], [], []
    for i, s in enumerate(batch):
        for o in s.objects:
            k = scenes.SLOTS.index(o.slot)
            shape_ok.append(ps[i, k] == scenes.SHAPES.index(o.shape))
            colour_ok.append(pc[i, k] == scenes.COLOURS.index(o.colour))
            glyph.append(o.shape not in scenes.FIGURES)
    s_, c_ = np.array(shape_ok), np.array(colour_ok)
    return {"shape": s_, "colour": c_, "both": s_ & c_, "glyph": np.array(glyph)}


def summary(r: dict[str, np.ndarray]) -> dict[str, float]:
    g = r["glyph"]
    return {"shape_and_colour": float(r["both"].mean()), "shape": float(r["shape"].mean()),
            "colour": float(r["colour"].mean()), "figures_shape_and_colour": float(r["both"][~g].mean()),
            "glyphs_shape_and_colour": float(r["both"][g].mean()), "objects": int(len(g))}


def sampler_speed(model: PixelCNN, repeats: int, guidance: float = 1.0) -> dict[str, float]:
    """Seconds per image at batch 1, medians of `repeats` runs, cached and naive (the same seed)."""
    tokens = scenes.Scene((scenes.Obj("star", "red", "top"), scenes.Obj("circle", "blue", "bottom"))).tokens()[None]
    times: dict[str, list[float]] = {"cached": [], "naive": []}
    for r in range(repeats):
        for name, fn in (("cached", model.generate), ("naive", model.generate_naive)):
            t = time.perf_counter()
            fn(tokens, seed=r, guidance=guidance)
            times[name].append(time.perf_counter() - t)
    cached, naive = statistics.median(times["cached"]), statistics.median(times["naive"])
    return {"cached_s": cached, "naive_s": naive, "ratio": naive / cached, "repeats": repeats}


def write_grid(model: PixelCNN, path: Path, per_prompt: int = 6, seed: int = 0, guidance: float = 1.0) -> None:
    """One row per GRID_PROMPTS prompt, `per_prompt` samples each, 4x upscaled."""
    rows = []
    for i, prompt in enumerate(GRID_PROMPTS):
        scene, _, _ = scenes.parse_prompt(prompt, np.random.default_rng(i))
        assert scene is not None
        rows.append(model.generate(np.repeat(scene.tokens()[None], per_prompt, axis=0), seed=seed + i,
                                   guidance=guidance))
    png, _, _ = scenes.png_grid(np.concatenate(rows), scale=4, cols=per_prompt)
    path.write_bytes(png)


def log(msg: str) -> None:
    """Progress on stderr, so that stdout holds only the figures."""
    print(msg, file=sys.stderr, flush=True)


def parse_with_common(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Every evaluation's arguments plus --threads (torch's, set here) and --seed."""
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def evaluate_scenes(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m models.evaluate scenes", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(CHECKPOINTS / "scenes"))
    p.add_argument("--classifier-steps", type=int, default=3000)
    p.add_argument("--classifier", help="a file to keep the trained classifier in: loaded if it exists, else "
                                        "written after training")
    p.add_argument("--real", type=int, default=2000, help="held-out real scenes to score the classifier on")
    p.add_argument("--generated", type=int, default=500, help="scenes to sample and score")
    p.add_argument("--batch", type=int, default=50, help="images per cached sampling call")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats at batch 1 (medians)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the checkpoint's config.guidance; 1 is none)")
    p.add_argument("--grid", default=None, help="PNG of samples (default: samples.png in the checkpoint)")
    args = parse_with_common(p, argv)
    model, meta = load_checkpoint(args.checkpoint)
    assert isinstance(model, PixelCNN) and meta.get("data") == "scenes", f"{args.checkpoint} is not a scene model"
    guidance = model.config.guidance if args.guidance is None else args.guidance
    t0 = time.perf_counter()
    if args.classifier and Path(args.classifier).exists():
        clf = SceneClassifier()
        clf.load_state_dict(torch.load(args.classifier, weights_only=True))
        clf.eval()
    else:
        clf = train_classifier(args.classifier_steps, seed=args.seed, log=log)
        if args.classifier:
            torch.save(clf.state_dict(), args.classifier)
    train_s = time.perf_counter() - t0
    x, _, real = scenes.make_batch(args.real, np.random.default_rng(args.seed + 1))
    on_real = summary(recognised(clf, x, real))
    log(f"classifier on {args.real} real scenes: shape+colour {on_real['shape_and_colour']:.1%}")

    rng = np.random.default_rng(args.seed + 2)
    asked = [scenes.random_scene(rng) for _ in range(args.generated)]
    drawn, t0 = [], time.perf_counter()
    for i in range(0, len(asked), args.batch):
        chunk = asked[i : i + args.batch]
        drawn.append(model.generate(np.stack([s.tokens() for s in chunk]), seed=args.seed + i,
                                    temperature=args.temperature, guidance=guidance))
        log(f"sampled {i + len(chunk)}/{len(asked)}")
    sample_s = time.perf_counter() - t0
    on_generated = summary(recognised(clf, np.concatenate(drawn), asked))
    speed = sampler_speed(model, args.repeats, guidance)
    grid = Path(args.grid) if args.grid else Path(args.checkpoint) / "samples.png"
    write_grid(model, grid, guidance=guidance)

    m = meta.get("metrics", {})
    print(f"scene PixelCNN {args.checkpoint}: step {meta.get('step')}, "
          f"{m.get('bits_per_dim', float('nan')):.3f} bits/dim on held-out scenes")
    print(f"classifier ({args.classifier_steps} steps, {train_s:.0f} s) on {args.real} real scenes: "
          f"shape and colour {on_real['shape_and_colour']:.1%} of {on_real['objects']} objects "
          f"(shape {on_real['shape']:.1%}, colour {on_real['colour']:.1%}; figures "
          f"{on_real['figures_shape_and_colour']:.1%}, letters and digits {on_real['glyphs_shape_and_colour']:.1%})")
    print(f"generated ({args.generated} scenes, temperature {args.temperature}, guidance {guidance}, "
          f"{sample_s:.0f} s): asked shape and "
          f"colour recognised in {on_generated['shape_and_colour']:.1%} of {on_generated['objects']} objects "
          f"(shape {on_generated['shape']:.1%}, colour {on_generated['colour']:.1%}; figures "
          f"{on_generated['figures_shape_and_colour']:.1%}, letters and digits "
          f"{on_generated['glyphs_shape_and_colour']:.1%})")
    print(f"sampler at batch 1: cached {speed['cached_s']:.2f} s, naive {speed['naive_s']:.2f} s per image, "
          f"{speed['ratio']:.0f}x (medians of {speed['repeats']})")
    print(f"samples: {grid}")
    print(json.dumps({"real": on_real, "generated": on_generated, "speed": speed, "step": meta.get("step"),
                      "guidance": guidance,
                      "bits_per_dim": m.get("bits_per_dim")}))
    return 0


# --- text: the char-RNN and the GPT on held-out Shakespeare ------------------------------------------------

TEXT_PROMPTS = ("To be, or not to be", "My lord, the king", "O Romeo,", "Shall I compare thee")


@torch.no_grad()
def continuation_bits(model: torch.nn.Module, prompt: str, continuation: str) -> float:
    """-log2 P(continuation | prompt) under a char-RNN or GPT (summed over the continuation's characters)."""
    assert isinstance(model, CharLM)
    ids = model.encode(prompt + continuation)
    x = torch.tensor([ids[:-1]])
    logits = model(x)[0][0, -len(continuation):]
    return float(F.cross_entropy(logits.double(), torch.tensor(ids[-len(continuation):]), reduction="sum")
                 / math.log(2))


def prompt_pairs(text: str, count: int, rng: np.random.Generator, prompt_chars: int = 96,
                 continuation_chars: int = 32) -> list[tuple[str, str]]:
    """`count` (prompt, continuation) pairs from `text`: the prompt ends at a word boundary (a space), the
    continuation is what follows it."""
    pairs: list[tuple[str, str]] = []
    while len(pairs) < count:
        cut = int(rng.integers(prompt_chars, len(text) - continuation_chars - 1))
        cut = text.find(" ", cut) + 1
        if 0 < cut - prompt_chars and cut + continuation_chars <= len(text):
            pairs.append((text[cut - prompt_chars : cut], text[cut : cut + continuation_chars]))
    return pairs


def prompt_effect(score: Callable[[str, str], float], pairs: list[tuple[str, str]],
                  rng: np.random.Generator) -> dict[str, float]:
    """Bits per character of each continuation given its own prompt and given another pair's (a random
    derangement), and the share of continuations more likely with their own prompt."""
    order = rng.permutation(len(pairs))
    other = {int(order[i]): int(order[(i + 1) % len(pairs)]) for i in range(len(pairs))}
    own = [score(p, c) for p, c in pairs]
    shuffled = [score(pairs[other[i]][0], c) for i, (_, c) in enumerate(pairs)]
    chars = sum(len(c) for _, c in pairs)
    return {"own_prompt_bits_per_char": sum(own) / chars, "shuffled_prompt_bits_per_char": sum(shuffled) / chars,
            "own_prompt_better": float(np.mean([a < b for a, b in zip(own, shuffled, strict=True)])),
            "pairs": len(pairs)}


def evaluate_text(argv: list[str]) -> int:
    from models.own import ngram, texts
    from models.own.train import text_nll

    p = argparse.ArgumentParser(prog="python -m models.evaluate text",
                                description="Held-out bits per character of the char-RNN and the GPT against "
                                            "unigram and 5-gram character models, and whether the prompt matters.")
    p.add_argument("--checkpoints", nargs="+", default=[str(CHECKPOINTS / "charrnn"), str(CHECKPOINTS / "gpt")])
    p.add_argument("--pairs", type=int, default=300, help="held-out (prompt, continuation) pairs")
    p.add_argument("--samples", type=int, default=120, help="characters sampled per sample prompt")
    args = parse_with_common(p, argv)
    split = texts.load_split()
    test = split["test"]
    log(f"test: {len(test):,} characters of {', '.join(texts.TEST_WORKS)}; training on {len(split['train']):,}")
    pairs = prompt_pairs(test, args.pairs, np.random.default_rng(args.seed))
    results: dict[str, dict] = {}
    for n, name in ((1, "unigram"), (5, "5-gram")):
        t0 = time.perf_counter()
        lm = ngram.CharNGram(n, texts.VOCAB).fit(split["train"])
        results[name] = {"test_bits_per_char": lm.bits_per_char(test),
                         **prompt_effect(lm.nll_bits, pairs, np.random.default_rng(args.seed)),
                         "seconds": time.perf_counter() - t0}
        log(f"{name}: {results[name]['test_bits_per_char']:.3f} bits/char")
    samples: dict[str, list[str]] = {}
    for folder in args.checkpoints:
        model, meta = load_checkpoint(folder)
        assert isinstance(model, CharLM)
        name = meta["natty_model"]
        t0 = time.perf_counter()
        ids = np.array(model.encode(test), np.int64)
        nll = text_nll(model, ids, torch.device("cpu"))
        results[name] = {"test_bits_per_char": nll / math.log(2), "step": meta.get("step"),
                         "parameters": sum(q.numel() for q in model.parameters()),
                         **prompt_effect(functools.partial(continuation_bits, model), pairs,
                                         np.random.default_rng(args.seed)),
                         "seconds": time.perf_counter() - t0}
        samples[name] = [prompt + model.generate(prompt, args.samples, temperature=0.8, top_k=40, seed=args.seed,
                                                 whole_words=True) for prompt in TEXT_PROMPTS]
        log(f"{name}: {results[name]['test_bits_per_char']:.3f} bits/char")
    print(f"held-out Shakespeare ({', '.join(texts.TEST_WORKS)}, {len(test):,} characters), bits per character:")
    for name, r in results.items():
        print(f"  {name:8s} {r['test_bits_per_char']:.3f}   continuation of {r['pairs']} held-out prompts: "
              f"{r['own_prompt_bits_per_char']:.3f} with its own prompt, {r['shuffled_prompt_bits_per_char']:.3f} "
              f"with a shuffled one; own prompt better in {r['own_prompt_better']:.0%}")
    for name, texts_ in samples.items():
        print(f"samples from {name} (temperature 0.8, top-k 40, seed {args.seed}; the prompt, then the reply):")
        for sample in texts_:
            print("  | " + sample.replace("\n", "\n  | "))
    print(json.dumps(results))
    return 0


def stack_rolls(melodies: list, path: Path, scale: int = 5) -> None:
    """Piano rolls of `melodies`, one under another, into one PNG."""
    import tempfile

    from PIL import Image

    from models.own import tunes

    with tempfile.TemporaryDirectory() as tmp:
        rolls = []
        for i, bars in enumerate(melodies):
            tunes.piano_roll_png(bars, Path(tmp) / f"{i}.png", scale=scale)
            rolls.append(Image.open(Path(tmp) / f"{i}.png").convert("RGB"))
        sheet = Image.new("RGB", (max(r.width for r in rolls), sum(r.height + 8 for r in rolls)), (240, 240, 240))
        y = 0
        for r in rolls:
            sheet.paste(r, (0, y))
            y += r.height + 8
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)


def evaluate_tunes(argv: list[str]) -> int:
    from models.own import tunes
    from models.own.train import plot_losses

    p = argparse.ArgumentParser(prog="python -m models.evaluate tunes",
                                description="natty-tunes: held-out bits per note against a 3-gram, whether "
                                            "generated tunes are in the asked key, and whether the rendered audio "
                                            "sounds the written notes.")
    p.add_argument("--checkpoint", default=str(CHECKPOINTS / "tunes"))
    p.add_argument("--generated", type=int, default=100, help="tunes to generate for random asked keys and modes")
    p.add_argument("--pitch-tunes", type=int, default=10, help="of those, how many to render and pitch-track")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--run", help="the training folder (its train_state.pt holds the loss history to plot)")
    p.add_argument("--samples-png", default="docs/img/tunes-samples.png")
    p.add_argument("--loss-png", default="docs/img/tunes-loss.png")
    args = parse_with_common(p, argv)
    model, meta = load_checkpoint(args.checkpoint)
    assert isinstance(model, tunes.TuneLSTM)
    ts = tunes.load_tunes(log=log)
    train, val = ts.indices("train"), ts.indices("val")
    n_notes = sum(tunes.n_notes(ts.seq(int(i))) for i in val)
    n_tokens = sum(len(ts.seq(int(i))) - 1 for i in val)
    log(f"{len(ts)} tunes, {len(train)} train, {len(val)} val ({n_notes:,} notes); fitting the 3-gram")
    t0 = time.perf_counter()
    tri = tunes.TrigramModel([ts.seq(int(i)) for i in train])
    tri_bits = sum(tri.nll_bits(ts.seq(int(i))) for i in val)
    log(f"3-gram: {tri_bits / n_notes:.3f} bits/note ({time.perf_counter() - t0:.0f} s)")
    model_bits = tunes.model_nll_bits(model, ts, val)
    results: dict = {
        "val_tunes": len(val), "val_notes": n_notes, "val_tokens": n_tokens,
        "model_bits_per_note": model_bits / n_notes, "trigram_bits_per_note": tri_bits / n_notes,
        "model_bits_per_token": model_bits / n_tokens, "trigram_bits_per_token": tri_bits / n_tokens,
        "step": meta.get("step"), "parameters": sum(q.numel() for q in model.parameters()),
    }

    rng = np.random.default_rng(args.seed)
    meters = sorted(tunes.BAR_UNITS)
    asked, got, got_free, samples = [], [], [], []
    ok_frames = total_frames = 0
    t0 = time.perf_counter()
    for i in range(args.generated):
        req = tunes.TuneRequest(tonic=int(rng.integers(12)), mode=str(rng.choice(tunes.MODES)),
                                meter=str(rng.choice(meters)), tempo=str(rng.choice(["slow", "moderate", "fast"])),
                                n_bars=int(rng.choice([8, 16])))
        req.bpm = tunes.BPM[req.tempo]
        asked.append((req.tonic, req.mode))
        # unconstrained sampling, then as the bot plays (kept to the mode's scale)
        got_free.append(tunes.key_of(tunes.transpose(model.generate(
            req.mode, req.meter, req.tempo, req.n_bars, seed=args.seed + i, temperature=args.temperature), req.tonic)))
        bars = tunes.transpose(model.generate(req.mode, req.meter, req.tempo, req.n_bars, seed=args.seed + i,
                                              temperature=args.temperature, in_key=True), req.tonic)
        got.append(tunes.key_of(bars))
        if i < args.pitch_tunes:
            ok, total = tunes.pitch_match(bars, req.bpm)
            ok_frames, total_frames = ok_frames + ok, total_frames + total
        if i < 4:
            samples.append((req, bars))
        if (i + 1) % 20 == 0:
            log(f"generated {i + 1}/{args.generated}")
    match = [a == g for a, g in zip(asked, got, strict=True)]
    relative = [g == ((a[0] + 9) % 12, "minor") if a[1] == "major" else g == ((a[0] + 3) % 12, "major")
                for a, g in zip(asked, got, strict=True)]
    results.update({
        "key_match": float(np.mean(match)), "generated": args.generated, "temperature": args.temperature,
        "key_match_unconstrained": float(np.mean([a == g for a, g in zip(asked, got_free, strict=True)])),
        "key_match_major": float(np.mean([m for m, a in zip(match, asked, strict=True) if a[1] == "major"])),
        "key_match_minor": float(np.mean([m for m, a in zip(match, asked, strict=True) if a[1] == "minor"])),
        "relative_key_instead": float(np.mean(relative)),
        "pitch_match": ok_frames / max(total_frames, 1), "pitch_frames": total_frames,
        "pitch_tunes": min(args.pitch_tunes, args.generated), "generate_s": time.perf_counter() - t0,
    })
    stack_rolls([bars for _, bars in samples], Path(args.samples_png))
    if args.run and (Path(args.run) / "train_state.pt").exists():
        history = torch.load(Path(args.run) / "train_state.pt", map_location="cpu", weights_only=False)["history"]
        plot_losses(history, Path(args.loss_png))

    def goal(ok: bool) -> str:
        return "met" if ok else "NOT met"

    r = results
    print(f"held-out tunes: {r['val_tunes']} ({r['val_notes']:,} notes, {r['val_tokens']:,} tokens), step {r['step']}, "
          f"{r['parameters'] / 1e6:.2f}M parameters")
    print(f"  bits per note: model {r['model_bits_per_note']:.3f}, 3-gram {r['trigram_bits_per_note']:.3f} "
          f"(per token {r['model_bits_per_token']:.3f} vs {r['trigram_bits_per_token']:.3f}); goal model < 3-gram: "
          f"{goal(r['model_bits_per_note'] < r['trigram_bits_per_note'])}")
    print(f"  key of {r['generated']} generated tunes (music21's analysis) = the asked key, as played (kept to the "
          f"mode's scale, temperature {r['temperature']}): {r['key_match']:.0%} (major {r['key_match_major']:.0%}, "
          f"minor {r['key_match_minor']:.0%}; the relative key instead {r['relative_key_instead']:.0%}); "
          f"goal >= 90%: {goal(r['key_match'] >= 0.9)}")
    print(f"  the same tunes sampled without the scale: {r['key_match_unconstrained']:.0%}")
    print(f"  pyin pitch within a quarter tone of the written note: {r['pitch_match']:.1%} of {r['pitch_frames']:,} "
          f"note frames ({r['pitch_tunes']} tunes, melody render); goal >= 95%: {goal(r['pitch_match'] >= 0.95)}")
    print("  samples (docs piano roll, top to bottom): " + "; ".join(q.describe() for q, _ in samples))
    print(json.dumps(results))
    return 0


def wavenet_nll(model: torch.nn.Module, levels: np.ndarray, local: np.ndarray, start: int) -> np.ndarray:
    """Nats of samples start.. of one clip (mu-law levels, local features per sample) under a locally
    conditioned WaveNet, run over the whole clip at once (each sample sees every sample before it)."""
    x = torch.as_tensor(levels[None, :-1].astype(np.int64))
    logits = model(x, local=torch.as_tensor(local[None, 1:]))[0][0, start - 1 :]
    return F.cross_entropy(logits, torch.as_tensor(levels[start:].astype(np.int64)), reduction="none").numpy()


@torch.no_grad()
def evaluate_instrument(argv: list[str]) -> int:
    """natty-tunes' WaveNet instrument: held-out nats per sample against a 64-tap linear predictor over the same
    256 mu-law classes, how often the pitch of tunes it plays is the written note (pyin), and how fast it plays."""
    from models.own import instrument, tunes
    from models.own.wavenet import WaveNet

    p = argparse.ArgumentParser(prog="python -m models.evaluate instrument",
                                description=evaluate_instrument.__doc__)
    p.add_argument("--checkpoint", default=str(CHECKPOINTS / "instrument"))
    p.add_argument("--tunes", default=str(CHECKPOINTS / "tunes"), help="the melody model whose tunes it plays")
    p.add_argument("--taps", type=int, default=64, help="the linear predictor's order")
    p.add_argument("--pitch-tunes", type=int, default=5, help="tunes to play and pitch-track")
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0, help="the WaveNet's sampling temperature")
    args = parse_with_common(p, argv)
    model, meta = load_checkpoint(args.checkpoint)
    assert isinstance(model, WaveNet) and model.config.n_local == instrument.N_FEATURES
    start = max(model.config.receptive_field, args.taps)  # both score samples start.. of every held-out clip
    clips = instrument.split()
    log(f"{len(clips['train'])} training clips, {len(clips['val'])} held out; fitting the {args.taps}-tap predictor")
    t0 = time.perf_counter()
    lp = instrument.LinearPredictor(args.taps, start=start).fit([c.levels for c in clips["train"]])
    log(f"fitted in {time.perf_counter() - t0:.0f} s; scoring")
    wn, base, sounding = [], [], []
    for c in clips["val"]:
        wn.append(wavenet_nll(model, c.levels, c.features(), start))
        base.append(lp.nll(c.levels))
        sounding.append(c.active[start:] >= 0)
    w, b, on = np.concatenate(wn), np.concatenate(base), np.concatenate(sounding)
    r: dict = {"val_clips": len(clips["val"]), "scored_samples": len(w), "wavenet_nats": float(w.mean()),
               "lp_nats": float(b.mean()), "wavenet_nats_notes": float(w[on].mean()),
               "lp_nats_notes": float(b[on].mean()), "wavenet_nats_silence": float(w[~on].mean()),
               "lp_nats_silence": float(b[~on].mean()), "taps": args.taps, "step": meta.get("step"),
               "parameters": sum(q.numel() for q in model.parameters()), "receptive_field": start,
               "lp_bins": [list(x) for x in lp.params]}

    melody_model, _ = load_checkpoint(args.tunes)
    assert isinstance(melody_model, tunes.TuneLSTM)
    rng = np.random.default_rng(args.seed)
    ok = total = ok_synth = total_synth = folded = n_notes = 0
    play_s = audio_s = err2 = sig2 = 0.0
    for i in range(args.pitch_tunes):
        req = tunes.TuneRequest(tonic=int(rng.integers(12)), mode=str(rng.choice(tunes.MODES)),
                                meter=str(rng.choice(sorted(tunes.BAR_UNITS))),
                                tempo=str(rng.choice(["slow", "moderate", "fast"])), n_bars=args.bars)
        req.bpm = tunes.BPM[req.tempo]
        bars = tunes.transpose(melody_model.generate(req.mode, req.meter, req.tempo, req.n_bars, seed=args.seed + i,
                                                     in_key=True), req.tonic)
        notes = instrument.notes_from_bars(bars, req.bpm)
        written = [m for bar in bars for m, _ in bar if m is not None]
        folded += sum(instrument.fold(m) != m for m in written)
        n_notes += len(written)
        t0 = time.perf_counter()
        line = instrument.play(model, notes, seed=args.seed + i, temperature=args.temperature)
        play_s += time.perf_counter() - t0
        audio_s += len(line) / model.config.sample_rate
        k, n = tunes.pitch_match(bars, req.bpm, sr=model.config.sample_rate, audio=line)
        ok, total = ok + k, total + n
        synth = instrument.synthesize(notes)
        err2, sig2 = err2 + float(((line - synth) ** 2).sum()), sig2 + float((synth**2).sum())
        k, n = tunes.pitch_match(bars, req.bpm, sr=model.config.sample_rate, audio=synth.astype(np.float32))
        ok_synth, total_synth = ok_synth + k, total_synth + n
        log(f"tune {i + 1}/{args.pitch_tunes}: {req.describe()}, played in {play_s:.0f} s so far")
    r.update({"pitch_match": ok / max(total, 1), "pitch_frames": total, "pitch_tunes": args.pitch_tunes,
              "pitch_match_synth": ok_synth / max(total_synth, 1), "notes_folded": folded, "notes": n_notes,
              "realtime_factor": audio_s / max(play_s, 1e-9), "audio_s": audio_s, "play_s": play_s,
              "snr_db": 10 * math.log10(sig2 / max(err2, 1e-30)),
              "temperature": args.temperature})

    def goal(met: bool) -> str:
        return "met" if met else "NOT met"

    print(f"natty-tunes' WaveNet instrument, step {r['step']}, {r['parameters'] / 1e6:.2f}M parameters; held out: "
          f"{r['val_clips']} clips, {r['scored_samples']:,} samples scored (each from sample {start})")
    print(f"  nats per sample over the 256 mu-law classes: WaveNet {r['wavenet_nats']:.3f}, {args.taps}-tap linear "
          f"predictor {r['lp_nats']:.3f} (on notes {r['wavenet_nats_notes']:.3f} vs {r['lp_nats_notes']:.3f}, in "
          f"silence {r['wavenet_nats_silence']:.3f} vs {r['lp_nats_silence']:.3f}); goal WaveNet < predictor: "
          f"{goal(r['wavenet_nats'] < r['lp_nats'])}")
    print(f"  pyin pitch within a quarter tone of the written note, {r['pitch_tunes']} tunes of {args.bars} bars "
          f"played by the WaveNet (temperature {args.temperature}): {r['pitch_match']:.1%} of {r['pitch_frames']:,} "
          f"note frames (the synthesizer it learnt from: {r['pitch_match_synth']:.1%}; {folded} of {n_notes} notes "
          f"moved by an octave into its range); goal >= 95%: {goal(r['pitch_match'] >= 0.95)}")
    print(f"  the WaveNet's melody against the synthesizer's rendering of the same notes: {r['snr_db']:.1f} dB "
          "signal to difference (no goal: how closely it learnt the timbre)")
    print(f"  playing speed (numba step, one thread): {r['realtime_factor']:.2f}x real time ({r['audio_s']:.0f} s of "
          f"audio in {r['play_s']:.0f} s); goal >= 1x: {goal(r['realtime_factor'] >= 1)}")
    print(json.dumps(r))
    return 0


EVALUATIONS = {"scenes": evaluate_scenes, "text": evaluate_text, "tunes": evaluate_tunes,
               "instrument": evaluate_instrument}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EVALUATIONS:
        print(f"usage: python -m models.evaluate {{{','.join(EVALUATIONS)}}} [options]", file=sys.stderr)
        return 2
    return EVALUATIONS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
