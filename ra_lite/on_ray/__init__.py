"""Judging a batch on a Ray cluster (`ra-lite batch --engine ray`; optional extra `ra-lite[ray]`).

Modules, in import order (each imports only those above it; nothing outside this package
imports ray):

    actor    JudgeActor: what each Ray Data actor runs. It loads the model once (or connects to
             the --remote servers) and judges each block of rows with the slot scheduler; a row
             that fails on its own (a bad request, too long for the context) becomes its error
             record there, never an exception Ray would retry
    engine   connecting to a cluster (with the local-cluster traps handled), the Ray Data
             pipeline (judge_dataset), and RayEngine, which run_batch drives as its judging
             step, so the driver stays the single, fsynced, locked writer of the output and a
             rerun after any kill writes every id exactly once
"""
