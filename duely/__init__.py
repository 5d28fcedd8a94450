"""Duely: 1-v-1 competitive-programming duels served as a long-polling event-log API."""
