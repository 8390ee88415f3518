"""Standard reward-model benchmark files in `ra-lite bench --data FILE`, scored their own way.

Modules, in import order (each imports only those above it):

    formats   RewardBench v1 / RewardBench 2 / RM-Bench rows from JSON, JSONL or Parquet:
              detected by their fields, validated line by line, turned into listwise requests
    scoring   each benchmark's official metric from per-response scores, as its own code
              computes it (files and commits cited there)
"""
