"""Processing provider ``sentinel2``: one thin module per algorithm over the engine."""
