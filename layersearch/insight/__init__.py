"""The answer drawn from a finished search: the study report, what each layer keeps, confirmation runs.

Imports search, trial and lossnet; nothing imports it but the CLI.
"""
