import random
import tracemalloc

import numpy as np

from deployments.faq.data import load_jsonl
from deployments.faq.demo import DEMO_FAQ_PATH
from deployments.faq.features import TextFeatures
from deployments.faq.text import clean_text
from deployments.faq.word_cache import WordCache


def test_fast_transform_equals_scikit_learn():
    dataset = load_jsonl(DEMO_FAQ_PATH)
    texts = [clean_text(o.text) for o in dataset.originals] + [clean_text(d.text) for d in dataset.duplicates]
    features = TextFeatures.fit(texts, word_max_df=0.3, char_ngrams=(1, 4), char_max_df=0.5)
    questions = [*texts[:40], "", "   ", "only-unknown-∰∰∰", "x" * 5000, "== vs ===, and what about !== ?"]
    # Not cleaned: upper case, tabs and newlines, Unicode spaces, repeated words, a dotted capital I.
    questions += ["Why  IS\tthis\n\nNULL null NULL?", "a\u00a0b\u2003c  a a a", "İstanbul ŞEHİR", "x"]
    fast, reference = features.transform(questions), features.reference_transform(questions)
    assert fast.shape == reference.shape == (len(questions), features.n_features)
    assert np.abs((fast - reference).toarray()).max() < 1e-12
    norms = np.sqrt(np.asarray(fast.multiply(fast).sum(axis=1))).ravel()
    assert np.allclose(norms[norms > 0], 1.0)


def test_operators_are_words():
    features = TextFeatures.fit(["a => b,", "x || y.", "is it p === q?", "x ?? y", "wait..."], 1.0, (1, 4), 1.0)
    assert {"=>", "||", "===", "??", "..."} == {term for term in features.word.vocabulary_ if not term[0].isalnum()}


def test_warmed_words_give_the_same_features():
    texts = ["how to sort an array of numbers", "remove a key from an object"]
    cold = TextFeatures.fit(texts, word_max_df=1.0, char_ngrams=(1, 4), char_max_df=1.0)
    warm = TextFeatures.from_state(*cold.to_state())
    warm.warm(["sort", "numbers", "never-seen"])
    assert warm._word_char_counts.cache_info().currsize == 3
    question = ["Sort numbers, never-seen words"]
    assert np.abs((warm.transform(question) - cold.reference_transform(question)).toarray()).max() < 1e-12


def _demo_features() -> TextFeatures:
    dataset = load_jsonl(DEMO_FAQ_PATH)
    return TextFeatures.fit([clean_text(o.text) for o in dataset.originals], 0.3, (1, 4), 0.5)


def test_word_cache_is_bounded_in_bytes_and_charges_what_entries_take():
    features = _demo_features()
    compute = features._word_char_counts._compute
    cache = WordCache(compute, max_bytes=2_000_000, max_word_chars=64)
    letters = "abcdefghijklmnoprstu"
    words = ["".join(random.Random(i).choices(letters, k=64)) for i in range(4000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for word in words[:1000]:  # not yet full: every entry is kept
        cache(word)
    grown = tracemalloc.get_traced_memory()[0] - before
    charged = cache.cache_info().nbytes
    for word in words[1000:]:
        cache(word)
    tracemalloc.stop()
    info = cache.cache_info()
    assert info.misses == 4000 and 0 < info.currsize < 4000
    assert info.nbytes <= 2_000_000 < charged * 4  # evicted down to the budget
    assert charged >= 0.9 * grown  # the charge is what the entries really hold, not an underestimate
    assert words[-1] in cache._entries and words[0] not in cache._entries  # least recently used went first


def test_long_words_are_computed_but_not_cached():
    features = _demo_features()
    features.cache_clear()
    word = "ab" * 5000
    first = features.transform([word])
    assert features._word_char_counts.cache_info().currsize == 0
    assert np.abs((features.transform([word]) - first).toarray()).max() == 0
