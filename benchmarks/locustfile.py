"""Locust load test of the Serve application, for users who load-test with Locust (as the reference did).

    pip install -e ".[bench]"
    SERVE_APP_BENCH_API_KEY=... locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000
    locust -f benchmarks/locustfile.py --host URL --headless -u 16 -r 16 -t 60s --csv benchmarks/results/locust

Traffic mirrors benchmarks.workloads' "mixed" scenario: four FAQ questions for each image, the same
questions and photos as the other benchmarks. ``SERVE_APP_BENCH_API_KEY`` is sent as the Bearer key.
"""

import os

from locust import FastHttpUser, between, task

from benchmarks.load import Call
from benchmarks.peers.servers import SERVE_PATHS
from benchmarks.workloads import faq_single, image_one

API_KEY = os.environ.get("SERVE_APP_BENCH_API_KEY", "")


class ServeAppUser(FastHttpUser):
    wait_time = between(0, 0.01)

    def on_start(self) -> None:
        self.questions = faq_single(SERVE_PATHS)
        self.images = image_one(SERVE_PATHS)
        self.auth = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}

    def _post(self, call: Call, name: str) -> None:
        headers = {"Content-Type": call.content_type, **self.auth}
        self.client.post(call.path, data=call.body, headers=headers, name=name)

    @task(4)
    def match_question(self) -> None:
        self._post(self.questions(), "/faq/match")

    @task(1)
    def classify_image(self) -> None:
        self._post(self.images(), "/images/classify")
