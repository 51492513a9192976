"""Heap: its rules, the client that speaks its protocol, and a local emulator. No AWS here."""
