"""Schemathesis checks of Conclave's own (loaded through SCHEMATHESIS_HOOKS by test_api_fuzz.py)."""

import schemathesis

@schemathesis.check
def azure_error_shape(ctx, response, case):
    """Every refusal and failure answers Azure's {"error": {"code", "message"}}."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except Exception:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.text[:200]!r}")
    err = body.get("error") if isinstance(body, dict) else None
    if not (isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str)):
        raise AssertionError(f"{response.status_code} body is not Azure's error shape: {response.text[:200]!r}")
    return None
