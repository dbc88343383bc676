"""Scoring a group of requests' questions in chunks, each request within its own work budget.

The FAQ replica scores the requests the ingress groups into one call (serve_app.coalesce). It does so a chunk at a
time: before each chunk, the questions of requests whose deadline has passed are dropped, and those requests get a
``WorkBudgetExceeded`` instead of results while the others are answered as usual. Work on a request therefore stops
within one chunk of its deadline, and a chunk holds at most ``max_chars`` characters of questions (the costliest
question known costs ~40 ms for 10,000 characters: benchmarks/results/worst_inputs.md).

Chunks take the requests' questions in turn (each request's first question, then each one's second, ...): a request
of one question is scored in the first chunk, not behind another's sixty-four, and chunks still mix requests, which
keeps grouping's throughput (one matrix product per chunk: CHUNK_QUESTIONS).
"""

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from deployments.errors import WorkBudgetExceeded
from deployments.faq.model import FaqModel

# A chunk: the questions of one matrix product. Work past a deadline stops within one chunk, so a chunk is bounded
# in cost: the costliest questions cost ~4 ms per 1,000 characters (benchmarks/results/worst_inputs.md), so a chunk
# of them stays under ~0.1 s, and a question over the bound is a chunk of its own. Ordinary questions fill the bound
# in questions first, where a larger product gains little: ~0.08 ms a question in chunks of 16 to 64 against 0.18 ms
# one at a time (demo model), and a group of 16 x 64 ordinary questions cost less CPU in chunks of 32 (128 us a
# question) than as one product (172 us).
CHUNK_QUESTIONS = 32
CHUNK_CHARS = 20_000

# One request's questions and how many matches each gets; None: every original, ranked, as the reference
# service's ``[Id, AnswerId, probability]`` rows (its /score answer).
FaqQuery = tuple[list[str], int | None]


class GroupScoring:
    """One group's scoring, a chunk per ``score_next_chunk`` call, then ``results`` (``step`` does both); all on one
    thread.

    ``budgets_s`` are each query's remaining seconds of work (None: no budget), turned into deadlines on this
    replica's monotonic clock when the group is received: the caller's clock never matters.
    """

    def __init__(
        self,
        model: FaqModel,
        queries: list[FaqQuery],
        budgets_s: list[float | None] | None = None,
        max_questions: int = CHUNK_QUESTIONS,
        max_chars: int = CHUNK_CHARS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budgets_s is not None and len(budgets_s) != len(queries):
            raise ValueError(f"{len(budgets_s)} budgets for {len(queries)} queries")
        self.model = model
        self.queries = queries
        self.budgets_s = budgets_s or [None] * len(queries)
        received = clock()
        self.deadlines = [np.inf if budget is None else received + budget for budget in self.budgets_s]
        self.max_questions = max_questions
        self.max_chars = max_chars
        self.clock = clock
        longest = max((len(questions) for questions, _ in queries), default=0)
        # (query, question) in turns: every query's first question, then every query's second, ...
        self._pending = deque(
            (query, index)
            for index in range(longest)
            for query, (questions, _) in enumerate(queries)
            if index < len(questions)
        )
        self._rows: list[list[np.ndarray | None]] = [[None] * len(questions) for questions, _ in queries]
        self._left = [len(questions) for questions, _ in queries]
        self.over_budget: set[int] = set()  # queries whose deadline passed before all their questions were scored
        self.questions_scored = 0
        self.chunks = 0

    def score_next_chunk(self) -> bool:
        """Drop the questions of queries past their deadline, score the next chunk; False when nothing is left."""
        self._drop_expired()
        chunk: list[tuple[int, int]] = []
        chars = 0
        while self._pending and len(chunk) < self.max_questions:
            query, index = self._pending[0]
            size = len(self.queries[query][0][index])
            if chunk and chars + size > self.max_chars:
                break
            self._pending.popleft()
            chunk.append((query, index))
            chars += size
        if chunk:
            probabilities = self.model.probabilities([self.queries[query][0][index] for query, index in chunk])
            for (query, index), row in zip(chunk, probabilities, strict=True):
                self._rows[query][index] = row
                self._left[query] -= 1
            self.questions_scored += len(chunk)
            self.chunks += 1
        return bool(self._pending)

    def step(self) -> list[list[list] | WorkBudgetExceeded] | None:
        """The next chunk, and the results once none is left (None until then): one turn on the scoring thread
        per chunk, a group that fits one chunk (the usual case) included."""
        return None if self.score_next_chunk() else self.results()

    def _drop_expired(self) -> None:
        now = self.clock()
        expired = {
            query
            for query, deadline in enumerate(self.deadlines)
            if deadline <= now and self._left[query] and query not in self.over_budget
        }
        if expired:
            self.over_budget |= expired
            self._pending = deque(item for item in self._pending if item[0] not in expired)

    def results(self) -> list[list[list] | WorkBudgetExceeded]:
        """Per query: per question, its matches, or its ranking rows when the query's top_k is None; or, for a
        query over its budget, why it has none."""
        return [self._result(query) for query in range(len(self.queries))]

    def _result(self, query: int) -> list[list] | WorkBudgetExceeded:
        questions, top_k = self.queries[query]
        if query in self.over_budget:
            scored = len(questions) - self._left[query]
            return WorkBudgetExceeded(
                f"the request's work budget ran out ({self.budgets_s[query]:.3g} s were left when it reached the "
                f"FAQ model) after {scored} of its {len(questions)} questions were scored; the rest were not. "
                "Send fewer or shorter questions, or retry when the service is less busy"
            )
        rows = self._rows[query]
        model = self.model
        if top_k is None:
            rankings = [model.match(row, len(model.originals)) for row in rows]
            return [[[m["id"], m["answer_id"], m["score"]] for m in ranking] for ranking in rankings]
        return [model.match(row, top_k) for row in rows]
