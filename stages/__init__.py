"""Click commands, one module per pipeline stage, gathered in the ``teachclip`` group."""
