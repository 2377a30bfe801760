"""Evaluation adapters: every model seen through one ``Retriever`` interface.

Why: evaluation, scoring and indexing encode texts and videos and score them without knowing
whether a student (one vector each, dot product) or a teacher (feature dicts, cross-grained head)
is behind the interface.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pipeline.models.student import Student
from pipeline.models.teachers.base import Teacher


class StudentRetriever:
    """Evaluation adapter: one normalised vector per text and per video, dot-product scores."""

    def __init__(self, student: Student) -> None:
        self.student = student

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.student.encode_text(ids, mask)
        return {"embedding": torch.nn.functional.normalize(s.float(), dim=-1)}

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": self.student.encode_video(frames, mask).embedding.float()}

    def score(self, text: Mapping[str, torch.Tensor], video: Mapping[str, torch.Tensor]
              ) -> torch.Tensor:
        return text["embedding"] @ video["embedding"].T


class TeacherRetriever:
    """Evaluation adapter: the teacher's own encoders and cross-grained score."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.teacher.encode_text(ids, mask)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.teacher.encode_video(frames, mask)

    def score(self, text: Mapping[str, torch.Tensor], video: Mapping[str, torch.Tensor]
              ) -> torch.Tensor:
        return self.teacher.score(dict(text), dict(video))
