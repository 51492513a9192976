"""Tools around the heap forwarder that never run in Lambda: the ``heap-forwarder`` CLI, the
local Heap emulator, local invoke/serve/demo, the DLQ redrive and the OpenAPI generator.

They import the runtime package ``heap_forwarder``; it never imports them, and ``sam build``
ships only the runtime (handler/Makefile; tests/functional/test_packaging.py checks it).
"""
