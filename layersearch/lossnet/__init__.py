"""The library people import: the loss networks, their weights, the feature extractor and PerceptualLoss.

A loss network is an object (``base.LossNetwork``) reached by name through one registry
(``registry.loss_network("vgg16")``); it knows its layer table, how to build its truncated trunk, its
weights, its input normalisation, its naming rule and what it cautions against (``gram_ok``,
``basicsr_names``). Nothing outside this package tests a network's name.

- ``base``: LossNetwork, LayerInfo, LayerError (no torch at import);
- ``registry``: name -> LossNetwork (``register``, ``register_kind``, ``loss_network``, ``find_network``,
  ``network_names``, ``builtin_names``, ``gram_ok``);
- ``nets/``: one module per kind, each registering its networks (``vgg``, ``alexnet``, ``squeezenet``,
  ``resnet``, ``module_paths``; ``_torchvision`` is their common base); adding a kind is adding one file;
- ``layers``: the by-name functions the other rooms import (``ARCHS``, ``layer_names``, ``validate_layers``...);
- ``tables``: generates ``layer_tables.json`` from torchvision, each kind naming its units;
- ``weights``: the ``imagenet`` / ``random`` / file rules, caches and checks, the same for every kind;
- ``declared``: networks declared in config (``module:`` a builder of the user's, ``timm:`` a timm model),
  layers by module path; ``probe`` finds them by running the network once, ``taps`` takes them with hooks;
- ``features``: FeatureExtractor; ``loss``: LossConfig and PerceptualLoss.

Imports nothing from the other rooms (trial, search, insight).
"""
