"""The FAQ model's settings, read by every stage and by training: plain fields, as they go into the
artifact's JSON and its metadata."""

from dataclasses import dataclass

from deployments.faq.features import WORDS_AND_OPERATORS


@dataclass(frozen=True)
class FaqModelConfig:
    # Texts: the reference's cleaning, but with the code blocks' text kept (text.py says why).
    keep_code_blocks: bool = True
    # An original's answer, where the FAQ has one, is read as part of its text: users ask with the answer's
    # words ("structuredClone"), and a FAQ with few listed phrasings has little else (the demo FAQ: CV Acc@1
    # 0.37 -> 0.58). The Stack Overflow data has no answers, so its figures are unchanged.
    answers_in_text: bool = True
    # The "words" view: word 1-2-grams (words and operators) and character 1-4-grams of whole words.
    word_token_pattern: str = WORDS_AND_OPERATORS
    word_max_df: float = 0.3
    char_ngram_min: int = 1
    char_ngram_max: int = 4
    char_max_df: float = 0.2
    # The "stems" view: the same texts with each word cut to stem_length characters, word 1-2-grams and
    # character 3-6-grams of those; 0 turns it off (half the scoring work, ~1 point of Acc@1 less).
    stem_length: int = 4
    stem_char_ngram_min: int = 3
    stem_char_ngram_max: int = 6
    # Kernel widths, kernel = exp(gamma * (cosine - 1)): three in the words view, one in the stems view (the
    # other two added nothing there, measured, and each costs a pass over a (documents x originals) map).
    kernel_gamma_wide: float = 2.0
    kernel_gamma: float = 5.0
    kernel_gamma_narrow: float = 10.0
    stem_kernel_gamma: float = 5.0
    kernel_ridge_alpha: float = 0.3
    linear_ridge_alpha: float = 0.1
    naive_bayes_alpha: float = 0.01
    projection_rank: int = 500
    projection_alpha: float = 0.1
    first_candidates: int = 60
    second_candidates: int = 5
    rerank_l2: float = 0.01
    # On the re-ranker's per-original biases (in score units; the features' weights are on standardised ones).
    class_bias_l2: float = 0.001
    inner_folds: int = 3
    # A question this close (cosine, words view) to a training document repeats a known phrasing: its original
    # goes first, this far (in score units) above the best other. Above 1 turns it off.
    known_phrasing_cosine: float = 0.8
    known_phrasing_margin: float = 2.0

    @property
    def kernel_gammas(self) -> tuple[float, float, float]:
        return (self.kernel_gamma_wide, self.kernel_gamma, self.kernel_gamma_narrow)
