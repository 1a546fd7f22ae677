"""aoti backend: to be written."""
