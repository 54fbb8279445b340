"""The web view (FastAPI + WebSockets + a page with no build step)."""
