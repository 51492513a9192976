"""The mapping module: a declarative playbook (data) and the small engine that runs it."""
