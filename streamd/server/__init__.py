"""streamd's HTTP server: /metrics, health, camera state, recent events and the PaddleX serving API.

``streamd.server.config`` is light (pydantic only); ``streamd.server.app`` imports FastAPI.
"""
