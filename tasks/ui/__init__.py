"""The operator console (doit ui, issue 16): FastAPI routes, records read from patchgate's
files, Jinja2 templates and the vendored htmx. See docs/console.md."""
