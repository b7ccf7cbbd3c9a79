"""Obscura's application: CLI, web UI, HTTP API. The only package that wires core and privacy."""

import core  # noqa: F401  (core.offline must run before gradio or diffusers are imported)
