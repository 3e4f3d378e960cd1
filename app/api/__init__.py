"""The HTTP edge: routes, request/response schemas, dependencies and error mapping."""
