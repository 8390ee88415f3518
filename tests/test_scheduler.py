"""The slot scheduler on a scripted fake multi-sequence engine (no model).

Every judgment scheduled among others must produce exactly what it produces alone on the same
fake (each slot is a FakeEngine on its own sequence), whatever the batch size, slot count,
admission order or KV limit; failures and cancellations stay in their slot.
"""

from __future__ import annotations

import pytest

from ra_lite.errors import RaLiteError
from ra_lite.grammar import parse_answer
from ra_lite.runtime.decode import (DecodeResult, JudgmentCancelled, ReadLogits, Sample,
                                    SamplingSettings, Start, judgment_steps)
from ra_lite.runtime.scheduler import SequenceTask, SlotScheduler
from tests.support.fake_engine import FakeEngine, decode, drive
from tests.support.fake_multi_engine import FakeMultiEngine

PREFIX = [40, 41, 42, 43, 44, 45]


def names(n):
    return [f"model-{i}" for i in range(1, n + 1)]


class ListSource:
    """Hands out tasks in order; None once empty (closed)."""

    def __init__(self, tasks):
        self.tasks = list(tasks)
        self.taken = 0

    def take(self, block):
        if not self.tasks:
            return None
        self.taken += 1
        return self.tasks.pop(0)


class Outcomes(dict):
    def recorder(self, key):
        def finish(result, error):
            assert key not in self, "finish called twice"
            self[key] = (result, error)
        return finish


def judgment_case(i):
    """A varied judgment: prompt, names, budget, seed."""
    prompt = PREFIX[: 2 + i % 5] + [50 + (i * 7 + k) % 30 for k in range(3 + i % 11)]
    return prompt, names(2 + i % 9), (i * 5) % 23, i


def sequential(case) -> DecodeResult:
    prompt, masked, budget, seed = case
    engine = FakeEngine()
    settings = SamplingSettings(temperature=1.0, top_p=1.0, seed=seed)
    engine.set_sampling(settings)
    return decode(engine, prompt, masked, think_budget=budget, settings=settings)


def assert_each_matches_its_solo_run(outcomes, cases):
    for i, case in enumerate(cases):
        result, error = outcomes[i]
        assert error is None
        alone = sequential(case)
        assert (result.text, result.think_tokens, result.scores, result.ranking) == \
            (alone.text, alone.think_tokens, alone.scores, alone.ranking)


def task(engine, case, outcomes, key, cancelled=None, kv_tokens=None):
    prompt, masked, budget, seed = case
    settings = SamplingSettings(temperature=1.0, top_p=1.0, seed=seed)
    steps = judgment_steps(engine.vocab, prompt, masked, think_budget=budget, settings=settings)
    kv = kv_tokens if kv_tokens is not None else len(prompt) + budget + 40 * len(masked)
    extra = {"cancelled": cancelled} if cancelled else {}
    return SequenceTask(prompt, settings, steps, kv, outcomes.recorder(key), **extra)


@pytest.mark.parametrize("slots", range(1, 9))
def test_scheduled_judgments_match_sequential_ones(slots):
    engine = FakeMultiEngine(n_batch=16)          # small batches: prompts are split
    cases = [judgment_case(i) for i in range(12)]
    outcomes = Outcomes()
    SlotScheduler(engine, slots, PREFIX).run(
        ListSource(task(engine, c, outcomes, i) for i, c in enumerate(cases)))
    assert sorted(outcomes) == list(range(12))
    assert_each_matches_its_solo_run(outcomes, cases)
    for i, case in enumerate(cases):
        result, _ = outcomes[i]
        _, scores, ranking = parse_answer(result.text, case[1])
        assert scores == result.scores and ranking == result.ranking
        assert len(result.think_tokens) <= case[2]             # its own budget
        assert result.prompt_tokens_reused == min(2 + i % 5, len(case[0]) - 1)
    assert engine.max_active <= slots
    assert all(not seq for seq in engine.seqs.values())       # every slot's KV released


@pytest.mark.parametrize("n_ctx", [100_000, None])
def test_a_prompt_takes_the_longer_start_a_running_slot_already_evaluated(n_ctx):
    """One principle, many prompts (a typical batch): later judgments share the principle's
    cells with a running slot instead of prefilling them, and still match their solo runs. With
    a context that fits only two worst cases, the shared cells never overdraw the KV budget."""
    principle = list(range(60, 84))
    cases = [(PREFIX + principle + [90 + i, 91 + i], names(2 + i % 3), 3 + i % 4, i)
             for i in range(8)]
    worst = max(len(c[0]) - len(PREFIX) + c[2] + 40 * len(c[1]) for c in cases)
    engine = FakeMultiEngine(n_batch=16, n_ctx=n_ctx or len(PREFIX) + 2 * worst)
    outcomes = Outcomes()
    SlotScheduler(engine, 4, PREFIX).run(
        ListSource(task(engine, c, outcomes, i) for i, c in enumerate(cases)))
    assert engine.refused == []
    assert_each_matches_its_solo_run(outcomes, cases)
    assert engine.copies, "no judgment reused a running slot's cells"
    reused = [outcomes[i][0].prompt_tokens_reused for i in range(8)]
    assert reused[0] == len(PREFIX)                        # nothing running yet: the prefix
    assert max(reused) == len(PREFIX) + len(principle)     # the principle's cells shared too
    assert all(not seq for seq in engine.seqs.values())


@pytest.mark.parametrize("slots, tight", [(1, False), (2, False), (2, True)])
def test_a_finished_judgments_cells_serve_the_next_prompt(slots, tight):
    """One slot (or two), one request after another: the next prompt shares the principle with
    the judgment that just finished, whose cells its slot kept. A context with room for one
    worst case only forces the kept cells out instead of refusing or overdrawing."""
    principle = list(range(60, 84))
    cases = [(PREFIX + principle + [90 + i], names(2), 2, i) for i in range(4)]
    worst = max(len(c[0]) - len(PREFIX) + c[2] + 40 * len(c[1]) for c in cases)
    engine = FakeMultiEngine(n_batch=64, n_ctx=len(PREFIX) + worst if tight else 100_000)
    outcomes = Outcomes()
    scheduler = SlotScheduler(engine, slots, PREFIX)
    scheduler.run(ListSource(task(engine, c, outcomes, i) for i, c in enumerate(cases)))
    assert engine.refused == []
    assert_each_matches_its_solo_run(outcomes, cases)
    reused = [outcomes[i][0].prompt_tokens_reused for i in range(4)]
    if tight:   # one judgment at a time, and the kept cells never fit beside the next one
        assert scheduler.peak_active == 1 and reused == [len(PREFIX)] * 4
    elif slots == 1:
        assert reused == [len(PREFIX)] + [len(PREFIX) + len(principle)] * 3
    else:
        assert max(reused) == len(PREFIX) + len(principle)
    assert all(not seq for seq in engine.seqs.values())      # released once the source closed


def test_phases_share_one_decode_call():
    engine = FakeMultiEngine(n_batch=64)
    outcomes = Outcomes()
    cases = [(PREFIX + [50, 51], names(3), 0, 1),                 # answer only: ends first
             (PREFIX + [52, 53], names(3), 22, 2),                # reasoning
             (PREFIX + list(range(50, 90)), names(4), 5, 3)]      # admitted while 1 reasons
    tasks = [task(engine, c, outcomes, i) for i, c in enumerate(cases)]
    SlotScheduler(engine, 2, PREFIX).run(ListSource(tasks))
    # Some round carries a prompt chunk or forced span of one slot beside a single sampled
    # reasoning token of another.
    mixed = [b for b in engine.batches if len(b) == 2 and sorted(n for _, n, _ in b)[0] == 1
             and max(n for _, n, _ in b) > 1]
    assert mixed
    assert all(error is None for _, error in outcomes.values())


def scripted(prompt, samples, log, key, fail_at=None, feed_empty=False):
    """A minimal step generator: Start, `samples` Sample steps, one ReadLogits."""
    reused = yield Start(prompt)
    log.append(("start", key))
    tokens, feed = [], []
    for i in range(samples):
        if fail_at == i:
            raise ValueError(f"boom in {key}")
        (token,) = yield Sample(feed)
        tokens.append(token)
        feed = [] if feed_empty and i == 0 else [token]
    logits = yield ReadLogits(feed + [7, 8], [1, 2, 3])
    log.append(("end", key))
    return {"key": key, "reused": reused, "tokens": tokens, "logits": list(logits)}


def scripted_task(prompt, samples, log, key, outcomes, kv=100, **kw):
    return SequenceTask(prompt, SamplingSettings(0.5, 1.0, key if isinstance(key, int) else 0),
                        scripted(prompt, samples, log, key, **kw), kv, outcomes.recorder(key))


def test_admission_in_order_and_an_early_finish_frees_its_slot():
    engine, log, outcomes = FakeMultiEngine(), [], Outcomes()
    lengths = [30, 2, 30, 2, 2]
    tasks = [scripted_task(PREFIX + [60 + i], n, log, i, outcomes) for i, n in enumerate(lengths)]
    SlotScheduler(engine, 2, PREFIX).run(ListSource(tasks))
    starts = [k for event, k in log if event == "start"]
    assert starts == [0, 1, 2, 3, 4]                         # admitted in request order
    # Task 2 starts when short task 1 ends, long before long task 0 does.
    assert log.index(("end", 1)) < log.index(("start", 2)) < log.index(("end", 0))
    assert all(outcomes[i][0]["tokens"] for i in range(5))
    assert all(outcomes[i][0]["reused"] == len(PREFIX) for i in range(5))


def test_an_exception_in_one_slot_leaves_the_others_alone():
    engine, log, outcomes = FakeMultiEngine(), [], Outcomes()
    tasks = [scripted_task(PREFIX + [61], 8, log, "a", outcomes),
             scripted_task(PREFIX + [62], 8, log, "bad", outcomes, fail_at=3),
             scripted_task(PREFIX + [63], 8, log, "c", outcomes)]
    SlotScheduler(engine, 3, PREFIX).run(ListSource(tasks))
    result, error = outcomes["bad"]
    assert result is None and isinstance(error, ValueError) and "boom in bad" in str(error)
    for key in "ac":
        alone_log, alone = [], Outcomes()
        solo = FakeMultiEngine()
        SlotScheduler(solo, 1, PREFIX).run(ListSource(
            [scripted_task(PREFIX + [61 if key == "a" else 63], 8, alone_log, key, alone)]))
        assert outcomes[key] == alone[key]
    assert not engine.seqs.get(1)                            # the failed slot's KV is gone


def test_a_cancelled_judgment_stops_between_steps_and_frees_its_slot():
    engine, log, outcomes = FakeMultiEngine(), [], Outcomes()
    rounds = {"n": 0}

    def cancelled():
        rounds["n"] += 1
        return rounds["n"] > 4

    victim = scripted_task(PREFIX + [61], 50, log, "victim", outcomes)
    victim.cancelled = cancelled
    tasks = [victim, scripted_task(PREFIX + [62], 10, log, "other", outcomes),
             scripted_task(PREFIX + [63], 3, log, "next", outcomes)]
    SlotScheduler(engine, 2, PREFIX).run(ListSource(tasks))
    assert outcomes["victim"][0] is None
    assert isinstance(outcomes["victim"][1], JudgmentCancelled)
    assert ("end", "victim") not in log
    assert outcomes["other"][1] is None and outcomes["next"][1] is None
    assert all(not seq for seq in engine.seqs.values())


def test_admission_waits_for_kv_room_and_refuses_what_never_fits():
    # 4 slots, but cells for only two worst cases beside the prefix.
    engine, log, outcomes = FakeMultiEngine(n_ctx=len(PREFIX) + 2 * 40), [], Outcomes()
    tasks = [scripted_task(PREFIX + [60 + i], 12, log, i, outcomes, kv=len(PREFIX) + 40)
             for i in range(5)]
    tasks.append(scripted_task(PREFIX + [70], 2, log, "huge", outcomes, kv=len(PREFIX) + 200))
    scheduler = SlotScheduler(engine, 4, PREFIX)
    scheduler.run(ListSource(tasks))
    assert scheduler.peak_active == 2        # (finished judgments' kept cells fit beside them)
    assert all(outcomes[i][1] is None for i in range(5))
    result, error = outcomes["huge"]
    assert result is None and isinstance(error, RaLiteError)
    assert "needs 200 KV cells" in str(error) and "holds 86" in str(error)
    assert engine.refused == []                              # admission kept llama.cpp happy


def test_a_refused_batch_is_retried_smaller_never_dropped():
    engine, log, outcomes = FakeMultiEngine(n_batch=32, refuse_decodes=3), [], Outcomes()
    tasks = [scripted_task(PREFIX + list(range(50, 70)), 4, log, i, outcomes) for i in range(3)]
    SlotScheduler(engine, 3, PREFIX).run(ListSource(tasks))
    assert engine.refused[:3] == sorted(engine.refused[:3], reverse=True)   # halved each time
    reference_log, reference = [], Outcomes()
    SlotScheduler(FakeMultiEngine(), 3, PREFIX).run(ListSource(
        [scripted_task(PREFIX + list(range(50, 70)), 4, reference_log, i, reference)
         for i in range(3)]))
    assert outcomes == reference


def test_a_step_with_nothing_new_reevaluates_the_last_token():
    engine, log, outcomes = FakeMultiEngine(), [], Outcomes()
    tasks = [scripted_task(PREFIX + [61], 3, log, 0, outcomes, feed_empty=True),
             scripted_task(PREFIX + [62], 3, log, 1, outcomes)]
    SlotScheduler(engine, 2, PREFIX).run(ListSource(tasks))
    assert all(error is None for _, error in outcomes.values())
    # One sequence reads the same position twice; scheduled, it must do the same.
    alone = FakeEngine()
    alone.set_sampling(SamplingSettings(0.5, 1.0, 0))
    expected = drive(alone, scripted(PREFIX + [61], 3, [], 0, feed_empty=True))
    assert outcomes[0][0]["tokens"] == expected["tokens"]
    assert outcomes[0][0]["logits"] == expected["logits"]


def test_abort_ends_everything_running():
    engine, log, outcomes = FakeMultiEngine(), [], Outcomes()
    scheduler = SlotScheduler(engine, 2, PREFIX)
    source = ListSource([scripted_task(PREFIX + [60 + i], 40, log, i, outcomes) for i in range(3)])
    for _ in range(3):
        scheduler.step(source)
    scheduler.abort()
    # The two running judgments end; the third was never taken from its source.
    assert {k for k, (_, e) in outcomes.items() if isinstance(e, JudgmentCancelled)} == {0, 1}
    assert len(source.tasks) == 1
    assert all(not seq for seq in engine.seqs.values())


@pytest.mark.parametrize("slots", [0, -1, 256])
def test_bad_slot_counts_are_refused(slots):
    with pytest.raises(RaLiteError, match="between 1 and 255"):
        SlotScheduler(FakeMultiEngine(), slots, PREFIX)


def test_resolve_parallel_names_the_problem_with_a_bad_value():
    from ra_lite.judge import Judge
    from ra_lite.testing import FakeBackend, ascending_answer

    judge = Judge(FakeBackend(fallback=ascending_answer))
    for bad, message in ((0, "below 1"), (-3, "below 1"), ("many", "not a number"),
                         (2.5, "not a number")):
        with pytest.raises(RaLiteError, match=message):
            judge.resolve_slots(bad)
        with pytest.raises(RaLiteError, match=message):
            judge.queue(bad)
    assert judge.resolve_slots("auto") == 1                   # a backend that does not say
    assert judge.resolve_slots("3") == 3
    # A call backend with 2 slots: two concurrent calls, every result in request order.
    results = list(judge.judge_many([{"principle": "p", "prompt": str(i),
                                      "responses": {"a": "1", "b": "2"}} for i in range(5)],
                                    parallel=2))
    assert [r.best for r in results] == [judge.judge("p", "0", {"a": "1", "b": "2"}).best] * 5


def test_auto_slots_follow_the_hardware():
    """The slots share the engine's one KV cache (no second cache to budget): auto depends on
    where the layers run, then on how many worst cases fit (checked on llama.cpp)."""
    from types import SimpleNamespace

    from ra_lite.slots import hardware_slots

    assert hardware_slots(SimpleNamespace(offload=SimpleNamespace(n_gpu_layers=0))) == 4
    assert hardware_slots(SimpleNamespace(offload=SimpleNamespace(n_gpu_layers=30))) == 8


def test_judge_many_on_a_remote_style_backend_keeps_order_with_workers():
    from ra_lite.judge import Judge
    from ra_lite.request import JudgeRequest
    from ra_lite.testing import FakeBackend, ascending_answer

    judge = Judge(FakeBackend(fallback=ascending_answer))
    requests = [JudgeRequest.create("p", f"q{i}", {"x": "1", "y": "2"}) for i in range(7)]
    results = list(judge.judge_many(requests, parallel=3))
    assert len(results) == 7 and all(set(r.scores) == {"x", "y"} for r in results)
