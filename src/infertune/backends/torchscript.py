"""torchscript backend: to be written."""
