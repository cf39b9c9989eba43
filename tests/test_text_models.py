"""natty's own text models on real writing: the GPT next to the char-RNN, the n-gram baselines they are measured
against, held-out scoring that sees every character once, the prompt as context (a held-out continuation is more
likely after its own prompt), replies that end at a word boundary and say what made them, and the bundled
Shakespeare checkpoints behind the catalog's natty-gpt and natty-rnn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.base import Request, RunContext  # noqa: E402
from models.catalog import ModelEntry, load_catalog  # noqa: E402
from models.evaluate import continuation_bits, prompt_effect, prompt_pairs  # noqa: E402
from models.own import TEXT_NOTE, OwnModelsBackend, load_checkpoint, save_checkpoint, texts  # noqa: E402
from models.own.charrnn import WORD_SLACK, CharRNN, CharRNNConfig, is_word_char  # noqa: E402
from models.own.gpt import GPT, GPTConfig  # noqa: E402
from models.own.ngram import CharNGram  # noqa: E402
from models.own.train import text_nll, train_main  # noqa: E402

WORDS = ("lion", "otter", "swan", "badger", "heron", "mole")


def paragraphs(n: int, rng: np.random.Generator) -> str:
    """Paragraphs of about 200 characters, each one word repeated: what follows depends on the paragraph."""
    return "".join(" ".join([WORDS[int(rng.integers(len(WORDS)))]] * 40)[:200] + "\n" for _ in range(n))


def tiny_gpt(chars: str, block: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(chars=chars, block_size=block, n_layer=2, n_head=2, n_embd=32))


def fit(model: torch.nn.Module, text: str, steps: int, seq: int = 32) -> torch.nn.Module:
    """A few hundred steps of next-character training on `text` (tests only: small and seeded)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ids = np.array(model.encode(text), np.int64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - seq - 1, 16)
        chunk = torch.as_tensor(np.stack([ids[s : s + seq + 1] for s in starts]))
        loss = model(chunk[:, :-1], chunk[:, 1:])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# --- the baselines ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 5])
def test_the_ngram_baselines_are_distributions_over_the_vocabulary(n):
    text = texts.normalise("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n")
    lm = CharNGram(n, texts.VOCAB).fit(text * 3)
    for history in ("to b", "xyzzy", "", "Whether 'tis "):
        probs = [lm.prob(history, c) for c in texts.VOCAB]
        assert min(probs) > 0 and math.isclose(sum(probs), 1.0, rel_tol=1e-9)
    if n == 5:  # a context seen in training predicts what followed it
        assert lm.prob("to b", "e") > 0.5 and lm.nll_bits("not to b", "e") < lm.nll_bits("not to b", "q")
    unigram_bits = CharNGram(1, texts.VOCAB).fit(text).bits_per_char(text)
    assert unigram_bits < math.log2(len(texts.VOCAB))  # frequencies beat the uniform on the text they counted


# --- held-out scoring and the prompt -----------------------------------------------------------------------

def test_gpt_held_out_scoring_counts_every_character_once_with_half_a_block_before_it():
    model = tiny_gpt(texts.VOCAB, block=16).eval()
    ids = np.array(model.encode(paragraphs(1, np.random.default_rng(1))[:90]), np.int64)
    x = torch.as_tensor(ids)
    half, block = 8, 16
    total = 0.0
    with torch.no_grad():
        for j in range(1, len(ids)):  # target j, read from the window text_nll scores it in
            start = 0 if j <= block else half * ((j - 1) // half) - half
            logits = model(x[start:j].view(1, -1))[0][0, -1]
            total += torch.nn.functional.cross_entropy(logits[None], x[j : j + 1]).item()
    assert text_nll(model, ids, torch.device("cpu")) == pytest.approx(total / (len(ids) - 1), rel=1e-5)
    rnn = CharRNN(CharRNNConfig(chars=texts.VOCAB, n_embd=8, n_hidden=16, n_layer=1)).eval()
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(rnn(x[None, :-1])[0][0], x[1:]).item()
    assert text_nll(rnn, ids, torch.device("cpu")) == pytest.approx(direct, rel=1e-6)


@pytest.mark.parametrize("kind", ["gpt", "rnn"])
def test_a_trained_model_finds_held_out_continuations_likelier_after_their_own_prompt(kind):
    rng = np.random.default_rng(2)
    model = (tiny_gpt(texts.VOCAB, block=128) if kind == "gpt"
             else CharRNN(CharRNNConfig(chars=texts.VOCAB, n_embd=16, n_hidden=64, n_layer=1, dropout=0.0)))
    fit(model, paragraphs(200, rng), steps=150)
    held_out = paragraphs(40, np.random.default_rng(3))
    pairs = prompt_pairs(held_out, 40, np.random.default_rng(4))
    assert all(p.endswith(" ") and len(p) == 96 and len(c) == 32 for p, c in pairs)
    effect = prompt_effect(lambda p, c: continuation_bits(model, p, c), pairs, np.random.default_rng(5))
    assert effect["own_prompt_better"] >= 0.6
    assert effect["own_prompt_bits_per_char"] < effect["shuffled_prompt_bits_per_char"]
    untrained = tiny_gpt(texts.VOCAB, block=128).eval()  # knows nothing: a prompt cannot help it
    blind = prompt_effect(lambda p, c: continuation_bits(untrained, p, c), pairs, np.random.default_rng(5))
    assert abs(blind["own_prompt_bits_per_char"] - blind["shuffled_prompt_bits_per_char"]) < 0.05


@pytest.mark.parametrize("whole_words", [False, True])
def test_the_gpt_cache_draws_the_naive_samples_as_its_window_slides(whole_words):
    model = tiny_gpt(texts.VOCAB, block=16).double().eval()  # float64: the two paths agree to the last bit
    for seed, prompt in enumerate(["", "To be", "a prompt longer than the sixteen-character block"]):
        fast = model.generate(prompt, 50, temperature=1.0, seed=seed, whole_words=whole_words)
        assert fast == model.generate_naive(prompt, 50, temperature=1.0, seed=seed, whole_words=whole_words)
        assert len(fast) == 50 or whole_words


# --- replies -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shakespeare_gpt(tmp_path_factory):
    """A tiny GPT fitted to a few lines, saved as the bundled ones are (data: shakespeare)."""
    text = texts.normalise("Friends, Romans, countrymen, lend me your ears;\nI come to bury Caesar, not to praise "
                           "him.\nThe evil that men do lives after them;\nThe good is oft interred with their "
                           "bones;\n") * 20
    model = fit(tiny_gpt(texts.VOCAB, block=64), text, steps=120)
    folder = tmp_path_factory.mktemp("gpt")
    save_checkpoint(model, folder, {"data": "shakespeare", "step": 120})
    return folder


async def test_the_gpt_continues_the_prompt_and_ends_on_a_whole_word(shakespeare_gpt):
    entry = ModelEntry(name="my-gpt", task="chat", backend="local", model=str(shakespeare_gpt),
                       params={"max_new_tokens": 40, "temperature": 0.8})
    backend = OwnModelsBackend()
    for seed in range(4):
        result = await backend.run(entry, Request(task="chat", prompt="I come to bury", seed=seed), RunContext())
        text = result.text
        assert 1 <= len(text) <= 40 + WORD_SLACK
        assert not is_word_char(text[0])  # "bury" was a whole word: the reply does not glue letters onto it
        assert not is_word_char(text[-1])  # and it stops after a word, never inside one
        assert result.meta["note"] == TEXT_NOTE and result.meta["seed"] == seed
    loaded, meta = load_checkpoint(shakespeare_gpt)
    assert isinstance(loaded, GPT) and meta["natty_model"] == "gpt"
    again = await backend.run(entry, Request(task="chat", prompt="I come to bury", seed=3), RunContext())
    assert again.text == text  # the same seed, the same reply


def test_natty_train_gpt_trains_resumes_and_scores_a_text_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(paragraphs(60, np.random.default_rng(6)), encoding="utf-8")
    out = tmp_path / "gpt"
    args = ["gpt", "--data", str(corpus), "--out", str(out), "--steps", "20", "--eval-every", "10",
            "--ckpt-every", "10", "--batch-size", "8", "--threads", "1", "--set", "n_layer=1", "--set", "n_embd=32",
            "--set", "block_size=32"]
    assert train_main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["step"] == 20 and first["bits_per_char"] < math.log2(len(set(corpus.read_text())))
    assert train_main([*args[:6], "30", *args[7:]]) == 0  # resumes at 20
    meta = json.loads((out / "config.json").read_text())
    assert meta["step"] == 30 and meta["natty_model"] == "gpt" and (out / "loss.png").is_file()

    # --init fine-tunes: the starting checkpoint's config (a --set field changed) and weights, its command kept
    tuned = tmp_path / "tuned"
    assert train_main(["gpt", "--data", str(corpus), "--out", str(tuned), "--init", str(out), "--steps", "2",
                       "--eval-every", "2", "--ckpt-every", "2", "--batch-size", "8", "--threads", "1",
                       "--lr", "1e-9", "--set", "dropout=0.25"]) == 0
    start, _ = load_checkpoint(out)
    model, tuned_meta = load_checkpoint(tuned)
    assert model.config.n_layer == 1 and model.config.n_embd == 32 and model.config.dropout == 0.25
    assert tuned_meta["step"] == 2 and tuned_meta["from"] == [meta["command"]]
    for a, b in zip(start.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)  # a learning rate of 1e-9: still the starting weights
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(p == 0.25 for p in drops)  # the modules do what the config says, not only config.json

    # what a fine-tune cannot do is refused with a message: a new shape, another model kind, other characters
    init = ["--out", str(tmp_path / "refused"), "--init", str(out), "--steps", "2", "--threads", "1"]
    with pytest.raises(SystemExit, match="--set n_embd=64 changes the shape of its weights"):
        train_main(["gpt", "--data", str(corpus), *init, "--set", "n_embd=64"])
    with pytest.raises(SystemExit, match="holds a gpt model, not a charrnn one"):
        train_main(["rnn", "--data", str(corpus), *init])
    other = tmp_path / "other.txt"
    other.write_text("0123456789 " * 400, encoding="utf-8")
    with pytest.raises(SystemExit, match="characters that are not this data's"):
        train_main(["gpt", "--data", str(other), *init])


# --- the bundled models ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind", [("natty-gpt", "gpt"), ("natty-rnn", "charrnn")])
async def test_the_bundled_text_models_are_shakespeare_and_say_so(name, kind):
    entry = load_catalog().get(name)
    assert "Shakespeare" in entry.description and "hosted" in entry.description
    backend = OwnModelsBackend()
    ok, why = await backend.check(entry)
    assert ok, why
    model, meta = load_checkpoint(backend.folder(entry))
    assert meta["natty_model"] == kind and meta["data"] == "shakespeare" and model.config.chars == texts.VOCAB
    result = await backend.run(entry, Request(task="chat", prompt="My lord, the king", seed=1,
                                              params={"max_new_tokens": 120}), RunContext())
    words = [w.strip(".,;:!?'-") for w in result.text.split()]
    assert sum(w.isalpha() and len(w) > 2 for w in words) >= 10 and result.meta["note"] == TEXT_NOTE
    assert not is_word_char(result.text[0])


def test_training_without_the_works_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NATTY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # an index that is not there
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # nothing to find
    with pytest.raises(SystemExit) as stop:
        train_main(["gpt", "--out", str(tmp_path / "gpt"), "--steps", "1"])
    message = str(stop.value)
    assert texts.SDIST in message and str(tmp_path / "data") in message and "NATTY_DATA_DIR" in message
