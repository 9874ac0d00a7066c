"""An OTP-style supervision library on Pykka, independent of the application.

Its modules import each other in one direction only: scheduler, outbox < actor < supervisor; beyond the
standard library and Pykka it uses only the telemetry leaf (tests/test_supervision_imports.py checks this).
"""

__all__ = ["actor", "outbox", "scheduler", "supervisor"]
