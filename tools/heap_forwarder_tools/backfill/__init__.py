"""``heap-forwarder backfill``: historical events into Heap through the deployed stack.

Events are read from files (local, or ``s3://``; JSON lines, gzipped or not, or ``{"batch": [...]}``
documents), held to the runtime's rules, and put in the stack's main queue as ``{"batch": [...]}``
messages, at the pace the stack drains, so that its consumer delivers them with its own pacing,
retries and dead-letter queue. A checkpoint after every acknowledged request makes a run
resumable; stable ``messageId``s make a re-run harmless. docs/backfill.md says how to use it.

- ``sources``: the files of a SOURCE, streamed (gzip recognised);
- ``reader``: a file's lines into events with their positions;
- ``events``: one event validated and completed, or refused; the filters;
- ``packing``: events into message bodies; ``enqueue``: bodies into the queue;
- ``pacing``: how fast, and how much may wait in the queue;
- ``checkpoint``: where a run stands; ``progress``: what it shows;
- ``run``: the run itself and its dry run; ``command``: the CLI's options.
"""
