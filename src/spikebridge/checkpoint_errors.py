"""The exceptions and warnings of checkpoint reading, writing and locking.

A leaf module, so that every part of the checkpoint code (:mod:`spikebridge.checkpoint` and the
modules it is split into, :func:`spikebridge.models.build_model`) raises the same classes; import
them from :mod:`spikebridge.checkpoint`, which re-exports them.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "CheckpointLockedError", "CheckpointWriteError", "StaleLockWarning",
           "UnverifiedCheckpointWarning"]


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, corrupt, inconsistent or not writable."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (disk full, I/O error): the run failed, not its input; the
    previous checkpoint is intact (exit code 1 on the command line)."""


class CheckpointLockedError(CheckpointError):
    """Another live process holds the checkpoint directory's lock."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint was loaded although its hashes are missing or do not match (allowed)."""


class StaleLockWarning(UserWarning):
    """The lock of a process that no longer runs was taken over."""
