"""Tools that make and judge PRMs: ``train-prm``, ``label-steps``, ``eval-prm`` and their data formats."""
