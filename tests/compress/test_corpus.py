import pytest

from tinyship.compress.corpus import corpus_sentences
from tinyship.runtime.errors import TinyshipError


@pytest.fixture
def reviews(tmp_path):
    lines = [f"Review {i} starts here.<br /><br />It was a fine film number {i}! Too short. "
             f"{' '.join(['long'] * 70)}." for i in range(50)]
    (tmp_path / "reviews.txt").write_text("\n".join(lines))
    return str(tmp_path / "reviews.txt")


def test_sentences_are_cleaned_bounded_and_sampled_by_seed(reviews):
    every = corpus_sentences(reviews, 1000)
    assert len(every) == 100  # two sentences of 4 to 64 words per line; "Too short." and the 71-word one left out
    assert "Review 0 starts here." in every and "It was a fine film number 0!" in every
    assert not any("<br" in s or s == "Too short." or "long long" in s for s in every)
    sample = corpus_sentences(reviews, 10, seed=1)
    assert len(sample) == 10 and set(sample) <= set(every)
    assert corpus_sentences(reviews, 10, seed=1) == sample and corpus_sentences(reviews, 10, seed=2) != sample


def test_excluded_texts_are_left_out(reviews):
    assert "Review 3 starts here." not in corpus_sentences(reviews, 1000, exclude={"Review 3 starts here."})


def test_a_corpus_without_running_text_is_refused(tmp_path):
    (tmp_path / "words.txt").write_text("one\ntwo words\n")
    with pytest.raises(TinyshipError, match="no sentence of 4 to 64 words: give running text"):
        corpus_sentences(str(tmp_path / "words.txt"), 10)
