"""The model the sponsor paid for: its delivery, the model card, the model directory,
predictions and ONNX export."""
