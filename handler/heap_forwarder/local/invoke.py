"""Docker-free ``sam local invoke``: run a function's real handler in-process.

The handler, timeout and environment come from ``template.yaml``; the event from a file, as
``sam local invoke -e`` takes it.
"""

from __future__ import annotations

import importlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heap_forwarder.local.sandbox import environment
from heap_forwarder.local.template import FunctionSpec


class InvokeError(ValueError):
    pass


@dataclass
class LocalContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def read_event(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text("utf-8"))
    except OSError as error:
        raise InvokeError(f"cannot read event file {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise InvokeError(f"event file {path} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvokeError(
            f"event file {path} must hold a JSON object (a Lambda event), not {type(document).__name__}"
        )
    return document


def load_handler(spec: FunctionSpec) -> tuple[Callable[[dict[str, Any], Any], Any], Any]:
    module_name, _, function_name = spec.handler.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, function_name), module
    except (ImportError, AttributeError) as error:
        raise InvokeError(f"cannot load handler {spec.handler} of {spec.logical_id}: {error}") from None


def invoke(spec: FunctionSpec, event: dict[str, Any], *, cold: bool = True) -> Any:
    """Call the function's handler with ``event`` under its environment; return its response.

    ``cold`` (the default) forgets the warm state first, as the environment may differ from
    the last invocation's; pass False to reuse it, as Lambda does between invocations.
    """
    with environment(spec.environment):
        handler, module = load_handler(spec)
        reset = getattr(module, "reset", None)
        if cold and callable(reset):
            reset()
        context = LocalContext(spec.logical_id, spec.memory_mb, spec.timeout)
        return handler(event, context)
