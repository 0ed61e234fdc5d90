"""Captions for the demo model's training images, and the tokenizer that reads them.

Captions are free text around the vocabulary words, so the model learns to find a colour and a
texture inside a longer prompt and to ignore everything else ("a red apple", "blue water waves",
"a field of green grass under a sky", "ztq red mbl"). Words after the first colour and the first
texture word may name other colours or textures: the model learns that the first one counts.

The tokenizer is a real CLIP byte-pair tokenizer (`CLIPTokenizer`, the class SD 1.5 uses) whose
merges are learned here, by the byte-pair algorithm itself, from the vocabulary and a list of common
words: each of those is one token, and any other word falls back to smaller pieces, down to single
characters, exactly as CLIP's own tokenizer treats words it has never seen.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from ..tiny import bytes_to_unicode
from .vocabulary import COLOUR_WORDS, KNOWN_WORDS, TEXTURE_WORDS, Material

# Everyday words that surround the vocabulary in captions. None of them names a colour or texture.
FILLER_NOUNS = (
    "apple house field wall floor path road hill mountain garden tree forest flower ball hat dress shirt "
    "car boat roof door window box cake cup table chair bed carpet blanket flag kite fish bird cat dog "
    "horse cow sheep tower castle bridge island beach street park city village room picture painting "
    "drawing pattern texture background area shape square circle fabric paper surface ground place"
).split()
FILLER_WORDS = (
    "a an the of with on in under over and near by at from to for its this that some big small large tiny "
    "old new pretty nice beautiful simple soft bright dark light happy little long tall wide round flat "
    "photo image view made full covered lots many very"
).split()
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that make each of `words` a single token (CLIP's word form: the last symbol carries
    "</w>"). Repeatedly merges the most frequent adjacent pair (ties: the first in sorted order), as BPE
    training does, until every word is one symbol."""
    pieces = {word: [*word[:-1], word[-1] + "</w>"] for word in dict.fromkeys(words)}
    merges = []
    while True:
        pairs = Counter()
        for symbols in pieces.values():
            pairs.update(zip(symbols, symbols[1:]))
        if not pairs:
            return merges
        top = max(pairs.values())
        pair = min(p for p, count in pairs.items() if count == top)
        merges.append(pair)
        joined = pair[0] + pair[1]
        for word, symbols in pieces.items():
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(joined)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            pieces[word] = merged


def write_tokenizer(folder: Path, max_tokens: int = 77):
    """Write vocab.json, merges.txt and the tokenizer config into `folder`; return the loaded CLIPTokenizer,
    which pads and cuts prompts to `max_tokens` (the demo model's captions need far fewer than CLIP's 77, and
    every cross-attention of every frame reads them all)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(sorted(KNOWN_WORDS) + sorted(set(FILLER_NOUNS + FILLER_WORDS)))
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges] + list(SPECIAL_TOKENS)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=max_tokens)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _spelling(table: dict[str, str], target: str, rng: np.random.Generator) -> str:
    spellings = [word for word, meaning in table.items() if meaning == target]
    # the vocabulary word itself most of the time, its synonyms the rest
    return target if target in spellings and rng.random() < 0.6 else spellings[rng.integers(len(spellings))]


def _junk(rng: np.random.Generator) -> str:
    """A made-up word (the model must ignore words it has never seen)."""
    while True:
        word = "".join(chr(ord("a") + int(k)) for k in rng.integers(0, 26, int(rng.integers(2, 9))))
        if word not in KNOWN_WORDS:
            return word


def _filler(rng: np.random.Generator, count: int) -> list[str]:
    out = []
    for _ in range(count):
        draw = rng.random()
        if draw < 0.45:
            out.append(FILLER_WORDS[rng.integers(len(FILLER_WORDS))])
        elif draw < 0.85:
            out.append(FILLER_NOUNS[rng.integers(len(FILLER_NOUNS))])
        else:
            out.append(_junk(rng))
    return out


def caption(material: Material, rng: np.random.Generator) -> str:
    """A random caption for an image of `material`: its colour and texture words (either may come first)
    among filler words, sometimes followed by other colour or texture words (which must not count)."""
    named = []
    if material.colour is not None:
        named.append(_spelling(COLOUR_WORDS, material.colour, rng))
    if material.texture is not None:
        named.append(_spelling(TEXTURE_WORDS, material.texture, rng))
    if len(named) == 2 and rng.random() < 0.2:
        named.reverse()
    if not named and rng.random() < 0.25:
        return ""  # the empty prompt paints neutral too
    words = _filler(rng, int(rng.integers(0, 3)))
    for word in named:
        words += [word] + _filler(rng, int(rng.integers(0, 2)))
    if named and rng.random() < 0.2:  # a later colour or texture word: the first one counts
        distractors = []
        if material.colour is not None:
            distractors.append(_spelling(COLOUR_WORDS, list(dict.fromkeys(COLOUR_WORDS.values()))[rng.integers(10)], rng))
        if material.texture is not None:
            distractors.append(_spelling(TEXTURE_WORDS, list(dict.fromkeys(TEXTURE_WORDS.values()))[rng.integers(8)], rng))
        words += _filler(rng, 1) + [distractors[rng.integers(len(distractors))]]
    words += _filler(rng, int(rng.integers(0, 3)))
    text = " ".join(words)
    return text.capitalize() if rng.random() < 0.2 else text
