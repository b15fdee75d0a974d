"""Old import path of the notebook widgets, kept for notebooks that import it: they live in sdrag.app."""

from .app.studio import RagStudio
from .app.widgets import CannyExplorer, error_html, png_bytes, read_upload, style_gallery, uploaded_image

__all__ = ["CannyExplorer", "RagStudio", "error_html", "png_bytes", "read_upload", "style_gallery", "uploaded_image"]
