"""The Gradio UI: one module per page, wired to a :class:`webui.studio.Studio`."""
