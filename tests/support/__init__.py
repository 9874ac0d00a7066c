"""Shared test harnesses: one polling helper, one collector, the trader harness, tick series."""
