"""The search over trials: spaces, storage, the ask/tell loop, the trial runner, MLflow records, export.

Imports trial and lossnet, never insight.
"""
