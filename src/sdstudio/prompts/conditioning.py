"""Prompt text -> text-encoder hidden states, the way A1111 computes them.

Reproduces A1111's `modules/sd_hijack_clip.py` path on transformers' CLIP text models:

1. parse emphasis (`parse_prompt_attention`), tokenize each piece with the CLIP BPE;
2. fill 75-token chunks, moving the words after the last comma into the next chunk when the
   chunk fills up within 20 tokens of that comma (`comma_padding_backtrack`), starting a new
   chunk at `BREAK`, placing textual-inversion vectors where their name's tokens were;
3. each chunk becomes BOS + 75 tokens + EOS (padding: EOS for CLIP ViT-L, 0 after the first
   EOS for OpenCLIP), chunk i of every text in a batch is encoded together (a missing chunk is
   the empty chunk);
4. hidden states from the layer the model family uses (clip skip for SD1, penultimate for
   SD2 and SDXL), multiplied by the emphasis weights, then rescaled so the batch's mean is
   what it was before weighting (A1111's "Original" emphasis);
5. chunks concatenated along the token axis; SDXL concatenates CLIP-L and bigG features and
   takes the pooled (projected) bigG output of the first chunk.

Schedules (`[a:b:when]`, `[a|b]`) and AND composition sit on top:
`build_scheduled_conditioning` gives an object with `at_step` / `uncond_at_step` like A1111's
`reconstruct_multicond_batch` / `reconstruct_cond_batch`.

Embedding vectors go in through a forward hook on the encoder's input-embedding layer that
replaces the rows at their positions, removed again after each call; the text encoder and
its vocabulary are never modified.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch

from sdstudio.errors import InvalidRequest
from sdstudio.prompts.embeddings import Embedding, EmbeddingDatabase
from sdstudio.prompts.extra_networks import extract_extra_networks
from sdstudio.prompts.parser import (
    BREAK_MARKER,
    PromptTooComplex,
    ScheduleEntry,
    check_nesting,
    parse_composable_prompt,
    parse_prompt_attention,
    prompt_schedules,
)
from sdstudio.prompts.tokenizer import BOS_ID, EOS_ID, OPENCLIP_PAD_ID, ClipBpeTokenizer, default_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CHUNK_LENGTH = 75  # prompt tokens per chunk; +BOS +EOS = 77 positions
COMMA_PADDING_BACKTRACK = 20  # A1111 option comma_padding_backtrack (default 20)

# A1111 defaults for SDXL's size/crop/aesthetic conditioning (shared.opts.sdxl_*).
SDXL_REFINER_HIGH_AESTHETIC_SCORE = 6.0
SDXL_REFINER_LOW_AESTHETIC_SCORE = 2.5


# --- what each model family needs from its text encoders ------------------------------------


@dataclass(frozen=True)
class TextEncoderSpec:
    """How one text encoder of a model family is run (A1111's embedder classes)."""

    embedding_key: str | None  # which vectors of an SDXL embedding ("clip_l"/"clip_g"); None: the only ones
    pad_id: int  # token after the first EOS: EOS for CLIP ViT-L, 0 for OpenCLIP
    layer: str  # "clip_skip" | "penultimate_normed" | "penultimate"
    pooled: bool  # return the projected pooled output (SDXL bigG)
    unescape_html: bool  # tokenizer flavour: open_clip unescapes HTML, transformers' CLIPTokenizer does not


_CLIP_L = TextEncoderSpec(None, EOS_ID, "clip_skip", pooled=False, unescape_html=False)
# SD2's OpenCLIP ViT-H: yaml `layer: penultimate` -> second-to-last block, then ln_final;
# A1111 does not apply clip skip to it.
_OPENCLIP_H = TextEncoderSpec(None, OPENCLIP_PAD_ID, "penultimate_normed", pooled=False, unescape_html=True)
# SDXL: both encoders' penultimate block without the final layer norm (sgm `layer: hidden/penultimate`).
_SDXL_L = TextEncoderSpec("clip_l", EOS_ID, "penultimate", pooled=False, unescape_html=False)
_SDXL_G = TextEncoderSpec("clip_g", OPENCLIP_PAD_ID, "penultimate", pooled=True, unescape_html=True)

ARCHITECTURES: dict[str, tuple[TextEncoderSpec, ...]] = {
    "sd1": (_CLIP_L,),
    "sd2": (_OPENCLIP_H,),
    "sdxl": (_SDXL_L, _SDXL_G),
    "sdxl_refiner": (_SDXL_G,),
}


# --- results --------------------------------------------------------------------------------


@dataclass
class Conditioning:
    """Encoded texts: hidden [B, 77*chunks, D] and, for SDXL, pooled [B, P]."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None
    embeddings: tuple[Embedding, ...] = ()  # the textual inversions the texts used, in order of appearance

    @property
    def used_embeddings(self) -> tuple[str, ...]:
        """Names of the textual-inversion embeddings the texts used."""
        return tuple(e.name for e in self.embeddings)

    @property
    def chunk_count(self) -> int:
        return self.hidden.shape[1] // (CHUNK_LENGTH + 2)


@dataclass
class PromptChunk:
    """77 token ids with their weights, and where embedding vectors go (offset counted after BOS)."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Embedding]] = field(default_factory=list)


# --- tokenizing into chunks -----------------------------------------------------------------


class PromptTokenizer:
    """Token ids of text pieces, from sdstudio's CLIP BPE or a transformers tokenizer."""

    def __init__(self, tokenizer: ClipBpeTokenizer | PreTrainedTokenizerBase | None, unescape_html: bool):
        self.impl = tokenizer if tokenizer is not None else default_tokenizer(unescape_html)
        self._encode: Callable[[str], list[int]]
        if isinstance(self.impl, ClipBpeTokenizer):
            vocab = self.impl.encoder
            self._encode = self.impl.encode
        else:  # transformers CLIPTokenizer(Fast)
            hf_tokenizer = self.impl
            vocab = hf_tokenizer.get_vocab()
            self._encode = lambda text: list(
                hf_tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"]
            )
        self.comma_id = vocab.get(",</w>")

    def encode(self, text: str) -> list[int]:
        return self._encode(text)


class EmbeddingLookup:
    """Embeddings by the token ids of their names, longest name first (A1111 ids_lookup)."""

    def __init__(self, db: EmbeddingDatabase | None, tokenizer: PromptTokenizer):
        self.by_first_id: dict[int, list[tuple[list[int], Embedding]]] = {}
        if db is None:
            return
        for embedding in db.embeddings.values():
            ids = tokenizer.encode(embedding.name)
            if not ids:
                continue
            entries = self.by_first_id.setdefault(ids[0], [])
            entries.append((ids, embedding))
            entries.sort(key=lambda entry: len(entry[0]), reverse=True)

    def find(self, tokens: list[int], position: int) -> tuple[Embedding | None, int]:
        for ids, embedding in self.by_first_id.get(tokens[position], ()):
            if tokens[position : position + len(ids)] == ids:
                return embedding, len(ids)
        return None, 0


def tokenize_into_chunks(
    text: str,
    tokenizer: PromptTokenizer,
    lookup: EmbeddingLookup,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> tuple[list[PromptChunk], int]:
    """Split one prompt into 77-token chunks with weights; also its token count (A1111 tokenize_line)."""
    parsed = parse_prompt_attention(text)
    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    token_count = 0
    last_comma = -1

    def next_chunk(is_last: bool = False) -> None:
        nonlocal chunk, token_count, last_comma
        token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
        missing = CHUNK_LENGTH - len(chunk.tokens)
        if missing > 0:
            chunk.tokens += [eos_id] * missing
            chunk.multipliers += [1.0] * missing
        chunk.tokens = [bos_id] + chunk.tokens + [eos_id]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
        chunks.append(chunk)
        chunk = PromptChunk()
        last_comma = -1

    for piece, weight in parsed:
        if piece == BREAK_MARKER and weight == -1:
            next_chunk()
            continue
        tokens = tokenizer.encode(piece)
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == tokenizer.comma_id:
                last_comma = len(chunk.tokens)
            elif (
                COMMA_PADDING_BACKTRACK
                and len(chunk.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= COMMA_PADDING_BACKTRACK
            ):
                # The chunk is full and a comma is near its end: the words after the comma move
                # to the next chunk so that a phrase is not cut in two.
                cut = last_comma + 1
                moved_tokens, moved_multipliers = chunk.tokens[cut:], chunk.multipliers[cut:]
                chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                next_chunk()
                chunk.tokens, chunk.multipliers = moved_tokens, moved_multipliers
            if len(chunk.tokens) == CHUNK_LENGTH:
                next_chunk()

            embedding, name_length = lookup.find(tokens, position)
            if embedding is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            if len(chunk.tokens) + embedding.vector_count > CHUNK_LENGTH:
                next_chunk()
            chunk.fixes.append((len(chunk.tokens), embedding))
            chunk.tokens += [0] * embedding.vector_count
            chunk.multipliers += [weight] * embedding.vector_count
            position += name_length

    if chunk.tokens or not chunks:
        next_chunk(is_last=True)
    return chunks, token_count


def empty_chunk(bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> PromptChunk:
    """The chunk of an empty prompt: BOS then EOS everywhere (A1111 empty_chunk)."""
    return PromptChunk(tokens=[bos_id] + [eos_id] * (CHUNK_LENGTH + 1), multipliers=[1.0] * (CHUNK_LENGTH + 2))


# --- running the text encoders --------------------------------------------------------------


def _final_layer_norm(encoder: PreTrainedModel) -> torch.nn.Module:
    """The encoder's `final_layer_norm` (CLIPTextModelWithProjection wraps it in `text_model`)."""
    inner = getattr(encoder, "text_model", encoder)
    holder = inner if hasattr(inner, "final_layer_norm") else encoder
    return cast(torch.nn.Module, holder.final_layer_norm)  # torch types submodule attributes as Tensor | Module


_EmbeddingHook = Callable[[torch.nn.Module, tuple[Any, ...], torch.Tensor], torch.Tensor]


def _embedding_fix_hook(fixes_per_row: list[list[tuple[int, Embedding]]], key: str | None) -> _EmbeddingHook:
    """Forward hook for the token-embedding layer: writes embedding vectors at their positions."""

    def hook(module: torch.nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if not any(fixes_per_row):
            return output
        output = output.clone()
        for row, fixes in enumerate(fixes_per_row):
            for offset, embedding in fixes:
                vectors = embedding.vectors_for(key).to(device=output.device, dtype=output.dtype)
                count = min(output.shape[1] - offset - 1, vectors.shape[0])
                output[row, offset + 1 : offset + 1 + count] = vectors[:count]
        return output

    return hook


def skipped_layer_output(hidden_states: Sequence[torch.Tensor], clip_skip: int) -> torch.Tensor:
    """The hidden state `clip_skip` layers from the end (A1111's clip skip); deeper than the encoder is refused.

    The option's range (1-12) fits SD1's encoder; a smaller one (a distilled or test model)
    has fewer hidden states, and a clip skip past them is the user's to change, not a crash.
    """
    if clip_skip > len(hidden_states):
        raise InvalidRequest(
            "CLIP_stop_at_last_layers",
            f"clip skip {clip_skip} is deeper than this model's text encoder; use 1 to {len(hidden_states)}",
        )
    return hidden_states[-clip_skip]


def encode_chunk_batch(
    encoder: PreTrainedModel,
    spec: TextEncoderSpec,
    chunks: list[PromptChunk],
    clip_skip: int,
    eos_id: int = EOS_ID,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hidden states [B, 77, D] (weighted, mean restored) and pooled output for one chunk per text."""
    device = next(encoder.parameters()).device
    rows = []
    for chunk in chunks:
        ids = list(chunk.tokens)
        if spec.pad_id != eos_id and eos_id in ids:
            first_eos = ids.index(eos_id)
            ids[first_eos + 1 :] = [spec.pad_id] * (len(ids) - first_eos - 1)
        rows.append(ids)
    input_ids = torch.tensor(rows, dtype=torch.long, device=device)

    handle = encoder.get_input_embeddings().register_forward_hook(
        _embedding_fix_hook([c.fixes for c in chunks], spec.embedding_key)
    )
    try:
        outputs = encoder(input_ids=input_ids, output_hidden_states=True)
    finally:
        handle.remove()

    z: torch.Tensor
    if spec.layer == "clip_skip":
        if clip_skip > 1:
            z = _final_layer_norm(encoder)(skipped_layer_output(outputs.hidden_states, clip_skip))
        else:
            z = outputs.last_hidden_state
    elif spec.layer == "penultimate_normed":
        z = _final_layer_norm(encoder)(outputs.hidden_states[-2])
    else:  # "penultimate"
        z = outputs.hidden_states[-2]
    pooled = getattr(outputs, "text_embeds", None) if spec.pooled else None

    # A1111 "Original" emphasis: weight every token's features, then rescale so the batch's
    # overall mean is unchanged ("likely not correct, but it seems to work well").
    multipliers = torch.tensor([c.multipliers for c in chunks], device=z.device, dtype=z.dtype)
    original_mean = z.mean()
    z = z * multipliers.unsqueeze(-1).expand(z.shape)
    new_mean = z.mean()
    if new_mean != 0:  # a zero mean (only seen in untrained encoders) would make A1111's ratio NaN
        z = z * (original_mean / new_mean)
    return z, pooled


class PromptEncoder:
    """Encodes prompt texts with a model's text encoder(s), A1111-style; caches identical requests.

    text_encoders: the model's transformers text encoders in order (SDXL: CLIP-L, then bigG
    with projection). tokenizers: None to use sdstudio's CLIP BPE (the same tokenization
    A1111 gets), or one transformers tokenizer per encoder. architecture: a key of
    ARCHITECTURES ("sd1", "sd2", "sdxl", "sdxl_refiner"). clip_skip: A1111's
    CLIP_stop_at_last_layers (1 = last layer), used by SD1-style encoders only.
    """

    def __init__(
        self,
        text_encoders: Sequence[PreTrainedModel],
        tokenizers: Sequence[ClipBpeTokenizer | PreTrainedTokenizerBase | None] | None = None,
        architecture: str = "sd1",
        embeddings: EmbeddingDatabase | None = None,
        clip_skip: int = 1,
        cache_size: int = 64,
    ):
        if architecture not in ARCHITECTURES:
            raise InvalidRequest(
                "architecture", f"unknown model family {architecture!r}; use one of {sorted(ARCHITECTURES)}"
            )
        self.specs = ARCHITECTURES[architecture]
        self.text_encoders = list(text_encoders)
        if len(self.text_encoders) != len(self.specs):
            raise InvalidRequest(
                "text_encoders",
                f"{architecture} needs {len(self.specs)} text encoder(s), got {len(self.text_encoders)}",
            )
        tokenizers = list(tokenizers) if tokenizers is not None else [None] * len(self.specs)
        self.tokenizers = [PromptTokenizer(t, spec.unescape_html) for t, spec in zip(tokenizers, self.specs)]
        self.architecture = architecture
        self.embeddings = embeddings
        self.clip_skip = clip_skip
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[tuple[str, ...], bool, int], Conditioning] = OrderedDict()
        self._lookup_generation: int | None = None
        self._lookups: list[EmbeddingLookup] = []

    # -- embeddings --------------------------------------------------------------------------

    def _embedding_lookups(self) -> list[EmbeddingLookup]:
        generation = self.embeddings.generation if self.embeddings is not None else None
        if not self._lookups or generation != self._lookup_generation:
            self._lookups = [EmbeddingLookup(self.embeddings, tok) for tok in self.tokenizers]
            self._lookup_generation = generation
            self._cache.clear()
        return self._lookups

    # -- public API --------------------------------------------------------------------------

    def token_count(self, text: str) -> tuple[int, int]:
        """(tokens used, tokens available before another chunk is needed), as A1111's counter shows."""
        _, count = tokenize_into_chunks(text, self.tokenizers[0], self._embedding_lookups()[0])
        return count, math.ceil(max(count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH

    def chunks(self, text: str, encoder_index: int = 0) -> list[PromptChunk]:
        """The 77-token chunks a prompt becomes for one encoder (for inspection and tests)."""
        return tokenize_into_chunks(text, self.tokenizers[encoder_index], self._embedding_lookups()[encoder_index])[0]

    def encode(self, texts: Sequence[str], is_negative: bool = False, clip_skip: int | None = None) -> Conditioning:
        """Encode a batch of prompt texts (no schedules, no AND) -> hidden [B, 77*k, D] (+ pooled).

        Texts of one call are weighted and mean-restored together, as A1111 encodes the texts
        of one prompt's schedule together. An all-empty negative batch for SDXL encodes to
        zeros (A1111's force_zero_negative_prompt, diffusers' force_zeros_for_empty_prompt).
        """
        texts = list(texts)
        if not texts:
            raise InvalidRequest("prompt", "no prompt text to encode")
        clip_skip = max(1, int(clip_skip if clip_skip is not None else self.clip_skip))
        lookups = self._embedding_lookups()
        key = (tuple(texts), is_negative, clip_skip)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached

        hidden_parts: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        used: dict[str, Embedding] = {}
        with torch.no_grad():
            for encoder, spec, tokenizer, lookup in zip(self.text_encoders, self.specs, self.tokenizers, lookups):
                per_text: dict[str, list[PromptChunk]] = {}
                batch_chunks = []
                for text in texts:
                    if text not in per_text:
                        per_text[text] = tokenize_into_chunks(text, tokenizer, lookup)[0]
                    batch_chunks.append(per_text[text])
                zs = []
                for index in range(max(len(c) for c in batch_chunks)):
                    column = [c[index] if index < len(c) else empty_chunk() for c in batch_chunks]
                    for chunk in column:
                        used.update((embedding.name, embedding) for _, embedding in chunk.fixes)
                    z, chunk_pooled = encode_chunk_batch(encoder, spec, column, clip_skip)
                    zs.append(z)
                    if index == 0 and chunk_pooled is not None:
                        pooled = chunk_pooled  # A1111 keeps the first chunk's pooled output
                hidden_parts.append(torch.cat(zs, dim=1))

        hidden = torch.cat(hidden_parts, dim=-1) if len(hidden_parts) > 1 else hidden_parts[0]
        if is_negative and self.architecture.startswith("sdxl") and all(t == "" for t in texts):
            hidden = torch.zeros_like(hidden)
            pooled = torch.zeros_like(pooled) if pooled is not None else None
        result = Conditioning(hidden=hidden, pooled=pooled, embeddings=tuple(used.values()))
        self._cache[key] = result
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def empty(self, clip_skip: int | None = None) -> Conditioning:
        """The encoding of "" [1, 77, D], used to pad a shorter cond/uncond (A1111 cond_stage_model_empty_prompt)."""
        return self.encode([""], clip_skip=clip_skip)

    def clear_cache(self) -> None:
        """Forget cached encodings (after the text encoder's weights change, e.g. a LoRA)."""
        self._cache.clear()


# --- size conditioning (SDXL) ---------------------------------------------------------------


def sdxl_time_ids(
    original_size: tuple[int, int],
    crop_top_left: tuple[int, int] = (0, 0),
    target_size: tuple[int, int] | None = None,
    aesthetic_score: float | None = None,
) -> torch.Tensor:
    """SDXL's added time ids: (orig h, orig w, crop top, crop left, target h, target w) [6].

    With `aesthetic_score` (the refiner) the target size is replaced by the score: [5].
    Sizes are (height, width), as sgm's `original_size_as_tuple`.
    """
    values: list[float] = [*original_size, *crop_top_left]
    values += [aesthetic_score] if aesthetic_score is not None else list(target_size or original_size)
    return torch.tensor(values, dtype=torch.float32)


# --- schedules and AND composition ----------------------------------------------------------


@dataclass
class ScheduledText:
    """One text's schedule: encodings [S, T, D] (+ pooled [S, P]) and the last step of each."""

    end_steps: list[int]
    texts: list[str]
    conditioning: Conditioning

    def index_at(self, step: int) -> int:
        """A1111 reconstruct_cond_batch: the first entry whose end step is >= step (else the first)."""
        for index, end in enumerate(self.end_steps):
            if step <= end:
                return index
        return 0


def stack_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack [T_i, D] tensors, repeating each one's last vector up to the longest (A1111 stack_conds)."""
    longest = max(t.shape[0] for t in tensors)
    padded = [t if t.shape[0] == longest else torch.cat([t, t[-1:].repeat(longest - t.shape[0], 1)]) for t in tensors]
    return torch.stack(padded)


def pad_with_empty(tensor: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    """Append copies of the empty prompt's encoding [1, 77, D] until `tensor` has `length` tokens."""
    missing = (length - tensor.shape[1]) // empty.shape[1]
    if missing <= 0:
        return tensor
    return torch.cat([tensor, empty.to(tensor).repeat(tensor.shape[0], missing, 1)], dim=1)


# One step's (cond, conds_list, uncond, pooled, uncond_pooled); see ScheduledConditioning.
_StepTensors = tuple[
    torch.Tensor, list[list[tuple[int, float]]], torch.Tensor, torch.Tensor | None, torch.Tensor | None
]


class ScheduledConditioning:
    """Conditioning for one batch over the sampling steps (A1111 MulticondLearnedConditioning).

    `at_step(step)` -> (cond [N, T, D], conds_list) where conds_list[i] lists (row, weight) of
    image i's AND-ed sub-prompts; `uncond_at_step(step)` -> [B, T, D]. Both are padded to the
    same token count with the empty prompt's encoding (A1111 pad_cond_uncond), so cond and
    uncond go through the UNet in one call. `step` is the sampler's 0-based step counter.
    For SDXL, `unet_kwargs(step, row_order)` gives diffusers' `added_cond_kwargs`.
    """

    def __init__(
        self,
        items: list[list[tuple[ScheduledText, float]]],
        negatives: list[ScheduledText],
        empty: Conditioning,
        time_ids: torch.Tensor | None = None,
        negative_time_ids: torch.Tensor | None = None,
    ):
        self.items = items
        self.negatives = negatives
        self.empty = empty
        self.time_ids = time_ids
        self.negative_time_ids = negative_time_ids if negative_time_ids is not None else time_ids
        has_pooled = any(text.conditioning.pooled is not None for item in items for text, _ in item)
        # The engine looks for `unet_kwargs`; models without pooled embeddings must not have one.
        self.unet_kwargs: Callable[[int, list[int]], dict[str, Any]] | None = self._unet_kwargs if has_pooled else None
        self._memo: tuple[int, _StepTensors] | None = None
        self.warnings: list[str] = []  # for the job's result (e.g. an embedding named but unusable)

    @property
    def used_embeddings(self) -> tuple[str, ...]:
        """Names of the textual-inversion embeddings any prompt of the batch used."""
        return tuple(self.embedding_hashes)

    @property
    def embedding_hashes(self) -> dict[str, str]:
        """Name -> short hash of the embeddings the batch used, prompts' before negative prompts' (A1111 TI hashes)."""
        hashes: dict[str, str] = {}
        for text in [t for item in self.items for t, _ in item] + self.negatives:
            hashes.update((e.name, e.shorthash) for e in text.conditioning.embeddings)
        return hashes

    def _at(self, step: int) -> _StepTensors:
        if self._memo is not None and self._memo[0] == step:
            return self._memo[1]
        rows: list[torch.Tensor] = []
        pooled_rows: list[torch.Tensor] = []
        conds_list: list[list[tuple[int, float]]] = []
        for item in self.items:
            entries: list[tuple[int, float]] = []
            for text, weight in item:
                index = text.index_at(step)
                entries.append((len(rows), weight))
                rows.append(text.conditioning.hidden[index])
                if text.conditioning.pooled is not None:
                    pooled_rows.append(text.conditioning.pooled[index])
            conds_list.append(entries)
        negative_rows: list[torch.Tensor] = []
        negative_pooled: list[torch.Tensor] = []
        for text in self.negatives:
            index = text.index_at(step)
            negative_rows.append(text.conditioning.hidden[index])
            if text.conditioning.pooled is not None:
                negative_pooled.append(text.conditioning.pooled[index])
        cond, uncond = stack_padded(rows), stack_padded(negative_rows)
        length = max(cond.shape[1], uncond.shape[1])
        cond = pad_with_empty(cond, length, self.empty.hidden)
        uncond = pad_with_empty(uncond, length, self.empty.hidden)
        pooled = torch.stack(pooled_rows) if pooled_rows else None
        uncond_pooled = torch.stack(negative_pooled) if negative_pooled else None
        result = (cond, conds_list, uncond, pooled, uncond_pooled)
        self._memo = (step, result)
        return result

    def at_step(self, step: int) -> tuple[torch.Tensor, list[list[tuple[int, float]]]]:
        """cond [N, T, D] and, per image, its (row, weight) pairs (A1111 reconstruct_multicond_batch)."""
        cond, conds_list, *_ = self._at(step)
        return cond, conds_list

    def uncond_at_step(self, step: int) -> torch.Tensor:
        """Negative-prompt conditioning [B, T, D] (A1111 reconstruct_cond_batch)."""
        return self._at(step)[2]

    def pooled_at_step(self, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Pooled embeddings (cond [N, P], uncond [B, P]) for SDXL; (None, None) otherwise."""
        _, _, _, pooled, uncond_pooled = self._at(step)
        return pooled, uncond_pooled

    def _unet_kwargs(self, step: int, row_order: list[int]) -> dict[str, Any]:
        """diffusers' SDXL `added_cond_kwargs` for UNet rows laid out as cond rows, then uncond rows."""
        pooled, uncond_pooled = self.pooled_at_step(step)
        # unet_kwargs exists only for SDXL-style prompts, which have pooled embeddings and time ids.
        assert pooled is not None and uncond_pooled is not None
        assert self.time_ids is not None and self.negative_time_ids is not None
        n_cond = pooled.shape[0]
        text_embeds = torch.cat([pooled, uncond_pooled])
        if len(row_order) != text_embeds.shape[0]:
            raise ValueError(f"UNet batch has {len(row_order)} rows but the conditioning has {text_embeds.shape[0]}")
        time_ids = torch.stack([self.time_ids] * n_cond + [self.negative_time_ids] * (len(row_order) - n_cond)).to(
            text_embeds.device
        )
        return {"added_cond_kwargs": {"text_embeds": text_embeds, "time_ids": time_ids}}


MAX_SCHEDULED_TEXTS = 4096
"""Most texts one batch may send to the text encoder: every AND part's schedule entry counts
(e.g. `[a|b]` over 150 steps is 150 texts); A1111 has no bound."""
MAX_SCHEDULED_CHARACTERS = 1_000_000
"""Most characters those texts may have together; tokenizing and encoding grow with it."""


def build_scheduled_conditioning(
    encoder: PromptEncoder,
    prompts: Sequence[str],
    steps: int,
    negative_prompts: Sequence[str] | None = None,
    *,
    hires_steps: int | None = None,
    clip_skip: int | None = None,
    width: int | None = None,
    height: int | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> ScheduledConditioning:
    """Encode a batch's prompts with schedules and AND weights, and its negative prompts with schedules.

    Each distinct sub-prompt is scheduled and encoded once (its schedule's texts together, as
    A1111 does); negative prompts take schedules but not AND (A1111 encodes them with
    get_learned_conditioning). `width`/`height` feed SDXL's size conditioning.
    `check_cancelled` is called before each encoding and raises to stop the job. A batch
    whose schedules come to more than MAX_SCHEDULED_TEXTS texts or MAX_SCHEDULED_CHARACTERS
    characters is refused (InvalidRequest) before anything is encoded.
    """
    prompts = list(prompts)
    if not prompts:
        raise InvalidRequest("prompt", "no prompts to encode")
    negative_prompts = list(negative_prompts) if negative_prompts is not None else [""] * len(prompts)
    if len(negative_prompts) != len(prompts):
        raise InvalidRequest("negative_prompt", f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts")

    scheduled = [0, 0]  # texts and characters scheduled so far, checked as they grow

    def schedules_of(texts: Iterable[str], field: str) -> dict[str, list[ScheduleEntry]]:
        schedules = {}
        for text in dict.fromkeys(texts):
            try:
                check_nesting(text)  # parse_prompt_attention, run on each schedule text, has the same bound
                schedules[text] = prompt_schedules(text, steps, hires_steps=hires_steps)
            except PromptTooComplex as exc:
                raise InvalidRequest(field, str(exc)) from None
            scheduled[0] += len(schedules[text])
            scheduled[1] += sum(len(entry_text) for _, entry_text in schedules[text])
            _check_schedule_size(scheduled[0], scheduled[1], steps, field)
        return schedules

    prompt_parts = [parse_composable_prompt(extract_extra_networks(prompt)[0]) for prompt in prompts]
    negative_texts = [extract_extra_networks(negative)[0] for negative in negative_prompts]
    positive = schedules_of((text for parts in prompt_parts for text, _ in parts), "prompt")
    negative = schedules_of(negative_texts, "negative_prompt")

    def encode(schedules: dict[str, list[ScheduleEntry]], is_negative: bool) -> dict[str, ScheduledText]:
        encoded = {}
        for text, entries in schedules.items():
            if check_cancelled is not None:
                check_cancelled()
            texts = [entry_text for _, entry_text in entries]
            conditioning = encoder.encode(texts, is_negative, clip_skip)
            encoded[text] = ScheduledText([end for end, _ in entries], texts, conditioning)
        return encoded

    positive_encoded = encode(positive, is_negative=False)
    items = [[(positive_encoded[text], weight) for text, weight in parts] for parts in prompt_parts]
    negative_encoded = encode(negative, is_negative=True)
    negatives = [negative_encoded[text] for text in negative_texts]

    time_ids = negative_time_ids = None
    if encoder.architecture.startswith("sdxl"):
        size = (height or 1024, width or 1024)
        if encoder.architecture == "sdxl_refiner":
            time_ids = sdxl_time_ids(size, aesthetic_score=SDXL_REFINER_HIGH_AESTHETIC_SCORE)
            negative_time_ids = sdxl_time_ids(size, aesthetic_score=SDXL_REFINER_LOW_AESTHETIC_SCORE)
        else:
            time_ids = sdxl_time_ids(size, (0, 0), size)
    return ScheduledConditioning(items, negatives, encoder.empty(clip_skip), time_ids, negative_time_ids)


def _check_schedule_size(texts: int, characters: int, steps: int, field: str) -> None:
    """Refuse a batch whose schedules would send too much text to the encoder (`field` is blamed)."""
    if texts > MAX_SCHEDULED_TEXTS or characters > MAX_SCHEDULED_CHARACTERS:
        raise InvalidRequest(
            field,
            f"over {steps} steps, the AND parts and prompt schedules come to at least {texts} texts "
            f"({characters} characters) for the text encoder; one batch may have {MAX_SCHEDULED_TEXTS} texts "
            f"and {MAX_SCHEDULED_CHARACTERS} characters (use fewer [a|b] alternations, AND parts or steps, "
            "or a shorter prompt)",
        )


class PromptConditioner:
    """The engine's `ConditioningEncoder`: prompts + negatives + steps -> ScheduledConditioning."""

    def __init__(self, encoder: PromptEncoder):
        self.prompt_encoder = encoder

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """The text encoders the prompt encoder runs, in order."""
        return list(self.prompt_encoder.text_encoders)

    def clear_cache(self) -> None:
        """Forget cached encodings (a LoRA changed the text encoders)."""
        self.prompt_encoder.clear_cache()

    def encode(
        self,
        prompts: list[str],
        negative_prompts: list[str],
        steps: int,
        clip_skip: int,
        width: int,
        height: int,
        check_cancelled: Callable[[], None] | None = None,
    ) -> ScheduledConditioning:
        """Schedules, AND weights and negative prompts of one batch, encoded for `steps` steps.

        Its `warnings` name the embeddings the prompts ask for that could not be loaded, and why;
        `check_cancelled` is called between encodings and raises to stop the job.
        """
        conditioning = build_scheduled_conditioning(
            self.prompt_encoder,
            prompts,
            steps,
            negative_prompts,
            clip_skip=clip_skip,
            width=width,
            height=height,
            check_cancelled=check_cancelled,
        )
        database = self.prompt_encoder.embeddings
        if database is not None:
            texts = [extract_extra_networks(text)[0] for text in [*prompts, *negative_prompts]]
            conditioning.warnings = database.warnings_for(texts)
        return conditioning
