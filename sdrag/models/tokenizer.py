"""A CLIP-style byte-level BPE vocabulary learned from a small corpus, for the offline `tiny` tokenizers."""

from __future__ import annotations

import collections
import json
from pathlib import Path

# A small corpus so the tokenizer learns real merges and splits words the way CLIP's BPE does.
_CORPUS = (
    "a the of and in on with style painting photo sketch drawing house city neon night watercolor ink "
    "pastel bauhaus geometric pixel art mosaic blueprint galaxy space stars cat coffee rocket astronaut "
    "brick grass gravel texture colorful dark light bright soft warm cool portrait landscape street tree "
    "sun window door roof building architecture abstract pattern lines glowing vintage retro modern"
)
_MERGES = 120


def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character, as GPT-2/CLIP byte-level BPE does."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _learn_merges(words: collections.Counter) -> list[tuple[str, str]]:
    """Greedy byte-pair merges over `words` (ties broken by the pair itself, so dict order never matters)."""
    splits = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(_MERGES):
        pairs: collections.Counter = collections.Counter()
        for w, parts in splits.items():
            for a, b in zip(parts, parts[1:]):
                pairs[a, b] += words[w]
        if not pairs:
            break
        (a, b), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w, parts in splits.items():
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            splits[w] = out
    return merges


def write_tokenizer_files(folder: Path) -> None:
    """Write a CLIP-style vocab.json and merges.txt learned by byte-pair merging on a small corpus.

    As in CLIP, the two special tokens take the last ids, so the text encoder's legacy pooling (the
    highest id marks the end of the prompt) finds the end token exactly as it does on the real model.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = list(bytes_to_unicode().values())
    merges = _learn_merges(collections.Counter(_CORPUS.split()))
    vocab = base + [c + "</w>" for c in base] + [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
