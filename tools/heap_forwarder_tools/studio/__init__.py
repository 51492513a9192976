"""The event tester page (``heap-forwarder studio``): its server, local stack and static files."""
