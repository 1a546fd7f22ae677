"""tensorrt backend: to be written."""
