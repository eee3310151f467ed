"""A client for REMI retrieval models behind TF Serving or `remi serve` (REST or gRPC, one code path)."""

from __future__ import annotations

import csv
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np


class Candidates(NamedTuple):
    """One user's lookup: merged candidates with the interest that retrieved each, and per-interest lists."""

    item_ids: list[str]
    scores: list[float]
    interest: list[int]  # -1: a popularity candidate (the history had no known item)
    interest_item_ids: list[list[str]]  # [K][k]
    interest_scores: list[list[float]]


class LookupFailed(RuntimeError):
    """The server rejected the request (its message is kept)."""


class ServerUnavailable(LookupFailed):
    """No server answered at the address (not started yet, or gone)."""


def _decode(values: np.ndarray | list) -> list:
    return [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]


class RemiClient:
    """Looks up candidates for histories of item ids.

    Args:
      server: "http://host:port" (REST) or "host:port" (gRPC when `use_grpc`; "grpc://host:port" too, a URL of
        another scheme is refused).
      model: served model name (the retrieval model, e.g. "remi" or "remi-exact").
      signature_name: "serving_default" (history items excluded) or "include_history".
    """

    def __init__(self, server: str, model: str = "remi", use_grpc: bool = False,
                 signature_name: str = "serving_default", timeout: float = 30.0) -> None:
        self.model, self.use_grpc, self.signature_name, self.timeout = model, use_grpc, signature_name, timeout
        if use_grpc:
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            if "://" in server and not server.startswith("grpc://"):
                raise ValueError(f"--grpc takes HOST:PORT (TF Serving's gRPC port, 8500 by default), not the URL "
                                 f"{server!r}: pass e.g. 127.0.0.1:8500, or drop --grpc to look up over REST at "
                                 "that URL")
            self.target = server.removeprefix("grpc://")
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(self.target))
        else:
            self.target = server if server.startswith("http") else f"http://{server}"

    def lookup_when_up(self, histories: Sequence[Sequence[str]], k: int | None = None, wait_seconds: float = 0.0,
                       user_features: Mapping[str, Sequence[str]] | None = None) -> list[Candidates]:
        """`lookup`, retrying for up to `wait_seconds` while no server answers (e.g. one still starting)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                return self.lookup(histories, k, user_features)
            except ServerUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)

    def lookup(self, histories: Sequence[Sequence[str]], k: int | None = None,
               user_features: Mapping[str, Sequence[str]] | None = None) -> list[Candidates]:
        """Candidates per history (oldest item first); `k` (>= 1) truncates the served lists.
        `user_features`: {column: one raw value per history}, for a model with user profile features."""
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        width = max([len(h) for h in histories] + [1])
        inputs: dict[str, list] = {"history": [list(h) + [""] * (width - len(h)) for h in histories]}
        for column, values in (user_features or {}).items():
            if len(values) != len(histories):
                raise ValueError(f"user feature {column!r}: {len(values)} values for {len(histories)} histories")
            inputs[column] = list(values)
        outputs = self._grpc(inputs) if self.use_grpc else self._rest(inputs)
        if "item_ids" not in outputs:
            raise LookupFailed(f"model {self.model!r} answers {sorted(outputs)}, not candidates: look up a retrieval "
                               "model (e.g. remi or remi-exact), not the query tower")
        results = []
        for row in range(len(histories)):
            results.append(Candidates(
                item_ids=_decode(outputs["item_ids"][row][:k]),
                scores=[float(s) for s in outputs["scores"][row][:k]],
                interest=[int(i) for i in outputs["interest"][row][:k]],
                interest_item_ids=[_decode(ids[:k]) for ids in outputs["interest_item_ids"][row]],
                interest_scores=[[float(s) for s in scores[:k]] for scores in outputs["interest_scores"][row]]))
        return results

    def _rest(self, inputs: dict[str, list]) -> dict:
        body = json.dumps({"signature_name": self.signature_name, "inputs": inputs}).encode()
        request = urllib.request.Request(f"{self.target}/v1/models/{self.model}:predict", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())["outputs"]
        except urllib.error.HTTPError as error:
            message = error.read().decode("utf-8", "replace")
            raise LookupFailed(f"{self.target} answered {error.code}: {message}") from None
        except (urllib.error.URLError, ConnectionError) as error:
            raise ServerUnavailable(f"no server answers at {self.target} ({getattr(error, 'reason', error)})") from None
        except http.client.HTTPException as error:
            raise LookupFailed(f"{self.target} does not answer HTTP ({type(error).__name__}): is it a gRPC port? "
                               "Then pass --grpc and HOST:PORT") from None

    def _grpc(self, inputs: dict[str, list]) -> dict:
        import grpc
        import tensorflow as tf

        try:
            response = self._stub.Predict(predict_request(self.model, self.signature_name, inputs),
                                          timeout=self.timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                raise ServerUnavailable(f"no server answers at {self.target} ({error.details()})") from None
            raise LookupFailed(f"{self.target} answered {error.code().name}: {error.details()}") from None
        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def predict_request(model: str, signature_name: str, inputs: dict[str, list]) -> Any:
    """TF Serving's gRPC PredictRequest for `model`'s `signature_name`, string tensors from `inputs`."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature_name
    for name, values in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
    return request


def candidate_rows(candidates: Candidates, names: dict[str, str] | None = None) -> list[dict]:
    """The merged list as rows: rank (from 1), item_id, name (when `names` has it, else None), score and the
    interest that retrieved it (-1: a popularity candidate)."""
    return [{"rank": rank + 1, "item_id": item, "name": (names or {}).get(item), "score": score, "interest": interest}
            for rank, (item, score, interest) in enumerate(zip(candidates.item_ids, candidates.scores,
                                                               candidates.interest, strict=True))]


def format_candidates(history: Sequence[str], candidates: Candidates, names: dict[str, str] | None = None) -> str:
    """A readable table of the merged list grouped by the interest that retrieved each item: per interest
    its share of the list, then rank, item (and its name, when `names` has it) and score; an interest
    with no item in the list is shown with its own best item. A history without a known item gets the
    popular items alone, under one line that says so (the interests read nothing, their lists mean nothing)."""
    def shown(item: str) -> str:
        return f"{item} ({names[item]})" if names and item in names else item

    rows = candidate_rows(candidates, names)
    lines = [f"history: {', '.join(shown(item) for item in history) or '(empty)'}"]
    if rows and all(row["interest"] < 0 for row in rows):  # the interests read nothing: their lists mean nothing
        lines.append("no item of the history is known to the model: the most popular items instead")
        lines.append(f"popular items: {len(rows)}")
        return "\n".join(lines + [_row_line(row, shown) for row in rows])
    interests = sorted({row["interest"] for row in rows} | set(range(len(candidates.interest_item_ids))),
                       key=lambda interest: (interest < 0, interest))  # popularity candidates last
    for interest in interests:
        own = [row for row in rows if row["interest"] == interest]
        title = "popular items (no known history item)" if interest < 0 else f"interest #{interest}"
        if not own:
            best = candidates.interest_item_ids[interest][:1]
            lines.append(f"{title}: no item in the merged list" + (f" (its best: {shown(best[0])})" if best else ""))
            continue
        lines.append(f"{title}: {len(own)} of {len(rows)}")
        lines += [_row_line(row, shown) for row in own]
    return "\n".join(lines)


def _row_line(row: dict, shown: Callable[[str], str]) -> str:
    """One candidate of the table: rank, item (and name) and score."""
    return f"  {row['rank']:>4}  {shown(row['item_id'])[:48]:<48} {row['score']:>9.4f}"


def read_item_names(path: str) -> dict[str, str]:
    """item id -> name from a CSV or TSV with a header whose first two columns are the id and the name
    (RecBole's `ml-100k.item`, an `items.csv` with `item_id,title,...`)."""
    with open(path, encoding="utf-8", newline="") as stream:
        header = stream.readline()
        delimiter = "\t" if "\t" in header else ","
        names = {}
        for line_number, row in enumerate(csv.reader(stream, delimiter=delimiter), start=2):
            if not row:
                continue
            if len(row) < 2:
                raise ValueError(f"{path}, line {line_number}: expected an item id and a name, got {row!r}")
            names[row[0]] = row[1]
    return names
