"""The FAQ matcher (scikit-learn, CPU): a question in, the best-matching originals of an FAQ out.

Serving, one question through the stages in order:
    text.py         1 raw question -> cleaned text
    features.py     2 cleaned text -> TF-IDF rows, per view of the texts (text_views.py: words, stems)
    scorers.py      3 TF-IDF rows -> z-scores of every scorer for every original, per view
    rerank.py       4 z-scores -> one score per original (two conditional-logit stages)
    model.py        5 FaqModel: questions -> probabilities -> matches (runs 1-4; known phrasings first)
    artifact.py     6 FaqModel <-> a verified model directory (local or fsspec URL)
Beside them: scoring_loops.py, the numba-compiled loops stages 2-4 call; numba_cache.py, their cache where a
read-only root allows it, and numba_seed.py, which compiles it at image build; config.py, the model's
settings; data.py, the FAQ files (TSV, JSONL); demo.py, the embedded demo model; deployment.py, the Ray Serve
shell. Fitting, cross-validation and metrics live apart, in training/.
"""
