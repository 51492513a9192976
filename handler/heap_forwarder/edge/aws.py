"""Small helpers shared by the AWS edge."""

from __future__ import annotations


def error_code(error: BaseException) -> str:
    """What AWS said (``ParameterNotFound``, ``AccessDeniedException``...), else the error's type.

    Safe to log: the code names the failure, never a parameter's value.
    """
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(error).__name__
