"""The training stream a worker iterates: batches in order, and an error instead of a wait
without end when the input pipeline delivers nothing in time."""

import time

import pytest
import ray

from pipeline.training.data_feed import InputStarvedError, StepFeed


def slow_rows(batch, seconds):
    time.sleep(seconds)
    return batch


def rows(count):
    return ray.data.from_items([{"x": i} for i in range(count)])


def test_batches_come_in_order_and_a_dry_stream_is_an_error(ray_session):
    feed = StepFeed(rows(10).iterator(), 4, timeout_s=60)
    batches = iter(feed)
    assert next(batches)["x"].tolist() == [0, 1, 2, 3]
    assert next(batches)["x"].tolist() == [4, 5, 6, 7]
    with pytest.raises(RuntimeError, match="ended before max_steps"):
        next(batches)  # drop_last: 2 rows left over, then the stream is dry


def test_an_input_pipeline_that_delivers_nothing_in_time_fails_with_the_settings(ray_session):
    stuck = rows(8).map_batches(slow_rows, batch_size=8, fn_kwargs={"seconds": 8})
    feed = StepFeed(stuck.iterator(), 4, timeout_s=2, starved_hint="Change ray.num_cpus.")
    started = time.monotonic()
    with pytest.raises(
        InputStarvedError, match=r"within 2 s \(ray.resource_timeout_s\).*ray.num_cpus"
    ):
        next(iter(feed))
    assert time.monotonic() - started < 6
