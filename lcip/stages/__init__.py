"""The pipeline's stages, one module each, as functions of the composed config.

Data flows one way: ``region -> cooccurrence -> prior -> train -> predict -> evaluate``
(``demo`` chains them). Each stage is a plain function ``stage(cfg, force=False)`` that a
library user calls on :func:`lcip.config.compose_config`'s result, and that a console script
(``lcip-<stage>``, see :mod:`lcip.cli`) runs on the config Hydra composed. Modules import
their heavy dependencies (torch, Lightning) themselves, so a stage that does not need them
starts quickly. Paths a stage reads and writes come from :mod:`lcip.stages.paths`.
"""
