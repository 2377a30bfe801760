"""Training machinery shared by teacher and student training: batches, schedule, loop, resume."""
