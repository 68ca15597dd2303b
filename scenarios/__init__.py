"""Scenario tests: scripted callers and success criteria checked on the finished conversation."""
