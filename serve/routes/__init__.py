"""One router per resource; `serve.app` includes them with their authentication."""
