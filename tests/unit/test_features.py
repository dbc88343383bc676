import random
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from deployments.faq.data import load_jsonl
from deployments.faq.demo import DEMO_FAQ_PATH
from deployments.faq.features import MAX_DISTINCT_WORDS_PER_QUESTION as MAX
from deployments.faq.features import TextFeatures, char_wb_ngrams
from deployments.faq.text import clean_text
from deployments.faq.word_cache import WordCache

# Words of a script the demo FAQ never uses (CJK Extension B), alone and beside known letters.
UNKNOWN_SCRIPT = " ".join(chr(0x20000 + i) for i in range(50)) + " a\U00020001b \U00020002x"


@pytest.mark.parametrize("char_ngrams", [(1, 4), (3, 6), (2, 2)])
def test_fast_transform_equals_scikit_learn(char_ngrams):
    dataset = load_jsonl(DEMO_FAQ_PATH)
    texts = [clean_text(o.text) for o in dataset.originals] + [clean_text(d.text) for d in dataset.duplicates]
    features = TextFeatures.fit(texts, word_max_df=0.3, char_ngrams=char_ngrams, char_max_df=0.5)
    questions = [*texts[:40], "", "   ", "only-unknown-∰∰∰", "x" * 5000, "== vs ===, and what about !== ?"]
    # Not cleaned: upper case, tabs and newlines, Unicode spaces, repeated words, a dotted capital I.
    questions += ["Why  IS\tthis\n\nNULL null NULL?", "a\u00a0b\u2003c  a a a", "İstanbul ŞEHİR", "x", UNKNOWN_SCRIPT]
    fast, reference = features.transform(questions), features.reference_transform(questions)
    assert fast.shape == reference.shape == (len(questions), features.n_features)
    assert np.abs((fast - reference).toarray()).max() < 1e-12
    norms = np.sqrt(np.asarray(fast.multiply(fast).sum(axis=1))).ravel()
    assert np.allclose(norms[norms > 0], 1.0)


@given(st.text(max_size=40), st.sampled_from([(1, 1), (1, 4), (2, 2), (3, 6)]))
def test_character_ngrams_are_scikit_learns(text, ngram_range):
    analyzer = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range).build_analyzer()
    assert char_wb_ngrams(text.lower(), *ngram_range) == analyzer(text)


@pytest.mark.parametrize("char_max_df", [0.5, 1.0])  # the space 1-gram dropped as too common, and kept
def test_words_of_a_script_the_vocabulary_lacks_are_neither_computed_nor_cached(char_max_df):
    dataset = load_jsonl(DEMO_FAQ_PATH)
    features = TextFeatures.fit([clean_text(o.text) for o in dataset.originals], 0.3, (1, 4), char_max_df)
    assert (" " in features.char.vocabulary_) == (char_max_df == 1.0)
    question = [UNKNOWN_SCRIPT.split(" a")[0]]  # the 50 unknown words alone
    rows = features.transform(question)
    info = features._word_char_counts.cache_info()
    assert (info.hits, info.misses, info.currsize) == (0, 0, 0)
    assert np.abs((rows - features.reference_transform(question)).toarray()).max() < 1e-12


def test_only_a_questions_first_max_distinct_words_count_as_themselves():
    # 2,500 distinct never-seen words cost ~10 us each: a 10,000-character question took 34-41 ms, prose 4-8 ms.
    dataset = load_jsonl(DEMO_FAQ_PATH)
    features = TextFeatures.fit([clean_text(o.text) for o in dataset.originals], 0.3, (1, 4), 1.0)
    rng = random.Random(0)
    words = list(dict.fromkeys("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=6)) for _ in range(3 * MAX)))
    text = " ".join(words + words[:10])
    first = features.transform([text], MAX)
    assert features._word_char_counts.cache_info().misses == MAX
    # The later words count as words of a script the vocabulary lacks; repeats of the first ones still count.
    expected = features.reference_transform([" ".join(words[:MAX] + ["\U00020000"] * (len(words) - MAX) + words[:10])])
    assert np.abs((first - expected).toarray()).max() < 1e-12
    # By position, not by what the cache holds: the same text gives the same features once its words are cached.
    features.transform([" ".join(words[MAX:])])
    assert np.abs((features.transform([text], MAX) - first).toarray()).max() == 0
    # Without the bound (a FAQ's own documents, when a model is trained) every word counts.
    whole = features.transform([text])
    assert np.abs((whole - features.reference_transform([text])).toarray()).max() < 1e-12


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
