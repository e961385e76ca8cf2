"""Extractive question answering: (question, context) in, the best answer spans with character offsets out.

A context longer than the model takes is cut into windows that overlap by a quarter of max_length (as in
training); every window is scored and the best spans across windows win. A span's score is the probability of its
start times that of its end, each a softmax over the window's context tokens.
"""

from __future__ import annotations

import numpy as np

from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.predictor import Predictor, softmax


class QuestionAnswerer(Predictor):
    per_token = True
    pairs = True

    @staticmethod
    def default_truncation(max_length: int) -> dict:
        """Contexts cut into windows that overlap by a quarter of max_length."""
        return {"strategy": "only_second", "stride": max_length // 4}

    def __call__(self, inputs, top_k: int = 1, max_answer_length: int = 30):
        """For one (question, context) tuple a dict, for a list a list of dicts: answer, score, start and end
        (character offsets into the context); with top_k > 1, "answers" lists the best top_k spans."""
        if top_k < 1 or max_answer_length < 1:
            raise TinyshipError("top_k and max_answer_length must be positive")
        single = isinstance(inputs, tuple)
        pairs = self.check(inputs)
        encodings = self.encode(pairs)
        windows = [[e, *e.overflowing] for e in encodings]
        flat = [w for group in windows for w in group]
        outputs = iter(self._run(flat))
        results = []
        for (_, context), group in zip(pairs, windows):
            spans = []
            for window in group:
                start_logits, end_logits = next(outputs)
                spans += best_spans(start_logits, end_logits, window.sequence_ids, window.offsets, top_k,
                                    max_answer_length)
            spans = sorted(spans, key=lambda s: -s[0])
            unique, seen = [], set()
            for score, start, end in spans:  # overlapping windows can find the same span
                if (start, end) not in seen:
                    seen.add((start, end))
                    unique.append({"answer": context[start:end], "score": score, "start": start, "end": end})
            best = unique[0] if unique else {"answer": "", "score": 0.0, "start": 0, "end": 0}
            result = {**best, "windows": len(group)}
            if top_k > 1:
                result["answers"] = unique[:top_k]
            results.append(result)
        return results[0] if single else results


def best_spans(start_logits, end_logits, sequence_ids, offsets, top_k: int, max_answer_length: int) -> list[tuple]:
    """The top_k (score, start char, end char) spans of one window: start <= end, at most max_answer_length tokens,
    both inside the context."""
    context = np.array([s == 1 for s in sequence_ids])
    if not context.any():
        return []
    start_p = np.where(context, softmax(np.where(context, start_logits, -np.inf)), 0.0)
    end_p = np.where(context, softmax(np.where(context, end_logits, -np.inf)), 0.0)
    scores = np.triu(np.outer(start_p, end_p))  # start <= end
    scores = np.tril(scores, max_answer_length - 1)  # end - start < max_answer_length
    best = np.argsort(-scores, axis=None)[:top_k]
    spans = []
    for flat in best:
        i, j = divmod(int(flat), len(sequence_ids))
        if scores[i, j] > 0:
            spans.append((float(scores[i, j]), offsets[i][0], offsets[j][1]))
    return spans
