"""The retraining loop: webhook -> queue -> worker -> model registry -> Label Studio.

policy.py   when to retrain: counting annotation events and coalescing runs per project, in Redis
jobs.py     the RQ jobs: train a project, re-score its unlabeled tasks in chunks, switch its model_version
"""
