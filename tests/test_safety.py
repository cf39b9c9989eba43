"""The safety rules on their own: the word matcher, the channel policy, the classifier's score, the audit notice."""

import pytest

from bot import safety
from bot.safety import Block, Matcher, check_model, check_prompt, output_needs_check, tokens


@pytest.mark.parametrize("prompt", [
    "a nude woman on a beach", "NUDE", "Nudes by the lake", "a n.u.d.e figure", "n u d e", "n-u-d-e statue",
    "p0rn star", "pr0n", "s3x scene", "$ex", "NUUUUDE", "pooorn", "ｎｕｄｅ", "nüde", "blow job", "blow-j0b",
    "a naked-ish man", "hentai girl", "no clothes on", "p.o.r.n.o.g.r.a.p.h.y",
])
def test_builtin_list_catches_explicit_terms_and_simple_obfuscation(prompt):
    block = check_prompt(prompt, age_restricted=False)
    assert block is not None and block.rule == "builtin", prompt


@pytest.mark.parametrize("prompt", [
    "an analysis of Essex cocktails", "a therapist in Sussex", "an Al Pacino portrait", "the pen is red",
    "a blue tit's nest", "chicken breast with herbs", "a rooster, a cock crowing at dawn", "a sexy red dress",
    "Scunthorpe town hall", "a baby in a pram", "a 4k photo of the 1990s", "the nudibranch, a sea slug",
    "assassin's creed fan art", "a typist's typewriter",
    "documents exist", "a kid with a kite",
])
def test_innocent_prompts_pass(prompt):
    assert check_prompt(prompt, age_restricted=False) is None, prompt


@pytest.mark.parametrize("prompt", [
    "a nud\u0435 portrait",  # Cyrillic е
    "\u0440\u043erno star",  # Cyrillic р and о
    "a n\u0430ked man",  # Cyrillic а
    "\u0455ex scene",  # Cyrillic dze, which looks like s
    "p\u03bfrn",  # Greek ο
    "\U0001d427\U0001d42e\U0001d41d\U0001d41e",  # mathematical bold "nude"
    "\u01c0ewd art",  # Latin dental click, which looks like l
    "h\u0435nt\u0430i",
])
def test_look_alike_letters_of_other_scripts_are_read_as_the_latin_letters_they_mimic(prompt):
    block = check_prompt(prompt, age_restricted=False)
    assert block is not None and block.rule == "builtin", prompt


@pytest.mark.parametrize("prompt", [
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043a\u0440\u0430\u0441\u0438\u0432\u044b\u0439 "
    "\u043f\u0435\u0439\u0437\u0430\u0436",  # Russian: "hello, a beautiful landscape"
    "\u03ba\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1",  # Greek: "good morning"
    "S\u00e3o Paulo \u00e0 noite, caf\u00e9 e a\u00e7\u00e3o",  # Portuguese accents are just letters
])
def test_words_of_other_scripts_are_not_misread_as_english(prompt):
    assert check_prompt(prompt, age_restricted=False) is None, prompt


def test_age_restricted_channels_allow_adult_prompts_unless_the_policy_is_never():
    assert check_prompt("a nude study", age_restricted=True) is None
    assert check_prompt("a nude study", age_restricted=True, policy="never") == Block("builtin-never", "nude")
    assert check_prompt("a nude study", age_restricted=False, policy="never").rule == "builtin-never"


def test_server_block_list_applies_everywhere_by_whole_word():
    terms = ["pineapple", "Evil Corp"]
    assert check_prompt("a PINEAPPLE pizza", age_restricted=True, server_terms=terms).rule == "server"
    assert check_prompt("pine-apple", age_restricted=False, server_terms=terms).rule == "server"
    assert check_prompt("the evil  corp logo", age_restricted=True, server_terms=terms).rule == "server"
    assert check_prompt("pineapples", age_restricted=True, server_terms=terms).rule == "server"
    assert check_prompt("a pine tree and an apple", age_restricted=True, server_terms=terms) is None
    assert check_prompt("an evil corporation", age_restricted=True, server_terms=terms) is None


def test_sexual_content_with_minors_is_blocked_everywhere_whatever_the_policy():
    for prompt in ("a nude child", "loli", "n.u.d.e schoolgirl", "sexy little girl nude"):
        block = check_prompt(prompt, age_restricted=True)
        assert block is not None and block.rule == "minors", prompt
    assert check_prompt("a little girl flying a kite", age_restricted=True) is None


def test_messages_never_repeat_the_offending_words():
    for rule in ("builtin", "builtin-never", "server", "minors", "classifier", "classifier-never"):
        message = Block(rule, "pineapple").message("some-model")
        assert "pineapple" not in message and len(message) < 200


def test_models_marked_nsfw_run_only_where_adult_content_is_allowed():
    assert check_model(False, age_restricted=False) is None
    assert check_model(True, age_restricted=True) is None
    assert check_model(True, age_restricted=False).rule == "model"
    assert check_model(True, age_restricted=True, policy="never").rule == "model-never"
    assert "**flux-nsfw**" in Block("model").message("flux-nsfw")


def test_which_outputs_go_through_the_classifier():
    assert output_needs_check("text-to-image", age_restricted=False)
    assert output_needs_check("image-to-image", age_restricted=False)
    assert not output_needs_check("text-to-image", age_restricted=True)
    assert output_needs_check("text-to-image", age_restricted=True, policy="never")
    assert not output_needs_check("chat", age_restricted=False)


def test_nsfw_score_reads_the_labels_that_mean_adult_content():
    assert safety.nsfw_score([("normal", 0.9), ("nsfw", 0.1)]) == pytest.approx(0.1)
    assert safety.nsfw_score([("drawings", 0.2), ("porn", 0.5), ("Hentai", 0.3)]) == pytest.approx(0.5)
    assert safety.nsfw_score([("tabby cat", 0.99)]) == 0.0
    assert safety.nsfw_score([]) == 0.0


def test_settings_readers_fall_back_to_safe_defaults():
    assert safety.classifier_name({}) == "nsfw-detector"
    assert safety.classifier_name({"safety_model": "my-check"}) == "my-check"
    assert safety.classifier_name({"safety_model": "off"}) is None
    assert safety.threshold({}) == 0.7
    assert safety.threshold({"nsfw_threshold": 3}) == 1.0
    assert safety.threshold({"nsfw_threshold": "x"}) == 0.7
    assert safety.policy_of({"nsfw": "never"}) == "never"
    assert safety.policy_of({"nsfw": "sometimes"}) == "age-restricted"


def test_audit_notice_is_short_and_never_carries_a_long_prompt_whole():
    long_prompt = "nude " + "word " * 100
    text = safety.audit_notice(user_id=42, command="imagine", rule="builtin", channel_id=7, prompt=long_prompt,
                               job_id="abc")
    assert "<@42>" in text and "/imagine" in text and "built-in adult-content list" in text and "<#7>" in text
    assert long_prompt.strip() not in text
    assert len(text.split("\n> ", 1)[1].strip("|")) <= safety.AUDIT_PROMPT_CHARS
    short = safety.audit_notice(user_id=42, command="imagine", rule="server", channel_id=None, prompt="a `x` ||y||")
    assert "server block list" in short and "`x`" not in short and short.endswith("||a ˋxˋ ¦¦y¦¦||")


def test_tokens_and_matcher_details():
    assert tokens("Hello, W0rld! s e x") == ["hello", "world", "sex"]
    assert tokens("a b") == ["a", "b"]  # two single letters are not joined
    assert not Matcher([]) and Matcher(["x y"])
    assert Matcher(["evil corp"]).find("EVIL CORP") == "evil corp"
