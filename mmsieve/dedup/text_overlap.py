"""Text decontamination: n-gram overlap between training texts and benchmark questions and answers.

FineVision checked images only. A benchmark question copied into a training conversation leaks as
surely as its image, so the index also holds the word n-grams of every benchmark item's text. As in
datatrove's `NGramsDecont` (and the GPT-3 / Llama contamination studies), texts are normalised
(lowercase, punctuation dropped, words split on whitespace) and hashed as n-grams of `n` words. Two
guards keep common phrasing from counting: an n-gram that occurs in more than `max_item_share` of a
benchmark's items (question templates such as "what is the color of the") is left out of the index,
and a text shorter than `n` words is never matched.

Hashes are the first 8 bytes of blake2b (stable across processes and machines, unlike `hash()`).

Example:
    >>> index = NgramIndex.build([("vqa", "17", "What is written on the red sign above the door?")], n=8)
    >>> index.match("Q: what is written on the red sign above the door")
    ('vqa', '17', 3)
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np


DEFAULT_N = 8
_WORDS = re.compile(r"\w+", re.UNICODE)


def normalize_words(text: str) -> list[str]:
    """Lowercased words of `text` after NFKC normalisation, punctuation dropped.

    Example:
        >>> normalize_words("What's the COLOR, of the car?")
        ['what', 's', 'the', 'color', 'of', 'the', 'car']
    """
    return _WORDS.findall(unicodedata.normalize("NFKC", text).lower())


def ngram_hashes(text: str, n: int = DEFAULT_N) -> np.ndarray:
    """The uint64 hashes of every n-gram of `text`'s words (empty when it has fewer than `n` words).

    Example:
        >>> len(ngram_hashes("one two three four five", n=3))
        3
    """
    words = normalize_words(text)
    grams = (" ".join(words[k : k + n]).encode() for k in range(len(words) - n + 1))
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(g, digest_size=8).digest(), "little") for g in grams), dtype=np.uint64
    )


class NgramIndex:
    """The n-gram hashes of benchmark texts, each pointing at one (benchmark, item id).

    Args:
        hashes: sorted uint64 n-gram hashes.
        items: the item row (into `benchmarks` / `item_ids`) of each hash.
        benchmarks / item_ids: per item, its benchmark name and its id inside the benchmark.
        n: words per n-gram.

    Example:
        >>> NgramIndex.build([("b", "1", "one two three four five six seven eight nine")], n=8).match(
        ...     "zero one two three four five six seven eight")
        ('b', '1', 1)
    """

    def __init__(self, hashes: np.ndarray, items: np.ndarray, benchmarks: list[str], item_ids: list[str], n: int):
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.items = hashes[order], items[order]
        self.benchmarks, self.item_ids, self.n = benchmarks, item_ids, n

    @classmethod
    def build(
        cls, texts: Iterable[tuple[str, str, str]], n: int = DEFAULT_N, max_item_share: float = 0.05
    ) -> NgramIndex:
        """Index (benchmark, item id, text) triples; a benchmark's n-grams in more than `max_item_share` of its
        items (at least 3) are template phrasing, not content, and are dropped.

        Example:
            >>> NgramIndex.build([("mmstar", "0", "Which option describes the object in the image best?")], n=4)
            NgramIndex(1 items, 6 n-grams, n=4)
        """
        per_item: dict[tuple[str, str], set[int]] = defaultdict(set)
        for benchmark, item_id, text in texts:
            if text:
                per_item[(benchmark, str(item_id))].update(int(h) for h in ngram_hashes(text, n))
        items_of_benchmark = Counter(benchmark for benchmark, _ in per_item)
        frequency: Counter[tuple[str, int]] = Counter()
        for (benchmark, _), grams in per_item.items():
            frequency.update((benchmark, g) for g in grams)
        keys = list(per_item)
        hashes, owners = [], []
        for row, key in enumerate(keys):
            limit = max(3, int(max_item_share * items_of_benchmark[key[0]]))
            for g in sorted(per_item[key]):
                if frequency[(key[0], g)] <= limit:
                    hashes.append(g)
                    owners.append(row)
        return cls(
            np.asarray(hashes, np.uint64),
            np.asarray(owners, np.int64),
            [b for b, _ in keys],
            [i for _, i in keys],
            n,
        )

    def match(self, text: str) -> tuple[str, str, int] | None:
        """(benchmark, item id, shared n-grams) of the item sharing the most n-grams with `text`, or None.

        Example:
            >>> index.match("an unrelated caption of a dog on a beach at sunset today")  # doctest: +SKIP
        """
        grams = np.unique(ngram_hashes(text, self.n))
        if not len(grams) or not len(self.hashes):
            return None
        left = np.searchsorted(self.hashes, grams, side="left")
        right = np.searchsorted(self.hashes, grams, side="right")
        hits = np.concatenate([self.items[a:b] for a, b in zip(left, right) if b > a] or [np.zeros(0, np.int64)])
        if not len(hits):
            return None
        counts = np.bincount(hits)
        best = int(np.argmax(counts))
        return self.benchmarks[best], self.item_ids[best], int(counts[best])

    def __len__(self) -> int:
        return len(self.hashes)

    def __repr__(self) -> str:
        return f"NgramIndex({len(self.item_ids)} items, {len(self.hashes)} n-grams, n={self.n})"

    def save(self, folder: str | Path) -> None:
        """Write `hashes.npy`, `items.npy` (plain arrays, no pickles), `item_table.parquet` and `ngrams.json`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "hashes.npy", self.hashes, allow_pickle=False)
        np.save(folder / "items.npy", self.items, allow_pickle=False)
        pq.write_table(
            pa.table({"benchmark": self.benchmarks, "item_id": self.item_ids}), folder / "item_table.parquet"
        )
        (folder / "ngrams.json").write_text(json.dumps({"n": self.n, "ngrams": len(self.hashes)}) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> NgramIndex:
        """Read what `save` wrote.

        Example:
            >>> index = NgramIndex.load("index/text")  # doctest: +SKIP
        """
        import pyarrow.parquet as pq

        folder = Path(folder)
        meta = json.loads((folder / "ngrams.json").read_text())
        table = pq.read_table(folder / "item_table.parquet")
        return cls(
            np.load(folder / "hashes.npy", allow_pickle=False),
            np.load(folder / "items.npy", allow_pickle=False),
            table.column("benchmark").to_pylist(),
            table.column("item_id").to_pylist(),
            int(meta["n"]),
        )
