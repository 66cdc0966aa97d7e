"""Metrics, each checked in tests against a closed form or a reference implementation.

likelihood.py: KL to the standard normal, log-mean-exp, bits per dimension.
"""
