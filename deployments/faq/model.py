"""Stage 5, the model: questions in, a probability per original out, and the best matches as answers.

The pipeline, per question: text.py cleans it; each view of the texts (text_views.py: whole words and
operators, and 4-letter word stems) turns it into TF-IDF features (features.py) and scores every original with
its scorers (scorers.py), 20 z-scores in all; a conditional-logit re-ranker (rerank.py) re-orders the best 60
originals, and a second one the best 5 of those; its features are the z-scores and each one's margin over the
best other candidate, plus a bias per original. A question that repeats a known phrasing gets its original
first. A softmax with a temperature fitted on held-out duplicates turns the final scores into probabilities.
``FaqModel.state`` / ``from_state`` are what artifact.py (stage 6) saves and loads. Fitting lives apart, in
training/fit.py; what each piece adds is measured in benchmarks/results/faq_quality.md.
"""

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from deployments.faq.config import FaqModelConfig
from deployments.faq.data import Original
from deployments.faq.dense import CENTROID, DENSE_ARRAYS, DENSE_SCORERS, DenseScorers
from deployments.faq.features import TextFeatures
from deployments.faq.rerank import rerank
from deployments.faq.text import clean_text
from deployments.faq.text_views import WORDS, View, view_specs

__all__ = ["FaqModel", "FaqModelConfig"]

SPARSE_PARTS = ("data", "indices", "indptr", "shape")  # how a CSR matrix is saved
BASE_SCORERS = (1, 4, 5)  # words view: kernel (middle width), naive Bayes, projection; their z-sum ranks first


def known_originals(cosines: np.ndarray, document_labels: np.ndarray, threshold: float) -> np.ndarray:
    """Per question, the original one of whose known phrasings (its title, its text, a listed duplicate) the
    question repeats, at a cosine of at least ``threshold``; -1 where none."""
    nearest = cosines.argmax(axis=1)
    return np.where(cosines[np.arange(len(nearest)), nearest] >= threshold, document_labels[nearest], -1)


def first_order(zscores: np.ndarray, dense: bool) -> np.ndarray:
    """The ranking the first re-ranking stage takes its candidates from: the base scorers' z-sum, plus the
    dense centroid's z-score where the model has dense scorers (they come last)."""
    order = zscores[:, BASE_SCORERS].sum(axis=1)
    return order + zscores[:, zscores.shape[1] - len(DENSE_SCORERS) + CENTROID] if dense else order


def final_scores(
    zscores: np.ndarray, config: FaqModelConfig, weights: np.ndarray, bias: np.ndarray, dense: bool = False
) -> np.ndarray:
    first = rerank(zscores, first_order(zscores, dense), config.first_candidates, weights[0], bias[0])
    return rerank(zscores, first, config.second_candidates, weights[1], bias[1])


def n_rerank_features(views: list[View], dense: bool = False) -> int:
    return 2 * (sum(view.spec.n_scorers for view in views) + (len(DENSE_SCORERS) if dense else 0)) + 1


@dataclass
class FaqModel:
    """A fitted matcher. ``scores`` ranks the originals; ``probabilities`` is its calibrated form."""

    originals: list[Original]
    views: list[View]
    rerank_weights: np.ndarray  # (2, 2 * scorers + 1): first and second stage
    class_bias: np.ndarray  # (2, originals): first and second stage
    config: FaqModelConfig
    temperature: float = 1.0
    dense: DenseScorers | None = None  # sentence-embedding scorers, when trained with an encoder

    def __post_init__(self) -> None:
        if not self.views or self.views[0].spec.name != WORDS:
            raise ValueError("the words view must come first")
        if self.rerank_weights.shape != (2, n_rerank_features(self.views, self.dense is not None)):
            raise ValueError(f"rerank_weights has shape {self.rerank_weights.shape}, expected 2 stages x features")
        if self.class_bias.shape != (2, len(self.originals)):
            raise ValueError(f"class_bias has shape {self.class_bias.shape}, expected (2, {len(self.originals)})")

    def scores(self, questions: list[str]) -> np.ndarray:
        """Uncalibrated scores, one row per question and one column per original (higher is better).

        The re-ranker learnt from phrasings it had not seen, and a phrasing it has seen (an original's own
        title, say) scores far outside that range, where its weights say little: such a question gets the
        original it repeats first, at least ``known_phrasing_margin`` above the best other. Unseen duplicates
        of the Stack Overflow data come no closer than a cosine of 0.7 to any training document.
        """
        cleaned = [clean_text(question, self.config.keep_code_blocks) for question in questions]
        per_view = [view.zscores(cleaned) for view in self.views]
        parts = [view_zscores for view_zscores, _ in per_view]
        if self.dense is not None:
            parts.append(self.dense.zscores(cleaned))
        zscores = np.concatenate(parts, axis=1)
        scores = final_scores(zscores, self.config, self.rerank_weights, self.class_bias, self.dense is not None)
        labels = self.views[0].scorers["document_labels"]  # the words view's
        known = known_originals(per_view[0][1], labels, self.config.known_phrasing_cosine)
        rows = np.flatnonzero(known >= 0)
        others = scores[rows].copy()
        others[np.arange(len(rows)), known[rows]] = -np.inf
        promoted = others.max(axis=1) + self.config.known_phrasing_margin
        scores[rows, known[rows]] = np.maximum(scores[rows, known[rows]], promoted)
        return scores

    def probabilities(self, questions: list[str]) -> np.ndarray:
        # By hand: scipy's softmax checks its input for longer than one question's whole re-ranking takes.
        logits = self.scores(questions) / self.temperature
        exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exponentials / exponentials.sum(axis=1, keepdims=True)

    def cache_clear(self) -> None:
        """Forget every view's cached words (benchmarks measure what a cold cache costs)."""
        for view in self.views:
            view.features.cache_clear()

    def match(self, probabilities: np.ndarray, top_k: int) -> list[dict]:
        """The ``top_k`` best originals for one row of ``probabilities``, best first."""
        top_k = min(top_k, len(self.originals))
        best = np.argpartition(-probabilities, top_k - 1)[:top_k]
        best = best[np.argsort(-probabilities[best], kind="stable")]
        return [
            {
                "id": self.originals[i].id,
                "answer_id": self.originals[i].answer_id,
                "question": self.originals[i].title,
                "score": float(probabilities[i]),
                "url": self.originals[i].url,
                "answer": self.originals[i].answer,
            }
            for i in best
        ]

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything but the originals: plain numeric arrays (sparse matrices as their three arrays and shape),
        and JSON fields. Neither needs pickle to be read back."""
        arrays = {"rerank_weights": self.rerank_weights, "class_bias": self.class_bias}
        views = {}
        for view in self.views:
            feature_arrays, feature_fields = view.features.to_state()
            name = view.spec.name
            arrays |= {f"{name}.{key}": value for key, value in feature_arrays.items()}
            sparse = sorted(key for key, value in view.scorers.items() if sp.issparse(value))
            for key, value in view.scorers.items():
                if key in sparse:
                    for part in SPARSE_PARTS:
                        arrays[f"{name}.scorers.{key}.{part}"] = np.asarray(getattr(value, part))
                else:
                    arrays[f"{name}.scorers.{key}"] = value
            views[name] = {"features": feature_fields, "sparse_scorers": sparse, "known_words": view.known_words}
        fields = {"config": asdict(self.config), "temperature": self.temperature, "views": views}
        if self.dense is not None:  # absent otherwise: a model without an encoder saves what it always did
            arrays |= {f"dense.{key}": value for key, value in self.dense.arrays.items()}
            fields["dense"] = {"encoder": self.dense.reference, "files_sha256": self.dense.files_sha256}
        return arrays, fields

    @classmethod
    def from_state(
        cls, originals: list[Original], arrays: dict[str, np.ndarray], fields: dict, encoder: str | None = None
    ) -> "FaqModel":
        """The model from ``state``'s output. A model with dense scorers loads its encoder from ``encoder``, or
        else the reference it was trained with, and refuses files other than those it was trained with."""
        config = FaqModelConfig(**fields["config"])
        specs = {spec.name: spec for spec in view_specs(config)}
        if set(fields["views"]) != set(specs):
            raise ValueError(f"views {sorted(fields['views'])} do not match the config's {sorted(specs)}")
        views = []
        for name, spec in specs.items():
            view_fields = fields["views"][name]
            own = {key.removeprefix(f"{name}."): value for key, value in arrays.items() if key.startswith(f"{name}.")}
            scorers = {
                key.removeprefix("scorers."): value
                for key, value in own.items()
                if key.startswith("scorers.") and key.count(".") == 1
            }
            for scorer in view_fields["sparse_scorers"]:
                data, indices, indptr, shape = (own[f"scorers.{scorer}.{part}"] for part in SPARSE_PARTS)
                scorers[scorer] = sp.csr_matrix((data, indices, indptr), shape=tuple(shape))
            feature_arrays = {key: value for key, value in own.items() if not key.startswith("scorers.")}
            features = TextFeatures.from_state(feature_arrays, view_fields["features"])
            views.append(View(spec, features, scorers, view_fields["known_words"], len(originals)))
        return cls(
            originals=originals,
            views=views,
            rerank_weights=arrays["rerank_weights"],
            class_bias=arrays["class_bias"],
            config=config,
            temperature=float(fields["temperature"]),
            dense=_dense_from_state(arrays, fields.get("dense"), encoder),
        )


def _dense_from_state(arrays: dict[str, np.ndarray], fields: dict | None, encoder: str | None) -> DenseScorers | None:
    if fields is None:
        return None
    from deployments.faq.encoder import load_encoder  # torch: only for models trained with an encoder

    loaded = load_encoder(encoder or fields["encoder"], expected_sha256=fields["files_sha256"])
    dense_arrays = {key: arrays[f"dense.{key}"] for key in DENSE_ARRAYS}
    return DenseScorers(loaded.encoder, loaded.reference, loaded.files_sha256, dense_arrays)
