"""Server-side batching for `remi serve`, as TF Serving's batching does it: requests for the same
signature of the same model version that wait at the same time run as one call.

When one of `num_batch_threads` batch slots is free, a waiting request's own thread takes the slot and the
oldest waiting request and every other waiting request with the same key, up to `max_batch_rows` history rows
(a longer request runs alone), waits up to `batch_timeout_s` for more when the batch is not full (0: no wait,
so a lone request is not delayed), runs them as one batch and hands each request its rows of the outputs.
Under load, requests that arrive while a batch runs form the next one. The requests' threads run the batches
(no batch thread of its own), so a lone request is not handed between threads (BENCHMARKS.md 7.5), and a
thread is woken only when its own request is done or a slot is handed to it, not whenever any batch ends
(BENCHMARKS.md 7.8).
String inputs of different widths are padded on the right with "" (the served signatures skip "": see
export/saved_model.py). When a batch of several requests fails, each of them
is rerun alone, so that an error reaches the request that caused it and no other.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Hashable

import numpy as np

Feeds = dict[str, np.ndarray]  # input name -> [rows, ...]
RunFn = Callable[[Feeds], Feeds]  # one signature call: feeds -> outputs, each [rows, ...]


class _Request:
    def __init__(self, key: Hashable, run: RunFn, feeds: Feeds, lock: threading.Lock) -> None:
        self.key, self.run, self.feeds = key, run, feeds
        self.rows = len(next(iter(feeds.values())))
        self.turn = threading.Condition(lock)  # notified (holding the batcher's lock) when done or handed a slot
        self.done = False
        self.has_slot = False
        self.outputs: Feeds | None = None
        self.error: BaseException | None = None


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    """[rows_i, width_i] arrays -> [sum rows, max width]: strings padded with "" on the right."""
    width = max(array.shape[1] for array in arrays) if arrays[0].ndim == 2 else None
    if width is not None and any(array.shape[1] != width for array in arrays):
        arrays = [np.pad(array, [(0, 0), (0, width - array.shape[1])], constant_values="") for array in arrays]
    return np.concatenate(arrays)


class Batcher:
    """Runs requests in batches, at most `num_batch_threads` at a time (see the module docstring).

    Args:
      max_batch_rows: most history rows in one batch (TF Serving's max_batch_size).
      batch_timeout_s: how long a batch that is not full waits for more requests (batch_timeout_micros).
      num_batch_threads: batches run at the same time (num_batch_threads).
    """

    def __init__(self, max_batch_rows: int = 64, batch_timeout_s: float = 0.0, num_batch_threads: int = 1) -> None:
        if max_batch_rows < 1 or batch_timeout_s < 0 or num_batch_threads < 1:
            raise ValueError(f"batching needs max_batch_rows >= 1, batch_timeout_s >= 0 and num_batch_threads >= 1, "
                             f"got {max_batch_rows}, {batch_timeout_s}, {num_batch_threads}")
        self.max_batch_rows, self.batch_timeout_s = max_batch_rows, batch_timeout_s
        self.batches_run = 0  # batch calls made (for tests and benchmarks: requests / batches = mean batch)
        self._lock = threading.Lock()
        self._arrivals = threading.Condition(self._lock)  # notified when a request arrives (batch_timeout_s > 0)
        self._waiting: collections.deque[_Request] = collections.deque()
        self._free_slots = num_batch_threads
        self._stopped = False

    def run(self, key: Hashable, run: RunFn, feeds: Feeds) -> Feeds:
        """Runs `run(feeds)` within a batch of waiting requests with the same `key` (requests with one key
        must have the same `run`); returns this request's rows of the outputs, or raises its error.

        The calling thread sleeps until its request is done or it is handed a free batch slot; with a slot it
        runs batches of the oldest waiting requests (its own among them) until its request is done, then hands
        the slot to the oldest waiting request without one. Each thread is woken only for its own request (a
        batch wakes its requests' threads, not every waiting one)."""
        request = _Request(key, run, feeds, self._lock)
        with self._lock:
            if self._stopped:
                raise RuntimeError("the batcher is stopped")
            self._waiting.append(request)
            if self.batch_timeout_s:
                self._arrivals.notify_all()  # a batch waiting for more requests may now be full
            if self._free_slots:
                self._free_slots -= 1
                request.has_slot = True
            while not request.done:
                if not request.has_slot:
                    request.turn.wait()
                elif not self._waiting:  # its request runs in another slot's batch: the slot is not needed
                    self._pass_slot(request)
                else:
                    self._run_holding_lock(self._take_batch())
            if request.has_slot:
                self._pass_slot(request)
        if request.error is not None:
            raise request.error
        assert request.outputs is not None  # set with the error unset, before `done`
        return request.outputs

    def stop(self) -> None:
        """Fails the requests still waiting; batches running finish."""
        with self._lock:
            self._stopped = True
            for request in self._waiting:
                request.error = RuntimeError("the server is stopping")
                request.done = True
                request.turn.notify()
            self._waiting.clear()
            self._arrivals.notify_all()

    def _pass_slot(self, holder: _Request) -> None:
        """Hands `holder`'s batch slot to the oldest waiting request without one, or frees it; holding the lock."""
        holder.has_slot = False
        successor = next((request for request in self._waiting if not request.has_slot), None)
        if successor is None:
            self._free_slots += 1
        else:
            successor.has_slot = True
            successor.turn.notify()

    def _take_batch(self) -> list[_Request]:
        """The oldest waiting request and the waiting requests of its key (see the docstring); called holding
        the lock, with a request waiting."""
        first = self._waiting.popleft()
        batch, rows = [first], first.rows
        deadline = time.monotonic() + self.batch_timeout_s
        while True:
            for request in list(self._waiting):
                if request.key == first.key and rows + request.rows <= self.max_batch_rows:
                    self._waiting.remove(request)
                    batch.append(request)
                    rows += request.rows
            remaining = deadline - time.monotonic()
            if rows >= self.max_batch_rows or remaining <= 0 or self._stopped:
                return batch
            self._arrivals.wait(remaining)

    def _run_holding_lock(self, batch: list[_Request]) -> None:
        """Runs `batch` with the lock released, then marks each of its requests done (outputs or error) and
        wakes its thread; called and returns holding the lock."""
        self.batches_run += 1
        self._lock.release()
        try:
            self._run(batch)
        finally:
            self._lock.acquire()
            for request in batch:
                if request.outputs is None and request.error is None:
                    request.error = RuntimeError("the batch was interrupted")
                request.done = True
                request.turn.notify()

    def _run(self, batch: list[_Request]) -> None:
        """Runs `batch`: each request gets its outputs or its error."""
        try:
            self._run_batch(batch)
        except Exception as error:  # noqa: BLE001 (delivered to the requests, which raise it)
            if len(batch) == 1:
                batch[0].error = error
            else:  # rerun one by one: the error goes to the request that caused it
                for request in batch:
                    try:
                        self._run_batch([request])
                    except Exception as single_error:  # noqa: BLE001 (any failure of one request goes to its sender)
                        request.error = single_error

    @staticmethod
    def _run_batch(batch: list[_Request]) -> None:
        feeds = batch[0].feeds if len(batch) == 1 else {
            name: _concatenate([request.feeds[name] for request in batch]) for name in batch[0].feeds}
        outputs = batch[0].run(feeds)
        start = 0
        for request in batch:
            request.outputs = {name: value[start:start + request.rows] for name, value in outputs.items()}
            start += request.rows
