"""Heap forwarder: MetaRouter/Segment-spec events to Heap's server-side APIs, with nothing lost."""

__version__ = "0.1.0"
