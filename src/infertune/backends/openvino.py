"""openvino backend: to be written."""
