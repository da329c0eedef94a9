"""Edge deployment: inference over a folder with an exported OpenVINO model (``fegan-infer``).

Needs OpenVINO, NumPy and Pillow only; nothing here imports torch.
"""
