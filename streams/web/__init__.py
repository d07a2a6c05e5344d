"""What every worker serves over HTTP: the operators' API, its OpenAPI document, health,
readiness and metrics."""
