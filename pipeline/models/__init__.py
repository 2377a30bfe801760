"""Models: CLIP towers, the TeachCLIP student, the teachers and their checkpoints.

Submodules are imported explicitly by callers (``pipeline.models.clip`` etc.) so importing the
package stays cheap and free of import cycles.
"""
