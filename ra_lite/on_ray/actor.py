"""The Ray Data actor that judges blocks of rows (ra_lite.on_ray.engine builds the pipeline).

A row is {"id": str, "request": the request as JSON text}; the actor answers {"id", "record"
(the batch record as JSON text), "cached"}. Ray constructs the actor once per worker process and
calls it once per block, so the model is loaded once and every block's rows are judged together
through the judge queue (the slot scheduler on a local model, concurrent requests on servers).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ra_lite.batch import BatchItem, local_records, record_of
from ra_lite.errors import RaLiteError


class JudgeActor:
    def __init__(self, model: str | None = None, remote: dict | None = None,
                 options: dict | None = None, n_ctx: int | None = None,
                 slots: int | str = "auto", use_cache: bool = True,
                 n_threads: int | None = None):
        from ra_lite.options import JudgeOptions

        self.options = JudgeOptions(**(options or {}))
        self.slots = slots
        self.cache = self.store = None
        if remote:
            from ra_lite.remote import load_remote

            remote = dict(remote)
            self.judge = load_remote(remote.pop("url"), options=self.options, **remote)
            return
        if model and str(model).endswith(".gguf") and not Path(model).is_file():
            raise RaLiteError(
                f"node {socket.gethostname()} has no model file {model}",
                "put the GGUF on a path every node sees (a shared filesystem), or run "
                "`ra-lite pull NAME` on each node and pass the name")
        import ra_lite

        # Several actors on one node each start llama.cpp's spinning threads: --threads
        # (cores / actors) keeps them from slowing each other down.
        kwargs = {k: v for k, v in (("n_ctx", n_ctx), ("n_threads", n_threads)) if v}
        self.judge = ra_lite.load(model, options=self.options, notify=lambda message: None,
                                  **kwargs)
        if use_cache:
            # One cache per node, in the node's own user cache (SQLite on a local disk: never
            # share one over a network filesystem).
            from ra_lite.judgment_cache import JudgmentCache, for_model

            self.store = JudgmentCache(notify=lambda message: None)
            self.cache = for_model(model, self.store)

    def __call__(self, batch: dict) -> dict:
        from ra_lite.request import JudgeRequest

        ids = [str(i) for i in batch["id"]]
        rows, records = [], {}
        for item_id, text in zip(ids, batch["request"]):
            try:
                rows.append(BatchItem(item_id, 0, JudgeRequest.from_dict(json.loads(text))))
            except (RaLiteError, ValueError) as error:      # this row's own problem
                problem = error if isinstance(error, RaLiteError) else \
                    RaLiteError(f"request {item_id!r} is not valid JSON ({error})", "fix it")
                records[item_id] = (record_of(item_id, None, problem), False)
        for row, record, cached in local_records(self.judge, self.slots, self.cache,
                                                 self.options, rows):
            records[row.id] = (record, cached)
        return {"id": ids,
                "record": [json.dumps(records[i][0], ensure_ascii=False) for i in ids],
                "cached": [records[i][1] for i in ids],
                "pid": [os.getpid()] * len(ids)}
