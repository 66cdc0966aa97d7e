"""Serving: the HTTP API (api.py, `genlab serve`) and the web studio (studio/).

    from genlab.serve import create_app
    app = create_app("runs/")      # a FastAPI app; run it with uvicorn
"""

from .api import create_app

__all__ = ["create_app"]
