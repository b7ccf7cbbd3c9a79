"""Pure ASGI middleware that sits in front of Gradio; one concern per module."""
