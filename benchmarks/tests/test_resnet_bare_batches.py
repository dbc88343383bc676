"""The bare ResNet model's input batches: decoded in line, or the next one by threads while the model runs."""

import threading

import torch

from benchmarks.resnet_throughput import decoded_batches
from benchmarks.workloads import images
from deployments.resnet.preprocess import preprocess


def test_batches_decoded_ahead_by_threads_equal_batches_decoded_in_line():
    data = images()[0]
    threads_before = threading.active_count()
    expected = torch.stack([preprocess(data, 10**9)] * 3)
    in_line, ahead = decoded_batches(data, 3), decoded_batches(data, 3, decode_threads=2)
    for _ in range(3):
        assert torch.equal(next(in_line), expected)
        assert torch.equal(next(ahead), expected)
    ahead.close()  # waits for the batch being decoded ahead and stops the threads
    in_line.close()
    assert threading.active_count() == threads_before
