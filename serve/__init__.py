"""serve: the platform API (FastAPI) - predictions from the champion model with lineage, notebook jobs,
feedback with debounced retraining, health, metrics and tracing.

Entry point: `uvicorn serve.app:app`; in tests `serve.app.create_app(settings)`. Nothing is done at import.
"""
