"""After training: ONNX export, evaluate and predict."""
