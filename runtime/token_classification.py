"""Token classification (e.g. named entities): texts in, entities with character offsets out.

Each word takes the label of its first piece (as the model was trained: tags on first pieces), and adjacent words
with the same entity type join into one entity unless the second starts with B-. Label O is no entity.
"""

from __future__ import annotations

import numpy as np

from tinyship.runtime.predictor import Predictor, softmax

OUTSIDE = "O"


class TokenClassifier(Predictor):
    per_token = True
    pairs = False

    def __call__(self, inputs):
        """For one text a dict, for a list a list of dicts: the entities (type, score, word, start, end: character
        offsets into the text) and whether the text was truncated to max_length tokens."""
        single = isinstance(inputs, str)
        texts = self.check(inputs)
        encodings = self.encode(texts)
        results = []
        for text, encoding, (logits,) in zip(texts, encodings, self._run(encodings)):
            words = first_pieces(encoding.word_ids, encoding.offsets)
            probs = softmax(logits)
            labelled = [(self.labels[int(probs[k].argmax())], float(probs[k].max()), start, end)
                        for k, start, end in words]
            results.append({"entities": entities(labelled, text), "truncated": bool(encoding.overflowing)})
        return results[0] if single else results


def first_pieces(word_ids: list, offsets: list) -> list[tuple[int, int, int]]:
    """(index of the word's first piece, start, end) for each word: character offsets spanning all its pieces."""
    words: dict[int, list] = {}
    for k, (word, (start, end)) in enumerate(zip(word_ids, offsets)):
        if word is None:
            continue
        if word in words:
            words[word][2] = end
        else:
            words[word] = [k, start, end]
    return [tuple(w) for w in words.values()]


def entities(labelled: list[tuple[str, float, int, int]], text: str) -> list[dict]:
    """Group (label, score, start, end) words into entities: adjacent words of one type, split where B- begins one."""
    found: list[dict] = []
    previous = OUTSIDE
    for label, score, start, end in labelled:
        kind = label.split("-", 1)[1] if label[:2] in ("B-", "I-") else label
        if label == OUTSIDE:
            previous = OUTSIDE
            continue
        if found and kind == previous and not label.startswith("B-"):
            entity = found[-1]
            entity["scores"].append(score)
            entity["end"] = end
        else:
            found.append({"entity": kind, "scores": [score], "start": start, "end": end})
        previous = kind
    return [{"entity": e["entity"], "score": float(np.mean(e["scores"])), "word": text[e["start"] : e["end"]],
             "start": e["start"], "end": e["end"]} for e in found]
