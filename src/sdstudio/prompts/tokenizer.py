"""The CLIP BPE tokenizer, built offline from the vocabulary file the `openai-clip` wheel ships.

`ClipBpeTokenizer` reproduces OpenAI's `clip/simple_tokenizer.py` (ftfy fix, double HTML
unescape, whitespace collapse, lowercasing, the same pre-tokenizer regex and byte-level BPE);
SD1's CLIP ViT-L and OpenCLIP (SD2, SDXL's bigG) both use this vocabulary. `clip_tokenizer`
gives a transformers `CLIPTokenizer` over the same vocabulary for code that wants the HF API.
The `clip` package itself is never imported (it pulls in torchvision and downloads models);
only its data file is read.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ftfy
import regex

from sdstudio.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

VOCAB_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BOS_ID = 49406
EOS_ID = 49407
# open_clip pads its 77-token rows with 0 (the id of "!"); so does A1111 for SD2/SDXL-G.
OPENCLIP_PAD_ID = 0
OPENCLIP_PAD_TOKEN = "!"
# The vocabulary file lists more merges than CLIP uses; OpenAI keeps the first 49152-256-2.
_MERGE_COUNT = 49152 - 256 - 2

_PRE_TOKENIZER = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def vocabulary_path() -> Path:
    """Path of `bpe_simple_vocab_16e6.txt.gz` inside the installed `clip` package (not imported)."""
    spec = importlib.util.find_spec("clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / VOCAB_FILE_NAME
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"CLIP vocabulary {VOCAB_FILE_NAME} not found; reinstall sdstudio's dependency "
        "'openai-clip' (pip install openai-clip)"
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codepoints = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codepoints.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codepoints)))


@dataclass(frozen=True)
class ClipVocabulary:
    """The CLIP BPE tables: token strings in id order and the ranked merges."""

    tokens: tuple[str, ...]
    merges: tuple[tuple[str, str], ...]

    def token_to_id(self) -> dict[str, int]:
        """Token string -> id (a fresh dict)."""
        return {token: index for index, token in enumerate(self.tokens)}


@functools.lru_cache(maxsize=4)
def load_vocabulary(path: str | None = None) -> ClipVocabulary:
    """Read the gzipped merges file and build CLIP's 49408-entry vocabulary (as OpenAI does)."""
    source = Path(path) if path is not None else vocabulary_path()
    try:
        lines = gzip.decompress(source.read_bytes()).decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{source}: cannot read the CLIP vocabulary ({exc}); reinstall openai-clip") from exc
    merges = tuple(tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1])
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    if len(tokens) != VOCAB_SIZE:
        raise ModelLoadError(f"{source}: expected {VOCAB_SIZE} CLIP tokens, got {len(tokens)}; reinstall openai-clip")
    return ClipVocabulary(tokens=tuple(tokens), merges=merges)  # type: ignore[arg-type]


def clean_text(text: str, unescape_html: bool = True) -> str:
    """CLIP's text normalisation: ftfy, HTML unescape twice, collapse whitespace, lowercase.

    transformers' slow CLIPTokenizer (what A1111 uses for SD1's and SDXL's CLIP-L) skips the
    HTML unescaping; `unescape_html=False` reproduces it. OpenAI's and open_clip's unescape.
    """
    text = ftfy.fix_text(text)
    if unescape_html:
        text = html.unescape(html.unescape(text))
    collapsed: str = _WHITESPACE.sub(" ", text.strip())  # `regex` ships no type information
    return collapsed.strip().lower()


class ClipBpeTokenizer:
    """OpenAI CLIP's SimpleTokenizer, reimplemented: text -> token ids without BOS/EOS.

    unescape_html=False gives transformers' slow CLIPTokenizer instead (no HTML unescaping).
    """

    def __init__(self, vocabulary: ClipVocabulary | None = None, unescape_html: bool = True):
        self.unescape_html = unescape_html
        self.vocabulary = vocabulary if vocabulary is not None else load_vocabulary()
        self.encoder = self.vocabulary.token_to_id()
        self.decoder = dict(enumerate(self.vocabulary.tokens))
        self.merge_ranks = {merge: rank for rank, merge in enumerate(self.vocabulary.merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        # Memo of the pure word -> BPE pieces function; words repeat a lot in prompts.
        self._word_pieces = functools.lru_cache(maxsize=65536)(self._bpe)

    def _bpe(self, word: str) -> tuple[str, ...]:
        """Apply merges to one pre-token (already byte-encoded), lowest rank first."""
        if word in (BOS_TOKEN, EOS_TOKEN):
            return (word,)
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            best_rank, best_pair = None, None
            for pair in zip(symbols, symbols[1:]):
                rank = self.merge_ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_pair = rank, pair
            if best_pair is None:
                break
            first, second = best_pair
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no BOS/EOS, exactly as CLIP's SimpleTokenizer.encode."""
        ids: list[int] = []
        for pre_token in _PRE_TOKENIZER.findall(clean_text(text, self.unescape_html)):
            word = "".join(self.byte_encoder[b] for b in pre_token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._word_pieces(word))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (`</w>` becomes a space), for display."""
        joined = "".join(self.decoder[i] for i in ids)
        data = bytearray(self.byte_decoder[c] for c in joined)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")

    def token_text(self, token_id: int) -> str:
        """The vocabulary string of one id (with its `</w>` marker)."""
        return self.decoder[token_id]


@functools.lru_cache(maxsize=2)
def default_tokenizer(unescape_html: bool = True) -> ClipBpeTokenizer:
    """The shared CLIP BPE tokenizer over the installed vocabulary (built once, read-only use)."""
    return ClipBpeTokenizer(unescape_html=unescape_html)


def tokenize(text: str) -> list[int]:
    """CLIP BPE token ids of `text` (no BOS/EOS), identical to OpenAI CLIP's tokenizer."""
    return default_tokenizer().encode(text)


TOKENIZER_KINDS = {
    # kind: pad token. SD1's CLIP ViT-L pads with EOS; OpenCLIP (SD2, SDXL's second encoder) with "!" (id 0).
    "sd1": EOS_TOKEN,
    "clip_l": EOS_TOKEN,
    "openclip": OPENCLIP_PAD_TOKEN,
    "sd2": OPENCLIP_PAD_TOKEN,
    "sdxl_g": OPENCLIP_PAD_TOKEN,
}


@functools.lru_cache(maxsize=8)
def clip_tokenizer(kind: str = "sd1") -> CLIPTokenizer:
    """A transformers `CLIPTokenizer` built offline from the shipped vocabulary.

    kind: "sd1"/"clip_l" (pad = EOS) or "openclip"/"sd2"/"sdxl_g" (pad = "!", id 0, as open_clip).
    Callers must not mutate it (it is shared); copy it first if tokens need adding.
    """
    from transformers import CLIPTokenizer

    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown CLIP tokenizer kind {kind!r}; use one of {sorted(TOKENIZER_KINDS)}")
    vocabulary = load_vocabulary()
    return CLIPTokenizer(
        vocab=vocabulary.token_to_id(),
        # tokenizers' BPE takes the merges as (first, second) pairs; transformers annotates list[str].
        merges=list(vocabulary.merges),  # type: ignore[arg-type]
        pad_token=TOKENIZER_KINDS[kind],
        model_max_length=77,
    )
