"""torch_compile backend: to be written."""
