"""Schemathesis hooks for tests/schemathesis.rs.

JSON Schema cannot say that the assist paths' effective ids (the given `id`, or
`path-<n>` by position) must be distinct, so a generated body that repeats one is
dropped here instead of being reported as "valid data rejected". The 400 that the
daemon answers for such a body is tested in tests/http_api.rs.
"""

import schemathesis


def _repeats_a_path_id(body):
    if not isinstance(body, dict):
        return False
    paths = body.get("paths")
    if not isinstance(paths, list):
        return False
    seen = set()
    for position, path in enumerate(paths, start=1):
        if not isinstance(path, dict):
            return False
        given = path.get("id")
        effective = given if isinstance(given, str) else f"path-{position}"
        if effective in seen:
            return True
        seen.add(effective)
    return False


@schemathesis.hook
def filter_body(ctx, body):
    return not _repeats_a_path_id(body)
