"""The library people import: VGG layer tables, weights, the feature extractor and PerceptualLoss.

Imports nothing from the other rooms (trial, search, insight).
"""
