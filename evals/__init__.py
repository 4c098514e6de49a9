"""Evaluation: perplexity and agreement with the teacher, lm-eval tasks, recall (passkey, MQAR),
speed and memory benchmarks, and the reports that put teacher and students side by side."""
