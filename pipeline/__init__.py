"""teachclip library: everything importable and testable, no CLI and no file-layout policy.

The click commands in ``stages/`` call into this package; nothing here prints.
"""

__version__ = "0.1.0"
