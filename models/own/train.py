"""`natty train rnn|gpt|pixelcnn|scenes|wavenet|tunes|instrument` and `natty eval`: training loops and held-out
quality for natty's own models.

Training is resumable (the optimizer, step, random states and loss history live in `train_state.pt` next to the
checkpoint and are picked up unless --fresh), seeded, shows a progress line on stderr, evaluates on held-out data
every --eval-every steps, writes a checkpoint (model.safetensors + config.json) every --ckpt-every steps and at
the end, and draws the loss curves to loss.png. It uses the GPU when there is one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.own import CHECKPOINTS, MODEL_TYPES, load_checkpoint, save_checkpoint, scenes
from models.own import data as datasets
from models.own.charrnn import CharLM
from models.own.gpt import GPT
from models.own.pixelcnn import PixelCNN
from models.own.wavenet import mu_law_encode

KINDS = {"rnn": "charrnn", "charrnn": "charrnn", "gpt": "gpt", "pixelcnn": "pixelcnn", "scenes": "pixelcnn",
         "wavenet": "wavenet", "tunes": "tunelstm", "instrument": "wavenet"}
SHAKESPEARE = "shakespeare"


class Task:
    """What differs between the three models: data, config, batches and the held-out metric."""

    natty_model: str
    defaults: dict[str, Any] = {}

    def __init__(self, data: str | None, seq_len: int | None) -> None:
        self.data = data
        self.seq_len = seq_len

    def make_config(self, overrides: dict[str, str]) -> Any:
        cls = MODEL_TYPES[self.natty_model][1]
        cfg = cls(**self.defaults)
        return _apply(cfg, overrides)

    def adopt(self, model: Any) -> None:
        """Take what the batches depend on from a model loaded from a checkpoint (its config was not made here)."""

    def batch(self, split: str, size: int, rng: np.random.Generator, device: torch.device) -> tuple:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Held-out quality on a fixed set of batches."""
        raise NotImplementedError


def load_text_split(data: str | None) -> tuple[dict[str, str], str]:
    """({"train", "val"[, "test"]} texts, the vocabulary): `shakespeare` (the default) is the works split by work
    (models.own.texts) in its fixed 77-character vocabulary; a text file is split by its last tenth."""
    if data in (None, SHAKESPEARE):
        from models.own import texts

        try:
            return texts.load_split(), texts.VOCAB
        except RuntimeError as exc:  # the works could not be fetched: say how to get them, without a traceback
            raise SystemExit(str(exc)) from exc
    train, val = datasets.load_text(data)
    return {"train": train, "val": val}, "".join(sorted(set(train + val)))


class TextTask(Task):
    """The character models (char-RNN, GPT) on real text: random windows of seq_len characters to train, and the
    held-out work scored character by character (bits per character)."""

    natty_model = "charrnn"
    seq_len: int  # 128 unless given

    def __init__(self, data: str | None, seq_len: int | None) -> None:
        super().__init__(SHAKESPEARE if data in (None, SHAKESPEARE) else data, seq_len or 128)
        parts, self.chars = load_text_split(data)
        stoi = {c: i for i, c in enumerate(self.chars)}
        self.ids = {s: np.array([stoi[c] for c in t], np.int64) for s, t in parts.items() if s != "test"}

    def make_config(self, overrides: dict[str, str]) -> Any:
        cfg = super().make_config(overrides)
        cfg.chars = self.chars
        return cfg

    def adopt(self, model: Any) -> None:
        if model.config.chars != self.chars:  # the same ids would mean other characters: refuse, do not garble
            raise SystemExit(f"the checkpoint's model reads {len(model.config.chars)} characters that are not this "
                             f"data's {len(self.chars)}; continue it on the data it was trained on")

    def batch(self, split, size, rng, device):
        ids = self.ids[split]
        starts = rng.integers(0, len(ids) - self.seq_len - 1, size)
        chunk = np.stack([ids[s : s + self.seq_len + 1] for s in starts])
        t = torch.as_tensor(chunk, device=device)
        return t[:, :-1], t[:, 1:]

    def loss(self, model, batch):
        return model(batch[0], batch[1])[1]

    @torch.no_grad()
    def evaluate(self, model, device):
        model.eval()
        nll = text_nll(model, self.ids["val"], device)
        model.train()
        return {"val_loss": nll, "bits_per_char": nll / math.log(2)}


class GPTTask(TextTask):
    natty_model = "gpt"
    defaults = {"block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0}

    def make_config(self, overrides: dict[str, str]) -> Any:
        cfg = super().make_config(overrides)
        self.seq_len = min(self.seq_len, cfg.block_size)
        return cfg

    def adopt(self, model: Any) -> None:
        super().adopt(model)
        self.seq_len = min(self.seq_len, model.config.block_size)


@torch.no_grad()
def text_nll(model: torch.nn.Module, ids: np.ndarray, device: torch.device) -> float:
    """Mean cross-entropy (nats) of every character of `ids` after the first, each given the text before it: the
    LSTM in one pass carrying its state; the GPT in windows of block_size that overlap by half, each scoring
    only its second half (so every character sees at least block_size / 2 characters before it)."""
    x = torch.as_tensor(ids, device=device)
    if not isinstance(model, GPT):
        logits = model(x[:-1].view(1, -1))[0][0]
        return torch.nn.functional.cross_entropy(logits, x[1:]).item()
    block = model.config.block_size
    half = block // 2
    total, count = 0.0, 0
    first = model(x[: min(block, len(x) - 1)].view(1, -1))[0][0]  # the opening window scores all it holds
    total += torch.nn.functional.cross_entropy(first, x[1 : len(first) + 1], reduction="sum").item()
    count += len(first)
    start = half
    while start + half < len(x) - 1:
        window = x[start : min(start + block, len(x) - 1)]
        logits = model(window.view(1, -1))[0][0][half:]
        targets = x[start + half + 1 : start + len(window) + 1]
        total += torch.nn.functional.cross_entropy(logits[: len(targets)], targets, reduction="sum").item()
        count += len(targets)
        start += half
    return total / count


class PixelTask(Task):
    natty_model = "pixelcnn"

    def __init__(self, data: str | None, seq_len: int | None) -> None:
        if data not in (None, "digits"):
            raise SystemExit("pixelcnn trains on --data digits (scikit-learn's handwritten digits)")
        super().__init__("digits", None)
        tx, ty, vx, vy = datasets.load_digits_split()
        self.sets = {"train": (tx, ty), "val": (vx, vy)}

    def adopt(self, model: Any) -> None:
        fields = ("n_levels", "n_classes", "height", "width")  # what the data fixes
        want, got = self.make_config({}), model.config
        if any(getattr(want, f) != getattr(got, f) for f in fields):
            raise SystemExit(f"the checkpoint's model is not one for --data {self.data} ("
                             + ", ".join(f"{f} {getattr(got, f)}, not {getattr(want, f)}" for f in fields
                                         if getattr(want, f) != getattr(got, f)) + ")")

    def batch(self, split, size, rng, device):
        x, y = self.sets[split]
        idx = rng.integers(0, len(x), size)
        return torch.as_tensor(x[idx], device=device), torch.as_tensor(y[idx], device=device)

    def loss(self, model, batch):
        return model(batch[0], batch[1])[1]

    @torch.no_grad()
    def evaluate(self, model, device):
        model.eval()
        x, y = (torch.as_tensor(a, device=device) for a in self.sets["val"])
        nll = model(x, y)[1].item()
        model.train()
        return {
            "val_loss": nll,
            "bits_per_dim": nll / math.log(2),
            "uniform_bits_per_dim": math.log2(model.config.n_levels),
        }


class SceneTask(PixelTask):
    """The scene PixelCNN: procedurally drawn scenes (models.own.scenes), a fresh batch every step, conditioned
    on each scene's attribute tokens; a fixed set of 256 scenes for validation."""

    defaults = {"n_levels": len(scenes.PALETTE), "n_classes": scenes.N_TOKENS, "height": scenes.SIZE,
                "width": scenes.SIZE, "n_channels": 32, "n_layers": 8, "map_size": 16, "map_channels": 8}

    def __init__(self, data: str | None, seq_len: int | None) -> None:
        if data not in (None, "scenes"):
            raise SystemExit("scenes trains on --data scenes (drawn on the fly)")
        Task.__init__(self, "scenes", None)
        x, y, _ = scenes.make_batch(256, np.random.default_rng(20261204))
        self.val = (x, y)
        self.cond_drop = 0.0

    def make_config(self, overrides: dict[str, str]) -> Any:
        cfg = super().make_config(overrides)
        self.cond_drop = cfg.cond_drop
        return cfg

    def adopt(self, model: Any) -> None:
        super().adopt(model)
        self.cond_drop = model.config.cond_drop

    def batch(self, split, size, rng, device):
        if split == "train":
            x, y = scenes.make_batch(size, rng)[:2]
            if self.cond_drop:  # these images train the unconditional model that guidance needs: no tokens
                y[rng.random(size) < self.cond_drop] = 0
        else:
            x, y = self.val
        return torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)

    @torch.no_grad()
    def evaluate(self, model, device):
        model.eval()
        x, y = (torch.as_tensor(a, device=device) for a in self.val)
        nll = float(np.mean([model(x[i : i + 64], y[i : i + 64])[1].item() for i in range(0, len(x), 64)]))
        model.train()
        return {"val_loss": nll, "bits_per_dim": nll / math.log(2),
                "uniform_bits_per_dim": math.log2(model.config.n_levels)}


class WaveTask(Task):
    natty_model = "wavenet"
    data: str  # "tones" unless given
    seq_len: int  # 1024 unless given
    rf: int  # the model's receptive field, in samples
    defaults = {"n_global": len(datasets.SOUND_KINDS)}

    def __init__(self, data: str | None, seq_len: int | None) -> None:
        super().__init__(data or "tones", seq_len or 1024)
        if self.data == "tones":
            train = datasets.make_tones(200, seed=1)
            val = datasets.make_tones(20, seed=2)
        else:  # a folder of 16 kHz mono WAVs; "_tone"/"_chord" in a name sets its class
            import soundfile as sf

            files = sorted(Path(self.data).glob("*.wav"))
            if len(files) < 2:
                raise SystemExit(f"no .wav files in {self.data}")
            clips = [sf.read(f, dtype="float32")[0] for f in files]
            kinds = [next((i for i, k in enumerate(datasets.SOUND_KINDS) if f"_{k}" in f.stem), 0) for f in files]
            n_val = max(1, len(files) // 10)
            train, val = (clips[n_val:], kinds[n_val:]), (clips[:n_val], kinds[:n_val])
        self.sets = {
            s: ([mu_law_encode(c) for c in clips], np.array(kinds)) for s, (clips, kinds) in (("train", train),
                                                                                         ("val", val))
        }

    def make_config(self, overrides):
        cfg = super().make_config(overrides)
        self.rf = cfg.receptive_field
        return cfg

    def adopt(self, model):
        self.rf = model.config.receptive_field

    def batch(self, split, size, rng, device):
        clips, kinds = self.sets[split]
        window = self.rf + self.seq_len
        which = rng.integers(0, len(clips), size)
        rows = []
        for c in which:
            start = int(rng.integers(0, len(clips[c]) - window))
            rows.append(clips[c][start : start + window])
        x = torch.as_tensor(np.stack(rows), device=device)
        return x, torch.as_tensor(kinds[which], device=device)

    def loss(self, model, batch):
        x, g = batch
        logits, _ = model(x[:, :-1], g=g)
        logits = logits[:, self.rf - 1 :]  # only the outputs that see a full receptive field of audio
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, self.rf :].reshape(-1))

    @torch.no_grad()
    def evaluate(self, model, device):
        model.eval()
        rng = np.random.default_rng(0)
        nll = float(np.mean([self.loss(model, self.batch("val", 4, rng, device)).item() for _ in range(8)]))
        model.train()
        return {"val_loss": nll, "nll_nats": nll, "nll_bits": nll / math.log(2), "uniform_nats": math.log(256)}


class InstrumentTask(WaveTask):
    """natty-tunes' WaveNet instrument (models.own.instrument): random melodies played by the tunes synthesizer's
    melody timbre at 16 kHz, the WaveNet locally conditioned on the notes (pitch one-hot, phase, envelope clocks per
    sample); 240 training sequences of 4 s, 24 held out (other seeds). The loss scores the outputs that see a full
    receptive field, as for the tones WaveNet."""

    defaults = {"n_global": 0, "n_residual": 32, "n_dilation": 32, "n_skip": 64, "n_blocks": 2, "n_layers": 7}
    sizes: tuple[int, int] | None = None  # (train, held-out) clips; None: instrument.TRAIN_CLIPS, VAL_CLIPS

    def __init__(self, data: str | None, seq_len: int | None) -> None:
        from models.own import instrument

        if data not in (None, "instrument"):
            raise SystemExit("instrument trains on --data instrument (melodies synthesized on the fly)")
        Task.__init__(self, "instrument", seq_len or 1024)
        self.defaults = {**self.defaults, "n_local": instrument.N_FEATURES}
        self.clips = instrument.split(*(self.sizes or ()))

    def batch(self, split, size, rng, device):
        clips = self.clips[split]
        window = self.rf + self.seq_len
        rows, feats = [], []
        for c in rng.integers(0, len(clips), size):
            clip = clips[int(c)]
            start = int(rng.integers(0, len(clip.levels) - window))
            rows.append(clip.levels[start : start + window].astype(np.int64))
            feats.append(clip.features(start + 1, start + window))  # per output: the sample it predicts
        return (torch.as_tensor(np.stack(rows), device=device),
                torch.as_tensor(np.stack(feats), device=device))

    def loss(self, model, batch):
        x, local = batch
        logits, _ = model(x[:, :-1], local=local)
        logits = logits[:, self.rf - 1 :]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, self.rf :].reshape(-1))


class TuneTask(Task):
    """natty-tunes' melody LSTM on music21's folk tunes (models.own.tunes): batches of whole tunes of similar
    length (cut at seq_len tokens), padded with targets -1, which the loss ignores; held out, the validation
    tunes scored whole, in bits per note."""

    natty_model = "tunelstm"
    seq_len: int  # 512 unless given

    def __init__(self, data: str | None, seq_len: int | None) -> None:
        from models.own import tunes

        if data not in (None, "tunes"):
            raise SystemExit("tunes trains on --data tunes (music21's bundled folk-song collections)")
        super().__init__("tunes", seq_len or 512)
        self.ts = tunes.load_tunes(log=lambda m: print(m, file=sys.stderr, flush=True))
        self.feats = [tunes.features(self.ts.seq(i), tunes.METERS[int(self.ts.cond[i, 1])], int(self.ts.n_bars[i]))
                      for i in range(len(self.ts))]
        lengths = np.diff(self.ts.offsets)
        # each split's tunes by length, so that a batch of neighbours wastes little padding
        self.order = {s: sorted(self.ts.indices(s), key=lambda i: lengths[i]) for s in ("train", "val")}

    def batch(self, split, size, rng, device):
        order = self.order[split]
        start = int(rng.integers(0, max(1, len(order) - size + 1)))
        rows = order[start : start + size]
        seqs = [self.ts.seq(int(i))[: self.seq_len + 1] for i in rows]
        t = max(len(s) for s in seqs) - 1
        x = np.zeros((len(rows), t), np.int64)
        y = np.full((len(rows), t), -1, np.int64)
        pos = np.zeros((len(rows), t), np.int64)
        rem = np.zeros((len(rows), t), np.int64)
        for r, (i, s) in enumerate(zip(rows, seqs, strict=True)):
            n = len(s) - 1
            x[r, :n], y[r, :n] = s[:-1], s[1:]
            pos[r, :n], rem[r, :n] = self.feats[int(i)][0][:n], self.feats[int(i)][1][:n]
        cond = self.ts.cond[rows]
        return tuple(torch.as_tensor(a, device=device) for a in (x, cond, pos, rem, y))

    def loss(self, model, batch):
        x, cond, pos, rem, y = batch
        return model(x, cond, pos, rem, y)[1]

    @torch.no_grad()
    def evaluate(self, model, device):
        from models.own import tunes

        val = self.ts.indices("val")
        bits = tunes.model_nll_bits(model, self.ts, val)
        n_tokens = sum(len(self.ts.seq(int(i))) - 1 for i in val)
        n_notes = sum(tunes.n_notes(self.ts.seq(int(i))) for i in val)
        model.train()
        return {"val_loss": bits * math.log(2) / n_tokens, "bits_per_note": bits / n_notes,
                "bits_per_token": bits / n_tokens}


TASKS: dict[str, type[Task]] = {"charrnn": TextTask, "gpt": GPTTask, "pixelcnn": PixelTask, "wavenet": WaveTask,
                                "tunelstm": TuneTask}


def make_task(kind: str, data: str | None, seq_len: int | None = None) -> Task:
    """The task for `natty train KIND` (or a checkpoint's natty_model) and its data."""
    if kind == "scenes" or data == "scenes":
        return SceneTask(data, None)
    if kind == "instrument" or data == "instrument":
        return InstrumentTask(data, seq_len)
    return TASKS[KINDS.get(kind, kind)](data, seq_len)


def task_for(kind_or_model: str, data: str | None) -> Task:
    """The task for `natty train KIND` or for a checkpoint's natty_model and data."""
    if kind_or_model in ("scenes", "instrument") or data in ("scenes", "instrument"):
        return make_task(kind_or_model, data)
    return TASKS[KINDS.get(kind_or_model, kind_or_model)](data, None)


def _apply(cfg: Any, overrides: dict[str, str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for key, value in overrides.items():
        if key not in fields:
            raise SystemExit(f"unknown config field {key!r}; known: {', '.join(fields)}")
        setattr(cfg, key, type(getattr(cfg, key))(value))
    return cfg


def _fine_tune_start(folder: str, natty_model: str, overrides: dict[str, str],
                     device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The model to fine-tune: built anew from the checkpoint's config with --set applied (so that a changed
    field such as dropout is what the modules do, not only what config.json says), holding its weights, and the
    commands that made them, in order, as meta["from"]."""
    start, meta = load_checkpoint(folder, device=device)
    model_cls = MODEL_TYPES[natty_model][0]
    if not isinstance(start, model_cls):
        raise SystemExit(f"--init {folder} holds a {meta['natty_model']} model, not a {natty_model} one")
    model = model_cls(_apply(start.config, overrides)).to(device)
    try:
        model.load_state_dict(start.state_dict())
    except RuntimeError:
        changed = " ".join(f"{k}={v}" for k, v in overrides.items())
        raise SystemExit(f"--init {folder}: --set {changed} changes the shape of its weights; a fine-tune keeps the "
                         "shape (train from scratch to change it)") from None
    return model, {"from": [*meta.get("from", []), *([meta["command"]] if "command" in meta else [])]}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _bar(step: int, total: int, loss: float, started: float, start_step: int, extra: str = "") -> None:
    done = step - start_step
    rate = done / max(time.monotonic() - started, 1e-9)
    eta = (total - step) / rate if rate > 0 else 0
    filled = int(30 * step / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {step}/{total} loss {loss:.4f}{extra}"
                     f"  {rate:.1f} it/s  eta {int(eta) // 60}:{int(eta) % 60:02d} ")
    sys.stderr.flush()


def plot_losses(history: dict[str, list], path: Path) -> None:
    """Train (grey) and validation (blue) loss against step, drawn with Pillow."""
    from PIL import Image, ImageDraw

    w, h, m = 640, 400, 48
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    series = [(history.get("train", []), (150, 150, 150)), (history.get("val", []), (30, 90, 200))]
    pts = [p for s, _ in series for p in s]
    if len(pts) >= 2:
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts) or 1
        y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
        y1 = y1 if y1 > y0 else y0 + 1

        def xy(p):
            return (m + (p[0] - x0) / max(x1 - x0, 1) * (w - 2 * m), h - m - (p[1] - y0) / (y1 - y0) * (h - 2 * m))

        d.rectangle([m, m, w - m, h - m], outline="black")
        for s, colour in series:
            if len(s) >= 2:
                d.line([xy(p) for p in s], fill=colour, width=2)
        d.text((m, h - m + 8), f"step {x0}", fill="black")
        d.text((w - m - 80, h - m + 8), f"step {x1}", fill="black")
        d.text((4, m - 16), f"{y1:.3f}", fill="black")
        d.text((4, h - m + 8 - 24), f"{y0:.3f}", fill="black")
        d.text((w - 240, 12), "loss: train (grey), validation (blue)", fill="black")
    img.save(path)


def train_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="natty train", description="Train one of natty's own models.")
    p.add_argument("model", choices=sorted(KINDS))
    p.add_argument("--data", help="rnn, gpt: shakespeare (the default: the works, split by work) or a UTF-8 "
                                  "text file; pixelcnn: digits; "
                                  "scenes: scenes; "
                                  "wavenet: 'tones' (synthesized, default) or a folder of 16 kHz WAVs; "
                                  "tunes: tunes (music21's folk-song collections); "
                                  "instrument: instrument (melodies synthesized for natty-tunes' WaveNet)")
    p.add_argument("--out", required=True, help="checkpoint folder (resumed if it holds train_state.pt)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seq-len", type=int, help="rnn: characters per sequence; wavenet: scored samples per window")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--fresh", action="store_true", help="start over even if the folder holds a run")
    p.add_argument("--init", metavar="DIR", help="start from this checkpoint's weights and config (fine-tuning; "
                                                  "--set may change its fields) instead of random weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a model config field")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = _device(args.device)
    natty_model = KINDS[args.model]
    task = make_task(args.model, args.data, args.seq_len)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "train_state.pt"
    resume = state_path.exists() and not args.fresh

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if resume:
        model, meta = load_checkpoint(out, device=device)
        task.adopt(model)
    elif args.init:
        model, meta = _fine_tune_start(args.init, natty_model, overrides, device)
        task.adopt(model)
    else:
        model = MODEL_TYPES[natty_model][0](task.make_config(overrides)).to(device)
        meta = {}
    lineage = {"from": meta["from"]} if meta.get("from") else {}
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    history: dict[str, list[Any]]
    step, history = 0, {"train": [], "val": []}
    if resume:
        st = torch.load(state_path, map_location=device, weights_only=False)
        opt.load_state_dict(st["optimizer"])
        step, history = st["step"], st["history"]
        rng.bit_generator.state = st["numpy_rng"]
        torch.set_rng_state(st["torch_rng"])
        print(f"resuming {out} at step {step}", file=sys.stderr)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{natty_model}: {n_params / 1e6:.2f}M parameters on {device}, {args.steps} steps", file=sys.stderr)

    def lr_at(s: int) -> float:  # linear warm-up, then cosine decay to a tenth
        warm = min(100, args.steps // 10)
        if s < warm:
            return args.lr * (s + 1) / warm
        frac = (s - warm) / max(1, args.steps - warm)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    def checkpoint(metrics: dict[str, float]) -> None:
        info = {"step": step, "metrics": metrics, "seed": args.seed, "data": task.data,
                **lineage, "command": "natty train " + " ".join(argv)}
        save_checkpoint(model, out, info)
        torch.save({"optimizer": opt.state_dict(), "step": step, "history": history,
                    "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, state_path)
        plot_losses(history, out / "loss.png")

    metrics = meta.get("metrics", {})
    started, start_step, smooth = time.monotonic(), step, None
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = task.loss(model, task.batch("train", args.batch_size, rng, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if step % 10 == 0:
            history["train"].append((step, smooth))
        if step % args.eval_every == 0 or step == args.steps:
            metrics = task.evaluate(model, device)
            history["val"].append((step, metrics["val_loss"]))
        if step % args.ckpt_every == 0 or step == args.steps:
            checkpoint(metrics)
        extra = f" val {metrics['val_loss']:.4f}" if metrics else ""
        _bar(step, args.steps, smooth, started, start_step, extra)
    sys.stderr.write("\n")
    if step == start_step:  # nothing left to do; still leave a consistent checkpoint
        checkpoint(metrics or task.evaluate(model, device))
    print(json.dumps({"step": step, **metrics}))
    return 0


def eval_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="natty eval", description="Held-out quality of one of natty's own models.")
    p.add_argument("model", help="rnn, gpt, pixelcnn, scenes or wavenet (the bundled checkpoint), or a checkpoint "
                                 "folder")
    p.add_argument("--data", help="as for natty train (default: the data the bundled model was trained on)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    bundled = args.model if args.model in ("scenes", "tunes", "instrument") else KINDS.get(args.model)  # the folder
    path = CHECKPOINTS / bundled if bundled else Path(args.model)
    device = _device(args.device)
    model, meta = load_checkpoint(path, device=device)
    natty_model = meta["natty_model"]
    data = args.data or meta.get("data")
    task = task_for(natty_model, data)
    task.adopt(model)
    metrics = task.evaluate(model, device)
    if natty_model == "pixelcnn":
        assert isinstance(model, PixelCNN)
        print(f"pixelcnn {path}: {metrics['bits_per_dim']:.3f} bits/dim on held-out {data} "
              f"(uniform over {model.config.n_levels} levels: {metrics['uniform_bits_per_dim']:.3f})")
    elif natty_model in ("charrnn", "gpt"):
        assert isinstance(model, CharLM)
        print(f"{natty_model} {path}: {metrics['bits_per_char']:.3f} bits/char on held-out text "
              f"(uniform over {model.config.vocab_size} characters: {math.log2(model.config.vocab_size):.3f})")
    elif natty_model == "tunelstm":
        print(f"tunelstm {path}: {metrics['bits_per_note']:.3f} bits/note ({metrics['bits_per_token']:.3f} "
              f"bits/token) on held-out tunes")
    else:
        print(f"wavenet {path}: NLL {metrics['nll_nats']:.3f} nats ({metrics['nll_bits']:.3f} bits) per sample "
              f"on held-out audio (uniform over 256 levels: {metrics['uniform_nats']:.3f} nats)")
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:] or ["--help"]
    raise SystemExit(eval_main(rest) if cmd == "eval" else train_main(sys.argv[1:] if cmd != "train" else rest))
