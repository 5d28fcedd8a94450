"""Matchmaking: the waiting queue, the per-second pairing round, and the pure pairing rule (`pairing.py`)."""
