"""The offline CLIP tokenizer gives exactly the original CLIP ids, and agrees with transformers'."""

from __future__ import annotations

import html
import importlib.util
import string

import ftfy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdstudio.prompts import tokenize
from sdstudio.prompts.tokenizer import BOS_ID, EOS_ID, clip_tokenizer, vocabulary_path

HAND_CASES = [
    "",
    " ",
    "a photo of a cat",
    "masterpiece, best quality, (1girl:1.2), [[blue eyes]], \\(smile\\)",
    "A Photo Of A CAT",
    "  leading and trailing   whitespace\t\n",
    "emoji 😀🐱‍👤🇯🇵 and ❤️",
    "Ünïcödé façade naïve crème brûlée",
    "日本語のテキスト、中文，한국어",
    "it's can't we'll they've I'm you'd she's",
    "IT'S CAN'T",
    "3.14159 1024x768 2023-01-01 #1 100%",
    "!!!??? ... --- ___ ~~~ *** ^^^",
    "&amp; &lt;b&gt; &quot;html&quot; &amp;amp;",
    "“curly quotes” and ‘single’",
    "ﬁne ligature and ｆｕｌｌｗｉｄｔｈ",
    "<|startoftext|> inside <|endoftext|>",
    "lora <lora:myLora:0.8> tag",
    "a" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "tab\tseparated\tvalues\nnew line\r\nwindows",
    "\u00a0non-breaking\u2003em space\u200bzero width",
    "ÀÉÎÕÜ ß ẞ",
    "Ελληνικά Русский العربية עברית हिन्दी",
    "mixed123numbers456 x2 v1.5",
    "(((((deeply))))) [[[[nested]]]] {{{{braces}}}}",
    "a, b, c,, d ,e",
    "\\\\ backslashes \\ here",
]

ASCII_PROMPT_CHARS = string.ascii_letters + string.digits + " ,.()[]:|!?-_'\"/\\<>*+=#@$%^{}~`;\t\n"


@pytest.fixture(scope="module")
def reference():
    """OpenAI's own simple_tokenizer.py, loaded by file path (the clip package is not imported)."""
    path = vocabulary_path().parent / "simple_tokenizer.py"
    spec = importlib.util.spec_from_file_location("openai_clip_simple_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(str(vocabulary_path()))


@pytest.mark.parametrize("text", HAND_CASES)
def test_hand_cases_match_openai(reference, text):
    assert tokenize(text) == reference.encode(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_unicode_matches_openai(reference, text):
    assert tokenize(text) == reference.encode(text)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(HAND_CASES[2:] + ["cat", "dog", "1.5", ":", "BREAK", "AND", "😀"]), max_size=8),
    st.text(alphabet=ASCII_PROMPT_CHARS, max_size=40),
)
def test_prompt_like_text_matches_openai(reference, words, noise):
    text = " ".join(words) + noise
    assert tokenize(text) == reference.encode(text)


def test_known_ids():
    assert tokenize("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert tokenize("<|startoftext|><|endoftext|>") == [BOS_ID, EOS_ID]


def untouched_by_ftfy_and_html(text: str) -> bool:
    return ftfy.fix_text(text) == text and html.unescape(text) == text


# transformers' fast CLIP tokenizer skips ftfy and HTML unescaping, so compare on text those leave alone.
HF_COMPARABLE = [t for t in HAND_CASES if untouched_by_ftfy_and_html(t)]


@pytest.mark.parametrize("text", HF_COMPARABLE)
def test_transformers_tokenizer_matches(text):
    assert len(HF_COMPARABLE) > 15
    hf = clip_tokenizer("sd1")
    assert hf(text, add_special_tokens=False).input_ids == tokenize(text)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=ASCII_PROMPT_CHARS.replace("&", ""), max_size=80))
def test_transformers_tokenizer_matches_generated(text):
    assert clip_tokenizer("sd1")(text, add_special_tokens=False).input_ids == tokenize(text)


def test_padding_conventions():
    sd1 = clip_tokenizer("sd1")("a cat", padding="max_length", max_length=77).input_ids
    assert sd1[:4] == [BOS_ID, 320, 2368, EOS_ID] and set(sd1[4:]) == {EOS_ID} and len(sd1) == 77
    openclip = clip_tokenizer("openclip")("a cat", padding="max_length", max_length=77).input_ids
    assert openclip[:4] == [BOS_ID, 320, 2368, EOS_ID] and set(openclip[4:]) == {0}
    assert clip_tokenizer("sd1").vocab_size == 49408 or len(clip_tokenizer("sd1")) == 49408


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        clip_tokenizer("t5")


def test_transformers_flavour_keeps_html_entities(reference):
    from sdstudio.prompts.tokenizer import ClipBpeTokenizer

    hf_flavour = ClipBpeTokenizer(unescape_html=False)
    # ftfy already decodes entities unless the text has a "<"; OpenAI then unescapes again.
    text = "<b> &amp; c"
    assert hf_flavour.encode(text) != reference.encode(text)
    assert hf_flavour.encode(text) == clip_tokenizer("sd1")(text, add_special_tokens=False).input_ids
    for text in HF_COMPARABLE:
        assert hf_flavour.encode(text) == reference.encode(text)


def test_package_import_stays_light():
    import subprocess
    import sys

    code = "import sys, sdstudio.prompts; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
