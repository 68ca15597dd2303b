"""Barge-in and end-of-turn evaluation: a labelled caller-audio set (generate.py) run over the real
Media Streams path (run.py)."""
