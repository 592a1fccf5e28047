"""The library people import: the loss networks' layer tables, weights, the feature extractor and PerceptualLoss.

Imports nothing from the other rooms (trial, search, insight).
"""
