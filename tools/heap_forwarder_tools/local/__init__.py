"""Running the functions without AWS or Docker: local invoke, the sandbox (moto + the Heap
emulator), the demo, and the SQS poller that plays Lambda's event source mapping."""
