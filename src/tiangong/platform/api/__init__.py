"""The REST API (``/api/v1``), its OpenAPI description, and the dashboard it serves at ``/``."""
