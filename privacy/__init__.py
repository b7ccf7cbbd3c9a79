"""Obscura's privacy layer: encryption at rest, deletion that holds, metadata scrubbing, accounts,
the data-flow inventory and the audit. It knows nothing of diffusers, torch or Gradio.

Start reading at docs/privacy.md; each module here holds one idea.
"""
